"""Leaderboard rebuilt from run records only; preview grids; atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET
from PIL import Image

from reidbench import cli
from reidbench.config import resolve_config
from reidbench.errors import ReidbenchError
from reidbench.fileio import atomic_write_text
from reidbench.reporting.leaderboard import COLUMNS, rebuild_leaderboard
from reidbench.reporting.records import write_run_config


def fake_run(runs: Path, name: str, dataset: str, mAP: float | None) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    write_run_config(resolve_config(dataset=dataset), run / "config.yaml")
    if mAP is not None:
        metrics = {"mAP": mAP, "mINP": mAP / 2, "rank1": 0.5, "rank5": 0.6, "rank10": 0.7,
                   "num_valid_queries": 10, "params": 123, "epochs": 2}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_rows_sorted_incomplete_and_corrupt_runs_skipped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "a", "synthetic-reid", 0.4)
    fake_run(runs, "b", "synthetic-reid", 0.6)
    fake_run(runs, "c", "market1501", 0.1)
    fake_run(runs, "d", "synthetic-reid", None)  # interrupted: no metrics.json
    (fake_run(runs, "e", "synthetic-reid", 0.9) / "metrics.json").write_text("{}")  # corrupt
    rows, skipped = rebuild_leaderboard(runs, tmp_path / "lb.csv")
    assert [r["run_id"] for r in rows] == ["c", "b", "a"]
    assert len(skipped) == 1 and skipped[0].startswith("e:")
    lines = (tmp_path / "lb.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[2].split(",")[COLUMNS.index("mAP")] == "0.6000"


def test_missing_or_empty_runs_folder_writes_nothing(tmp_path: Path) -> None:
    # a typo in --runs must not replace the leaderboard with an empty table (issue 12, item 6)
    (tmp_path / "empty").mkdir()
    for runs in (tmp_path / "none", tmp_path / "empty"):
        with pytest.raises(ReidbenchError, match="nothing was written"):
            rebuild_leaderboard(runs, tmp_path / "lb.csv")
    assert not (tmp_path / "lb.csv").exists() and not (tmp_path / "lb.md").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    atomic_write_text(target, "old")

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


@pytest.mark.usefixtures("shared_data")
def test_preview_of_real_market(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "grid.png"
    code = cli.main(["-q", "data", "preview", "market1501", "--data-root", str(MINI_MARKET),
                     "--out", str(out), "--num", "10", "--split", "query"])
    assert code == 0, capsys.readouterr().err
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] > 192 and grid.shape[1] > 8 * 96  # 2 rows of 8 columns
