"""TensorBoard event files in the run folder: every history value per epoch, throughput and the
evaluation metrics, readable by TensorBoard's own reader; nothing (and one hint) without the
package; nothing from a rank other than 0. One tiny real run also checks what the CLI says
and writes around it (warm-up note, `evaluate --run` lines, file modes)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.engine import tensorboard as tb

RECORDS = [
    {"epoch": 1, "step": 4, "seconds": 2.0, "lr": 1e-3, "total": 3.5, "ce": 2.0, "triplet": 1.5,
     "grad_norm": 1.25},
    {"epoch": 2, "step": 8, "seconds": 4.0, "lr": 5e-4, "total": 2.5, "ce": 1.5, "triplet": 1.0,
     "grad_norm": 0.75},
]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="reading event files needs the tensorboard package (pip install "
               "'reidbench[tensorboard]')")
    acc = accumulator.EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_history_value_and_the_metrics_become_curves(tmp_path: Path) -> None:
    curves = tb.TrainingCurves(tmp_path)
    for record in RECORDS:
        curves.epoch(record, images=64)
    curves.close()
    tb.write_evaluation(tmp_path, 2, {"mAP": 0.5, "rank1": 0.75, "cmc": [0.75, 1.0],
                                      "model": "ape", "flip_test": True})
    got = scalars(tmp_path)
    assert set(got) == {"train/seconds", "train/lr", "train/total", "train/ce", "train/triplet",
                        "train/grad_norm", "train/images_per_second", "eval/mAP", "eval/rank1"}
    assert got["train/total"] == [(1, 3.5), (2, 2.5)]
    assert got["train/triplet"] == [(1, 1.5), (2, 1.0)]
    assert got["train/grad_norm"] == [(1, 1.25), (2, 0.75)]
    assert got["train/lr"] == [(1, pytest.approx(1e-3)), (2, pytest.approx(5e-4))]  # float32
    assert got["train/images_per_second"] == [(1, 32.0), (2, 16.0)]  # 64 images / seconds
    assert got["eval/mAP"] == [(2, 0.5)] and got["eval/rank1"] == [(2, 0.75)]


def test_no_event_file_before_the_first_epoch(tmp_path: Path) -> None:
    """A run stopped before its first checkpoint must leave only what it can remove."""
    tb.TrainingCurves(tmp_path).close()
    assert list(tmp_path.iterdir()) == []


def test_without_tensorboard_nothing_is_written_and_one_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    monkeypatch.setattr(tb, "_hint_logged", False)
    with caplog.at_level(logging.INFO, logger="reidbench.engine.tensorboard"):
        for _ in range(2):  # two runs in one process (bench): one hint
            curves = tb.TrainingCurves(tmp_path)
            for record in RECORDS:
                curves.epoch(record, images=64)
            curves.close()
            tb.write_evaluation(tmp_path, 2, {"mAP": 0.5})
    assert list(tmp_path.iterdir()) == []
    hints = [r for r in caplog.records if "pip install 'reidbench[tensorboard]'" in r.getMessage()]
    assert len(hints) == 1 and hints[0].levelno == logging.INFO


def test_only_rank_0_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(tb.dist, "get_rank", lambda: 1)
    curves = tb.TrainingCurves(tmp_path)
    curves.epoch(RECORDS[0], images=64)
    curves.close()
    tb.write_evaluation(tmp_path, 1, {"mAP": 0.5})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(tb.dist, "get_rank", lambda: 0)
    assert tb.is_main_process()


@pytest.fixture
def umask_027() -> Any:
    saved = os.umask(0o027)
    yield
    os.umask(saved)


@pytest.mark.usefixtures("shared_data", "umask_027")
def test_a_real_run(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size",
            "16", "--set", "model.size=nano", "--set", "model.depth=1", "--set", "data.height=64",
            "--set", "data.width=32", "--set", "model.patch_size=8", "--set",
            "train.warmup_epochs=3", "--epochs", "2", "--output", str(tmp_path)]
    with caplog.at_level(logging.INFO):
        assert cli.main(argv) == 0
    (run,) = tmp_path.iterdir()
    notes = [r.getMessage() for r in caplog.records if "never leaves its linear warm-up" in
             r.getMessage()]
    assert len(notes) == 1 and "train.epochs=2 <= train.warmup_epochs=3" in notes[0]
    # records: the mode open() gives under this umask, like config.yaml
    for name in ("config.yaml", "metrics.json", "history.jsonl", "checkpoint.pt", "timings.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o640, name
    # curves: one point per epoch for every history value, the metrics at the last epoch
    import json

    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    got = scalars(run)
    for key in set(history[0]) - {"epoch", "step"}:
        assert [s for s, _ in got[f"train/{key}"]] == [1, 2], key
        assert got[f"train/{key}"][1][1] == pytest.approx(history[1][key], rel=1e-6), key
    assert [s for s, _ in got["train/images_per_second"]] == [1, 2]
    assert got["eval/mAP"] == [(2, pytest.approx(metrics["mAP"], rel=1e-6))]
    # evaluate --run prints what run printed
    capsys.readouterr()
    assert cli.main(["-q", "evaluate", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert any(line.split()[:1] == [key] for line in out.splitlines()), key
