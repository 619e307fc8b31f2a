"""Which run `reidbench robustness --model M --dataset D` sweeps when no --run is given: the newest
complete run with weights trained with the default protocol; the misalignment study's runs
(augmentation recipe, flattened head, aug_affine) are never picked by accident."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidbench.config import resolve_config
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.sources import latest_run
from reidbench.errors import ReidbenchError
from reidbench.reporting.records import CONFIG, METRICS, write_run_config


def _run(runs: Path, name: str, overrides: list[str], *, weights: bool = True,
         complete: bool = True, model: str = "kprpe") -> Path:
    run_dir = runs / name
    run_dir.mkdir(parents=True)
    write_run_config(resolve_config("synthetic-faces", model, overrides=overrides), run_dir / CONFIG)
    if complete:
        (run_dir / METRICS).write_text("{}", encoding="utf-8")
    if weights:
        (run_dir / CHECKPOINT).write_bytes(b"")
    return run_dir


def test_the_newest_default_protocol_run_wins_over_newer_study_runs(tmp_path: Path) -> None:
    plain = _run(tmp_path, "20260101-000000-kprpe", [])
    _run(tmp_path, "20260102-000000-kprpe", ["data.augment=cvlface"])
    _run(tmp_path, "20260103-000000-kprpe", ["model.head=flatten"])
    _run(tmp_path, "20260104-000000-kprpe", ["data.aug_affine=2"])
    _run(tmp_path, "20260105-000000-kprpe", [], complete=False)  # interrupted
    _run(tmp_path, "20260106-000000-ape", [], model="ape")
    assert latest_run(tmp_path, "kprpe", "synthetic-faces") == plain
    newer = _run(tmp_path, "20260107-000000-kprpe", [])
    assert latest_run(tmp_path, "kprpe", "synthetic-faces") == newer


def test_only_study_runs_is_an_error_that_says_how_to_pick_one(tmp_path: Path) -> None:
    _run(tmp_path, "20260102-000000-kprpe", ["data.augment=cvlface", "model.head=flatten"])
    _run(tmp_path, "20260103-000000-kprpe", [], weights=False)
    with pytest.raises(ReidbenchError) as err:
        latest_run(tmp_path, "kprpe", "synthetic-faces")
    text = str(err.value)
    assert "20260103-000000-kprpe lack checkpoint.pt" in text
    assert "20260102-000000-kprpe use another training protocol" in text
    assert "--run" in text
