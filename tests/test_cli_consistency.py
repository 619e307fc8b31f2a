"""One program: every option documented, shared options with one meaning, global flags on
either side of the subcommand, deprecated spellings that still work, quiet third-party loaders."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.cli_options import (
    CONFIG_HELP,
    DATA_ROOT_HELP,
    DEVICE_HELP,
    EPOCHS_HELP,
    OUTPUT_HELP,
    QUIET_HELP,
    THIRD_PARTY_LOGGERS,
    TRAIN_BATCH_HELP,
    TRAIN_SEED_HELP,
    VERBOSE_HELP,
    DeprecatedAlias,
    subparsers,
)
from reidbench.registry import MODELS

# the words every help text of a shared option starts with, wherever the option appears
HELP_STEMS = {
    "--data-root": DATA_ROOT_HELP, "--device": DEVICE_HELP, "--epochs": EPOCHS_HELP,
    "--config": CONFIG_HELP, "--output": OUTPUT_HELP, "-q": QUIET_HELP, "-v": VERBOSE_HELP,
}
# the same name with a different meaning, on purpose: (option, why)
KNOWN_DIFFERENCES = {
    "--json": "data check prints its report as JSON on stdout; evaluate writes the metrics as "
              "JSON to the FILE given",
}


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = cli.build_parser()
    return [("reidbench", parser), *subparsers(parser)]


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            yield action


def meaning(action: argparse.Action, global_flag: bool) -> tuple[object, ...]:
    """What an option does; a global flag's destination may differ per level (``--plugin``
    keeps one list per level so that the modules given before and after a subcommand add up)."""
    dest = None if global_flag else action.dest
    return (dest, action.type, type(action), action.nargs, action.choices, action.const,
            action.help if global_flag else None)


def test_the_walk_reaches_every_subcommand() -> None:
    names = {name for name, _ in all_parsers()}
    assert {"run", "evaluate", "models", "leaderboard", "robustness", "bench", "data",
            "data synth", "data preview", "data list", "data check"} <= names


@pytest.mark.parametrize("name,parser", all_parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_has_help(name: str, parser: argparse.ArgumentParser) -> None:
    missing = [action.option_strings or action.dest for action in options(parser)
               if not action.help or action.help == argparse.SUPPRESS]
    assert not missing, f"`{name}` options without help text: {missing}"


def test_shared_options_have_one_meaning() -> None:
    seen: dict[str, list[tuple[str, argparse.Action]]] = {}
    parsers = all_parsers()
    global_flags = {f for a in options(parsers[0][1]) for f in a.option_strings}
    for name, parser in parsers:
        for action in options(parser):
            if isinstance(action, DeprecatedAlias):
                assert "deprecated" in (action.help or ""), (name, action.option_strings)
                continue
            for flag in action.option_strings:
                seen.setdefault(flag, []).append((name, action))
    for flag, where in seen.items():
        if flag in KNOWN_DIFFERENCES:
            continue
        meanings = {meaning(action, flag in global_flags) for _, action in where}
        assert len(meanings) == 1, f"{flag} means different things in {[n for n, _ in where]}"
        for name, action in where:
            stem = HELP_STEMS.get(flag)
            assert stem is None or action.help.startswith(stem), (flag, name, action.help)
    # the training flags of run and bench: the very same help
    by_command = {(flag, name): action.help for flag, where in seen.items() for name, action in where}
    for flag in ("--epochs", "--batch-size", "--seed", "--data-root", "--device", "--config"):
        assert by_command[flag, "run"] == by_command[flag, "bench"], flag
    assert by_command["--batch-size", "run"] == TRAIN_BATCH_HELP
    assert by_command["--seed", "run"] == TRAIN_SEED_HELP


def test_output_names_a_folder_and_out_a_file() -> None:
    parsers = dict(all_parsers())
    for command in ("run", "bench", "robustness"):
        (output,) = [a for a in options(parsers[command]) if "--output" in a.option_strings]
        assert output.metavar == "DIR" and output.type is Path, command
        outs = [a for a in options(parsers[command]) if "--out" in a.option_strings]
        assert all(isinstance(a, DeprecatedAlias) for a in outs), command  # old spelling only
    for command in ("leaderboard", "data preview"):
        flags = {f for a in options(parsers[command]) for f in a.option_strings}
        assert "--out" in flags and "--output" not in flags, command


@pytest.mark.parametrize("argv", [
    ["-q", "run", "--model", "ape"], ["run", "--model", "ape", "-q"], ["run", "-q", "--model", "ape"],
    ["--quiet", "run"], ["run", "--quiet"],
])
def test_quiet_on_either_side_of_the_subcommand(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False and args.command == "run"


def test_global_flags_are_accepted_after_every_subcommand() -> None:
    parser = cli.build_parser()
    assert not parser.parse_args(["run"]).quiet  # the top-level default stands
    assert parser.parse_args(["data", "list", "-v"]).verbose  # nested subcommands too
    globals_ = [a for a in options(parser) if a.option_strings]
    assert {"-q", "-v"} <= {f for a in globals_ for f in a.option_strings}
    for name, sub in subparsers(parser):
        for action in globals_:
            assert set(action.option_strings) <= set(sub._option_string_actions), (name, action)


def test_run_help_lists_models_and_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["run", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    models = next(line for line in out.splitlines() if line.startswith("models:"))
    assert {"ape", "rpe", "irpe", "kprpe"} <= set(MODELS.names())
    for name in MODELS.names():
        assert f" {name}," in models or models.split("  (")[0].endswith(name), name
    datasets = next(line for line in out.splitlines() if line.startswith("datasets:"))
    for name in ("market1501", "lfw", "ijbb", "synthetic-reid", "folder:<path>"):
        assert name in datasets


@pytest.mark.parametrize("argv,dest,value", [
    (["robustness", "--out", "rep"], "output", Path("rep")),
    (["robustness", "--seed", "3"], "perturb_seed", 3),
])
def test_old_spellings_still_work_and_warn(
    argv: list[str], dest: str, value: object, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    # through main: the warning names the new spelling (the command itself then fails on the
    # missing --report CSV, one line, before evaluating anything)
    with caplog.at_level(logging.WARNING, logger="reidbench"):
        code = cli.main([*argv, "--report", str(tmp_path / "missing.csv")])
    assert code == 2
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == [f"{argv[1]} is deprecated and will be removed in the next release; use "
                        f"{'--output DIR' if dest == 'output' else '--perturb-seed S'}"]


def test_new_spellings_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    args = cli.build_parser().parse_args(["robustness", "--output", "rep", "--perturb-seed", "3"])
    assert args.output == Path("rep") and args.perturb_seed == 3
    assert not getattr(args, "_deprecations", [])
    assert cli.build_parser().parse_args(["robustness"]).output == Path("results/robustness")


@pytest.fixture
def third_party_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("third_party_levels")
@pytest.mark.parametrize("flags,shown", [([], False), (["-q"], False), (["-v"], True)])
def test_faiss_loader_lines_only_with_verbose(
    flags: list[str], shown: bool, caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main([*flags, "data", "list"]) == 0
    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # every handler open: only the loggers' levels filter
        logging.getLogger("faiss.loader").info("Could not load library with AVX512 support due "
                                               "to: ModuleNotFoundError(...)")
        logging.getLogger("faiss.loader").warning("a real faiss warning")
    messages = [r.getMessage() for r in caplog.records]
    assert any("AVX512" in m for m in messages) is shown
    assert "a real faiss warning" in messages  # warnings always pass


def test_evaluate_prints_no_faiss_loader_lines(tmp_path: Path) -> None:
    """A fresh process: faiss is first imported (and logs its loader lines) inside a command."""
    rng = np.random.default_rng(0)
    feats = tmp_path / "f.npz"
    np.savez(feats, query_feats=rng.standard_normal((4, 8)).astype(np.float32),
             gallery_feats=rng.standard_normal((12, 8)).astype(np.float32),
             query_pids=np.arange(4), gallery_pids=np.arange(12) % 4,
             query_camids=np.zeros(4, int), gallery_camids=np.ones(12, int))
    script = ("import sys; from reidbench import cli; "
              f"code = cli.main(['evaluate', '--features', {str(feats)!r}, '--topk', '5']); "
              "print('faiss imported:', 'faiss' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "faiss imported: True" in done.stdout  # the command did load faiss
    assert "faiss" not in done.stderr.lower(), done.stderr
