"""Keypoint sensitivity (reidbench/evaluation/kp_sensitivity.py): exactly 0 for a KP-RPE whose
keypoint map is zero (the published initialisation), > 0 once the map is not, the float64
``||u - v||^2 / 2`` form equals ``1 - cos``, and the CLI writes the report of a recorded run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidbench import cli
from reidbench.config import ModelConfig
from reidbench.data.records import ImageRecord
from reidbench.data.transforms import Transform
from reidbench.evaluation.kp_sensitivity import cosine_change, embedding_change
from reidbench.evaluation.robustness import Extractor, ImageStore
from reidbench.models import build_model

H, W, K = 32, 16, 5


@pytest.fixture()
def store(tmp_path: Path) -> ImageStore:
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), i, 0, rng.uniform(0.2, 0.8, (K, 2)).astype(np.float32)))
    return ImageStore(records)


def extractor(weight_std: float) -> Extractor:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="kprpe", depth=2, embed_dim=32, num_heads=2), (H, W), K)
    if weight_std:
        with torch.no_grad():
            model.backbone.kprpe.weight.normal_(0.0, weight_std)
    tf = Transform(H, W, (0.5,) * 3, (0.25,) * 3)
    return Extractor(model.eval(), tf, torch.device("cpu"), batch_size=4)


def test_zero_keypoint_map_has_sensitivity_exactly_zero(store: ImageStore) -> None:
    for severity in (1, 5):
        change = embedding_change(extractor(0.0), store, K, severity)
        assert change.shape == (6,) and (change == 0.0).all()


def test_non_zero_keypoint_map_is_sensitive_and_more_so_under_more_noise(store: ImageStore) -> None:
    ex = extractor(0.5)
    low, high = embedding_change(ex, store, K, 1), embedding_change(ex, store, K, 5)
    assert (low > 0).all() and high.mean() > low.mean()


def test_cosine_change_is_one_minus_cosine_without_cancellation() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(cosine_change(a, b), 1.0 - cos, rtol=1e-12)
    assert (cosine_change(a, a.copy()) == 0).all()
    tiny = a + 1e-6 * rng.normal(size=a.shape)  # a change far below float32's 1 - cos resolution
    got = cosine_change(a.astype(np.float32), tiny.astype(np.float32))
    assert (got > 0).all() and got.max() < 1e-9


def test_cli_reports_the_sensitivity_of_a_recorded_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    runs, data = tmp_path / "runs", tmp_path / "data"
    tiny = ["--set", "model.depth=1", "--set", "model.embed_dim=32", "--set", "model.num_heads=2",
            "--set", "data.synth_ids=30", "--set", "data.height=64", "--set", "data.width=32"]
    code = cli.main(["-q", "run", "--model", "kprpe", "--dataset", "synthetic-reid", "--data-root",
                     str(data), "--output", str(runs), "--epochs", "1", "--batch-size", "32",
                     "--set", "model.head=flatten", *tiny])
    assert code == 0, capsys.readouterr().err
    (run,) = runs.iterdir()
    out = tmp_path / "report"
    code = cli.main(["-q", "robustness", "--kp-sensitivity", "--run", str(run), "--runs", str(runs),
                     "--data-root", str(data), "--severities", "5", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "synthetic-reid-kp-sensitivity.json").read_text())
    rows = report["rows"]
    assert [r["severity"] for r in rows] == [5] and {r["model"] for r in rows} == {"kprpe"}
    assert all(r["metric"] == "mAP" and 0 <= r["clean_value"] <= 1 for r in rows)
    assert all(r["embedding_change"] >= 0 and r["num_images"] > 0 for r in rows)
    assert rows[0]["head"] == "flatten"
    assert "| kprpe |" in (out / "synthetic-reid-kp-sensitivity.md").read_text()
    # never replaced without --overwrite
    code = cli.main(["-q", "robustness", "--kp-sensitivity", "--run", str(run), "--runs", str(runs),
                     "--data-root", str(data), "--severities", "1", "--output", str(out)])
    assert code == 2 and "already exists" in capsys.readouterr().err
