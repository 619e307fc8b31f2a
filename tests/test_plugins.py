"""Plugins: the README's "Adding your own encoding" example run as written, ``--plugin`` before
and after the command, entry points, and one-line errors for a bad plugin."""

from __future__ import annotations

import json
import re
import shlex
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from conftest import REPO

from reidbench import cli
from reidbench.errors import ReidbenchError
from reidbench.registry import MODELS, load_builtins, load_plugins
from reidbench.testing import registered_temporarily

load_builtins()

TINY_RUN = ["--epochs", "1", "--batch-size", "8", "--set", "model.depth=1", "--set", "model.embed_dim=32",
            "--set", "model.num_heads=2", "--set", "data.synth_ids=16", "--set", "data.height=64",
            "--set", "data.width=32"]


def readme_example() -> tuple[str, list[str]]:
    """The python module and the shell lines of the README section "Adding your own encoding"."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Adding your own encoding", 1)[1].split("\n## ", 1)[0]
    module = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    assert module and shell, "the README section lost its python or sh block"
    lines = [line.split("  #")[0].strip() for line in shell.group(1).splitlines()]
    return module.group(1), [line for line in lines if line]


def test_readme_example_is_short_and_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, shell = readme_example()
    assert len(module.splitlines()) + len(shell) < 40
    assert module.startswith("# my_encodings.py\n")
    (tmp_path / "my_encodings.py").write_text(module)
    export, check, run = shell
    assert export.startswith("export PYTHONPATH=")
    monkeypatch.syspath_prepend(str(tmp_path))  # what the export does for the two commands
    with registered_temporarily("my_encodings"):
        python, flag, code = shlex.split(check)
        assert (python, flag) == ("python", "-c")
        exec(code, {})  # imports the plugin, then the contract checks
        assert "alibi" in MODELS
        argv = shlex.split(run)
        assert argv[0] == "reidbench"
        out = tmp_path / "runs"
        rc = cli.main(["-q", *argv[1:], "--data-root", str(tmp_path / "data"), "--output", str(out),
                       *TINY_RUN])
        assert rc == 0, capsys.readouterr().err
        (record,) = out.iterdir()
        metrics = json.loads((record / "metrics.json").read_text())
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert "name: alibi" in (record / "config.yaml").read_text()
    assert "alibi" not in MODELS  # the temporary registration is undone


def write_plugin(folder: Path, module: str, model: str, extra: str = "") -> None:
    (folder / f"{module}.py").write_text(
        "from reidbench.models.vit import ape\n"
        "from reidbench.registry import MODELS\n"
        f"MODELS.register({model!r})(lambda cfg, img, k=None: ape(cfg, img, k))\n" + extra)


def test_plugin_option_before_and_after_the_command_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_plugin(tmp_path, "plugin_a", "model_a")
    write_plugin(tmp_path, "plugin_b", "model_b")
    monkeypatch.syspath_prepend(str(tmp_path))
    with registered_temporarily("plugin_a", "plugin_b"):
        rc = cli.main(["-q", "--plugin", "plugin_a", "models", "model_a", "model_b",
                       "--plugin", "plugin_b", "--set", "model.depth=1"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "model_a_nano" in out and "model_b_nano" in out
    assert "model_a" not in MODELS and "model_b" not in MODELS


@pytest.mark.parametrize(("source", "needle"), [
    (None, "cannot load plugin 'absent_plugin': No module named 'absent_plugin'; expected an "
           "importable module name"),
    ("raise RuntimeError('broken\\nsecond line')\n", "cannot load plugin 'bad_plugin': RuntimeError: "
                                                      "broken"),
    ("MODELS.register('ape')(lambda *a: None)\n", "cannot load plugin 'bad_plugin': ValueError: model "
                                                  "'ape' is registered twice"),
    ("", "plugin 'plugins/bad_plugin.py' is a file path; give its module name (bad_plugin for "
         "bad_plugin.py) with its folder on PYTHONPATH"),
])
def test_a_bad_plugin_is_one_line_and_exit_2(
    source: str | None, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "absent_plugin" if source is None else "bad_plugin" if source else "plugins/bad_plugin.py"
    if source is not None:
        (tmp_path / "bad_plugin.py").write_text("from reidbench.registry import MODELS\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with registered_temporarily(name):
        rc = cli.main(["-q", "models", "--plugin", name])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("reidbench: error: " + needle)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_entry_points_are_loaded_once_and_a_function_value_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(tmp_path, "ep_module", "model_ep")
    (tmp_path / "ep_function.py").write_text(
        "from reidbench.registry import MODELS\n"
        "from reidbench.models.vit import ape\n"
        "def register():\n"
        "    MODELS.register('model_fn')(ape)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("b", "ep_function:register", "reidbench.plugins"),
           EntryPoint("a", "ep_module", "reidbench.plugins")]
    calls: list[str] = []

    def entry_points(group: str) -> list[EntryPoint]:
        calls.append(group)
        return eps

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    with registered_temporarily("ep_module", "ep_function"):
        assert load_plugins() == ["ep_module", "ep_function:register"]  # in name order
        assert "model_ep" in MODELS and "model_fn" in MODELS
        assert load_plugins() == []  # loaded once: registering twice would raise
        assert calls == ["reidbench.plugins", "reidbench.plugins"]
    eps[:] = [EntryPoint("c", "missing_module_xyz", "reidbench.plugins")]
    with registered_temporarily(), pytest.raises(ReidbenchError, match=(
            r"cannot load plugin entry point c = 'missing_module_xyz' \(group reidbench.plugins\): "
            r"No module named 'missing_module_xyz'")):
        load_plugins()
