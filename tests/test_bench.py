"""`reidbench bench` and `reidbench robustness` end to end on tiny synthetic sets and models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidbench import cli
from reidbench.reporting.robustness import COLUMNS, read_csv

TINY = ["--epochs", "1", "--batch-size", "8", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "model.size=nano", "--set", "train.warmup_epochs=0"]
REID = ["--set", "data.synth_ids=16", "--set", "data.height=64", "--set", "data.width=32"]
FACES = ["--set", "data.synth_ids=24", "--set", "data.synth_train_ids=8", "--set", "data.height=48",
         "--set", "data.width=48"]
SWEEP = ["--perturb", "rotate,kpnoise", "--severities", "0,3"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny bench on synthetic-reid: (data root, results folder)."""
    root, out = tmp_path_factory.mktemp("bench-data"), tmp_path_factory.mktemp("bench-results")
    code = cli.main(["-q", "bench", "--dataset", "synthetic-reid", "--models", "ape,kprpe",
                     "--data-root", str(root), "--output", str(out), *TINY, *REID, *SWEEP])
    assert code == 0
    return root, out


def test_bench_trains_sweeps_and_rebuilds_everything(bench: tuple[Path, Path]) -> None:
    _, out = bench
    runs = sorted((out / "runs").iterdir())
    assert [json.loads((r / "metrics.json").read_text())["task"] for r in runs] == ["reid", "reid"]
    assert {r.name.split("-")[2] for r in runs} == {"ape", "kprpe"}
    leaderboard = (out / "leaderboard.csv").read_text().splitlines()
    assert len(leaderboard) == 3 and (out / "leaderboard.md").is_file()
    rob = out / "robustness"
    for name in ("synthetic-reid-query.csv", "synthetic-reid-query.md", "synthetic-reid-query.png",
                 "synthetic-reid-query-examples.png", "synthetic-reid-query.json",
                 "synthetic-reid-query-per-sample.npz"):
        assert (rob / name).is_file(), name
    rows = read_csv(rob / "synthetic-reid-query.csv")
    assert len(rows) == 2 * 2 * 2 * 2  # models x perturbations x severities x metrics
    assert {r["run_id"] for r in rows} == {r.name for r in runs}
    assert list(rows[0]) == COLUMNS
    meta = json.loads((rob / "synthetic-reid-query.json").read_text())
    assert meta["command"].startswith("reidbench -q bench --dataset synthetic-reid")
    assert all(m["robustness_seconds"] > 0 and m["train_seconds"] > 0 for m in meta["models"])
    md = (rob / "synthetic-reid-query.md").read_text()
    assert "### Does KP-RPE degrade less than the others?" in md and meta["command"] in md
    assert "95 % paired bootstrap interval" in md


def values(path: Path) -> dict[tuple, float | None]:
    """(model, perturbation, severity, metric) -> value of a robustness CSV."""
    return {(r["model"], r["perturbation"], r["severity"], r["metric"]): r["value"] for r in read_csv(path)}


def test_robustness_command_reproduces_the_bench_numbers(
    bench: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    root, out = bench
    runs = [r.name for r in sorted((out / "runs").iterdir())]
    # the latest run of each model (no --run): same models, same perturbed images, same numbers
    code = cli.main(["-q", "robustness", "--model", "kprpe,ape", "--dataset", "synthetic-reid",
                     "--runs", str(out / "runs"), "--out", str(tmp_path), "--id", "again", *SWEEP])
    assert code == 0, capsys.readouterr().err
    first = values(out / "robustness" / "synthetic-reid-query.csv")
    again = values(tmp_path / "again.csv")
    assert first == again
    # explicit runs, another seed: other perturbed images
    code = cli.main(["-q", "robustness", "--run", ",".join(runs), "--runs", str(out / "runs"),
                     "--out", str(tmp_path), "--id", "seed1", "--seed", "1", *SWEEP])
    assert code == 0, capsys.readouterr().err
    seed1 = values(tmp_path / "seed1.csv")
    assert seed1.keys() == first.keys() and seed1 != first
    # --report re-renders the markdown and plot from the CSV alone
    (tmp_path / "again.md").unlink()
    assert cli.main(["-q", "robustness", "--report", str(tmp_path / "again.csv")]) == 0
    assert (tmp_path / "again.md").is_file()


def test_robustness_from_a_checkpoint_file(bench: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _, out = bench
    run = next(r for r in sorted((out / "runs").iterdir()) if "-kprpe-" in r.name)
    code = cli.main(["-q", "robustness", "--model", "kprpe", "--checkpoint", str(run / "checkpoint.pt"),
                     "--dataset", "synthetic-reid", "--out", str(tmp_path), "--perturb", "scale",
                     "--severities", "0-1", "--side", "both"])
    assert code == 0, capsys.readouterr().err
    rows = read_csv(tmp_path / "synthetic-reid-both.csv")
    assert {r["side"] for r in rows} == {"both"} and len(rows) == 1 * 2 * 2


@pytest.mark.parametrize("args,needle", [
    (["--model", "ape", "--dataset", "synthetic-reid", "--perturb", "blur"],
     "unknown perturbation 'blur'; expected one of: affine, affine_kpnoise, kpnoise, rotate, scale, "
     "translate"),
    (["--model", "ape", "--dataset", "synthetic-reid", "--severities", "0-9"],
     "severity must be an integer in 0..5"),
    (["--model", "rpe", "--dataset", "synthetic-reid"], "no complete rpe run on synthetic-reid"),
    (["--run", "nope"], "--run nope: no run record"),
    (["--model", "ape,kprpe", "--run", "x"], "2 models but 1 runs"),
    (["--model", "ape", "--checkpoint", "/definitely/missing.pt"], "no such file"),
    (["--model", "ape", "--dataset", "synthetic-faces"], "no complete ape run on synthetic-faces"),
])
def test_robustness_errors_are_one_line_exit_2(
    bench: tuple[Path, Path], args: list[str], needle: str, capsys: pytest.CaptureFixture[str],
) -> None:
    _, out = bench
    code = cli.main(["-q", "robustness", "--runs", str(out / "runs"), "--out", str(out / "unused"),
                     *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err


def test_bench_on_faces_reports_verification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "bench", "--dataset", "synthetic-faces", "--models", "kprpe",
                     "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "results"),
                     *TINY, *FACES, "--perturb", "affine", "--severities", "0,5", "--side", "both"])
    assert code == 0, capsys.readouterr().err
    rows = read_csv(tmp_path / "results" / "robustness" / "synthetic-faces-both.csv")
    assert {r["metric"] for r in rows} == {"accuracy", "auc", "tar_at_far_1e-2"}
    assert {r["task"] for r in rows} == {"verification"} and {r["num_samples"] for r in rows} == {600}
    rob = tmp_path / "results" / "robustness"
    assert (rob / "synthetic-faces-both-per-sample.npz").is_file()
    assert "95 % paired bootstrap interval" not in (rob / "synthetic-faces-both.md").read_text()  # no APE


def test_bench_rejects_unknown_names_before_training(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "bench", "--models", "ape,no-such-model", "--output", str(tmp_path)])
    assert code == 2 and "unknown model 'no-such-model'" in capsys.readouterr().err
    code = cli.main(["-q", "bench", "--models", "ape", "--perturb", "blur", "--output", str(tmp_path)])
    assert code == 2 and "unknown perturbation 'blur'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
