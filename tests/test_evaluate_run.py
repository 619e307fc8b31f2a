"""`reidbench evaluate --run RUN --dataset D`: a recorded model scored on another dataset's test
side, here a test-only IJB-B tree through template scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_ijb import PAIRS, ijb_tree

from reidbench import cli
from reidbench.config import resolve_config
from reidbench.data.loader import ImageDataset
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.trainer import eval_transform
from reidbench.evaluation.reid import extract_features
from reidbench.evaluation.templates import evaluate_templates
from reidbench.models import build_model
from reidbench.reporting.records import write_run_config


def recorded_run(root: Path) -> tuple[Path, torch.nn.Module]:
    """A run folder as `reidbench run` leaves it: resolved config and checkpoint."""
    cfg = resolve_config("synthetic-faces", "kprpe", overrides=["model.depth=1"])
    run = root / "20261121-000000-kprpe-synthetic-faces-s0"
    run.mkdir(parents=True)
    write_run_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, (cfg.data.height, cfg.data.width), 5)
    with torch.no_grad():  # non-zero keypoint weights, so the keypoints matter
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape))
    torch.save({"model": model.state_dict()}, run / "checkpoint.pt")
    return run, model.eval()


def test_scores_a_run_on_ijb_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ijb_tree(tmp_path / "data" / "IJBB")
    run, model = recorded_run(tmp_path / "runs")
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--run", run.name, "--runs", str(tmp_path / "runs"), "--dataset",
                     "ijbb", "--data-root", str(tmp_path / "data"), "--device", "cpu", "--json",
                     str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["task"] == "templates" and got["dataset"] == "ijbb" and got["num_pairs"] == len(PAIRS)
    cfg = resolve_config("ijbb", "kprpe", overrides=["model.depth=1", f"data.root={tmp_path / 'data'}"])
    ts = build_dataset(cfg.data)
    feats = extract_features(model, ImageDataset(ts.images, eval_transform(cfg), 5), 16,
                             torch.device("cpu"))
    assert got["auc"] == pytest.approx(evaluate_templates(ts, feats.feats)["auc"])
    assert "templates" not in capsys.readouterr().err


def test_run_flags_need_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f.npz").write_bytes(b"")
    assert cli.main(["evaluate", "--features", str(tmp_path / "f.npz"), "--dataset", "ijbb"]) == 2
    assert "--run" in capsys.readouterr().err


def test_unknown_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["evaluate", "--run", "nope", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no run record" in err and len(err.splitlines()) == 1
