"""`reidbench bench --seeds` end to end on tiny settings: one run per model and seed, one report,
the aggregated leaderboards and index.html; a second call trains only what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_bench import REID, TINY

from reidbench import cli

SWEEP = ["--perturb", "rotate", "--severities", "0,2"]


def seeds_of(runs: Path) -> list[tuple[str, int]]:
    out = []
    for run in sorted(runs.iterdir()):
        if (run / "metrics.json").is_file():
            out.append((run.name.split("-")[2], int(run.name.rsplit("-s", 1)[1])))
    return sorted(out)


def test_bench_with_seeds_trains_each_seed_once_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "results"
    common = ["bench", "--dataset", "synthetic-reid", "--models", "ape,kprpe", "--data-root",
              str(tmp_path / "data"), "--output", str(out), *TINY, *REID, *SWEEP]
    assert cli.main(["-q", *common, "--seeds", "0,1"]) == 0, capsys.readouterr().err
    assert seeds_of(out / "runs") == [("ape", 0), ("ape", 1), ("kprpe", 0), ("kprpe", 1)]
    board = pd.read_csv(out / "leaderboard-reid.csv")
    assert sorted(board["model"]) == ["ape", "kprpe"] and set(board["n_seeds"]) == {2}
    assert set(board["seeds"]) == {"0,1"} and board["robustness_mean_lo"].notna().all()
    comparison = pd.read_csv(out / "leaderboard-comparison.csv")
    assert set(comparison["model"]) == {"kprpe"} and set(comparison["n_seeds"]) == {2}
    assert set(comparison["perturbation"]) == {"clean", "rotate", "mean"}
    report = json.loads((out / "robustness" / "synthetic-reid-query.json").read_text())
    assert len(report["models"]) == 4
    assert (out / "index.html").is_file() and "leaderboard-reid" in (out / "index.html").read_text()
    before = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in (out / "runs").iterdir()}

    # again with one more seed: the recorded seeds are reused, only seed 2 is trained
    caplog.clear()
    with caplog.at_level("INFO"):
        assert cli.main([*common, "--seeds", "0,1,2"]) == 0, capsys.readouterr().err
    assert seeds_of(out / "runs") == [(m, s) for m in ("ape", "kprpe") for s in (0, 1, 2)]
    assert all((out / "runs" / name / "metrics.json").stat().st_mtime_ns == t for name, t in before.items())
    assert caplog.text.count("not trained again") == 4
    board = pd.read_csv(out / "leaderboard-reid.csv")
    assert set(board["n_seeds"]) == {3} and set(board["seeds"]) == {"0,1,2"}


def test_seeds_are_validated_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, needle in ((["--seeds", "0,x"], "expected comma-separated integers"),
                         (["--seeds", "1,1"], "distinct integers"),
                         (["--seeds", "0,1", "--seed", "3"], "not both")):
        code = cli.main(["-q", "bench", "--models", "ape", "--output", str(tmp_path), *args])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_which_recorded_run_a_bench_reuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reidbench.config import resolve_config
    from reidbench.engine.bench import recorded_run
    from reidbench.registry import load_builtins
    from reidbench.reporting.records import write_run_config

    load_builtins()
    runs = tmp_path / "runs"
    cfg = resolve_config("synthetic-reid", "ape", flags={"output": str(runs)}, overrides=["train.seed=1"])

    def record(name: str, config: object, *files: str) -> Path:
        (runs / name).mkdir(parents=True)
        write_run_config(config, runs / name / "config.yaml")  # type: ignore[arg-type]
        for f in files:
            (runs / name / f).write_text("{}")
        return runs / name

    assert recorded_run(runs, cfg) == (None, False)
    other_seed = resolve_config("synthetic-reid", "ape", overrides=["train.seed=2"])
    record("a-other-seed", other_seed, "metrics.json", "checkpoint.pt")
    record("b-no-weights", cfg, "metrics.json")  # complete, but the sweep could not load it
    assert recorded_run(runs, cfg) == (None, False)
    assert "b-no-weights has this recipe and seed but no checkpoint.pt" in caplog.text
    interrupted = record("c-interrupted", cfg, "checkpoint.pt")
    assert recorded_run(runs, cfg) == (interrupted, False)  # resumed from its checkpoint
    fast = resolve_config("synthetic-reid", "ape", overrides=["train.seed=1", "train.threads=1"])
    done = record("d-done", fast, "metrics.json", "checkpoint.pt")  # threads do not matter
    assert recorded_run(runs, cfg) == (done, True)
