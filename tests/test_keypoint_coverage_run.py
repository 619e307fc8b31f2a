"""Never silent (issue 16, item 4): a KP-RPE / POSTER run on data without keypoints, or with low
coverage, warns at start with the coverage and the command that makes them; the run record
carries the keypoint source and coverage; `data check` says how to make a missing sidecar."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.datasets.market1501 import read_market_layout
from reidbench.keypoints import COCO17_KEYPOINTS, Detection, images_by_split
from reidbench.keypoints.dataset_sidecar import keypoint_block, keypoint_warning
from reidbench.keypoints.sidecar import write_provenance, write_sidecar

TINY = ["--epochs", "1", "--batch-size", "8", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "model.size=nano", "--set", "data.height=64",
        "--set", "data.width=32"]


def _half_sidecar(path: Path) -> dict[str, list[str]]:
    """A blazepose-like sidecar with keypoints for every other image (sorted), the rest
    explicit "nothing found" rows; returns the images per split."""
    images = images_by_split(read_market_layout(MINI_MARKET))
    keys = sorted({k for v in images.values() for k in v})
    g = np.random.default_rng(0)
    rows: dict[str, Detection | None] = {
        k: Detection(0.1 + 0.8 * g.random((17, 2)), np.ones(17)) if i % 2 == 0 else None
        for i, k in enumerate(keys)}
    write_sidecar(path, rows, COCO17_KEYPOINTS.names)
    write_provenance(path, {"detector": "blazepose"})
    return {split: [k for k in v if rows[k] is not None] for split, v in images.items()}


@pytest.mark.usefixtures("shared_data")
def test_without_keypoints_the_warning_names_coverage_fallback_and_command() -> None:
    split = read_market_layout(MINI_MARKET)
    text = keypoint_warning("kprpe", "market1501", MINI_MARKET, split)
    assert text is not None
    assert "train 0/32 (0.0%), query 0/32 (0.0%), gallery 0/32 (0.0%)" in text
    assert "static bias" in text and "pip install 'reidbench[keypoints]'" in text
    assert text.endswith(f"reidbench data keypoints market1501 --data-root {MINI_MARKET}")
    assert "default keypoints" in keypoint_warning("poster", "market1501", MINI_MARKET, split)
    assert keypoint_warning("irpe", "market1501", MINI_MARKET, split) is None  # needs none
    assert keypoint_block(split) == {"name": "none", "source": None, "detector": None,
                                     "coverage": {"train": 0.0, "query": 0.0, "gallery": 0.0}}


@pytest.mark.usefixtures("shared_data")
def test_a_run_with_low_coverage_warns_and_records_source_and_coverage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sidecar = tmp_path / "kp.csv"
    found = _half_sidecar(sidecar)
    with caplog.at_level(logging.WARNING):
        code = cli.main(["-q", "run", "--model", "kprpe", "--dataset", "market1501", "--data-root",
                         str(MINI_MARKET), "--output", str(tmp_path / "runs"), *TINY,
                         "--set", f"data.keypoints={sidecar}"])
    assert code == 0
    warned = [r.getMessage() for r in caplog.records if "every image without them" in r.getMessage()]
    assert len(warned) == 1
    n = len(found["train"])
    assert f"train {n}/32 ({100 * n / 32:.1f}%)" in warned[0]
    assert warned[0].endswith(f"--data-root {MINI_MARKET} --out {sidecar}")
    (run,) = (tmp_path / "runs").iterdir()
    record = json.loads((run / "metrics.json").read_text())["keypoints"]
    assert record["source"] == str(sidecar) and record["detector"] == "blazepose"
    assert record["coverage"] == {s: round(len(v) / 32, 6) for s, v in found.items()}
    # the leaderboard's keypoints column (reporting.recipe) shows the file and its coverage
    from reidbench.reporting.recipe import describe_source

    n = len(found["train"])
    assert describe_source(record, "dataset") == f"kp.csv (train {100 * n / 32:.1f}%)"


def test_the_default_runs_record_reads_as_before_in_the_leaderboard(tmp_path: Path) -> None:
    """Full coverage from the dataset's own sidecar keeps the label the leaderboard gave runs
    recorded before the block existed ("dataset"), so their seeds still average together."""
    from reidbench.config import DataConfig
    from reidbench.datasets.catalog import build_dataset
    from reidbench.reporting.recipe import describe_source

    split = build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path), synth_ids=8))
    block = keypoint_block(split)
    assert block["coverage"] == {"train": 1.0, "query": 1.0, "gallery": 1.0}
    assert describe_source(block, "dataset") == describe_source(None, "dataset") == "dataset"


@pytest.mark.usefixtures("shared_data")
def test_data_check_without_keypoints_gives_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "data", "check", "market1501", "--data-root", str(MINI_MARKET),
                     "--images", "none"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("keypoints: none (no sidecar): every sample runs without keypoints; make them with: "
            f"reidbench data keypoints market1501 --data-root {MINI_MARKET}") in out


@pytest.mark.usefixtures("shared_data")
def test_robustness_report_states_why_kpnoise_was_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = tmp_path / "runs"
    assert cli.main(["-q", "run", "--model", "kprpe", "--dataset", "market1501", "--data-root",
                     str(MINI_MARKET), "--output", str(runs), *TINY]) == 0
    (run,) = runs.iterdir()
    with caplog.at_level(logging.WARNING):
        code = cli.main(["-q", "robustness", "--run", run.name, "--runs", str(runs), "--out",
                         str(tmp_path / "rob"), "--id", "r", "--perturb", "rotate,kpnoise",
                         "--severities", "0-1"])
    assert code == 0
    why = (f"market1501 has no keypoints, so keypoint noise would change nothing (every keypoint "
           f"model runs its no-keypoint fallback); make them with `reidbench data keypoints "
           f"market1501 --data-root {MINI_MARKET}`")
    assert f"**`kpnoise` was skipped**: {why}." in (tmp_path / "rob" / "r.md").read_text()
    assert json.loads((tmp_path / "rob" / "r.json").read_text())["skipped"] == {"kpnoise": why}
    assert any(f"kpnoise skipped: {why}" in r.getMessage() for r in caplog.records)
