"""Losses chosen by name from the config, trained end to end: per-term records, model checks, and
the stop on a non-finite step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from reidbench import cli

TINY = [
    "--model",
    "kprpe",
    "--dataset",
    "synthetic-reid",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--set",
    "model.depth=2",
    "--set",
    "model.embed_dim=32",
    "--set",
    "model.num_heads=2",
    "--set",
    "model.size=nano",
    "--set",
    "data.synth_ids=16",
    "--set",
    "data.height=64",
    "--set",
    "data.width=32",
    "--set",
    "train.warmup_epochs=0",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loss-data")


def run(args: list[str], data_root: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["-q", "run", *TINY, "--data-root", str(data_root), "--output", str(out), *args])
    return code, capsys.readouterr().err


def test_every_term_is_recorded_per_epoch(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    terms = ["ce", "triplet", "rp_triplet", "jsd", "arcface", "circle", "supcon"]
    args = [
        "--set",
        f"loss.terms={','.join(terms)}",
        "--set",
        "loss.weights=1,1,1,0.1,0.5,0.1,0.1",
        "--set",
        "loss.rp_topn=4",
        "--set",
        "loss.rp_layers=-1",
        "--set",
        "data.sampler=pk_camera",
    ]
    code, err = run(args, data_root, tmp_path, capsys)
    assert code == 0, err
    (run_dir,) = tmp_path.iterdir()
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        for name in [*terms, "total", "grad_norm", "rp_triplet_rel_norm", "jsd_d_neg"]:
            assert name in record and record[name] == record[name], name  # present, not NaN
        weights = dict(zip(terms, [1, 1, 1, 0.1, 0.5, 0.1, 0.1]))
        assert record["total"] == pytest.approx(sum(w * record[t] for t, w in weights.items()), rel=1e-4)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["loss"]["terms"] == terms and cfg["loss"]["rp_layers"] == [-1]
    assert cfg["data"]["sampler"] == "pk_camera"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {k.split(".")[1] for k in ckpt["loss"]} >= {"arcface"}  # margin head saved with the loss


@pytest.mark.parametrize(
    "model,match",
    [
        ("poster", "loss term 'rp_triplet' needs a ViT"),
        ("resnet50", "loss term 'rp_triplet' needs a ViT"),
    ],
)
def test_positional_loss_on_a_model_without_positions_is_one_line(
    model: str, match: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        ["--model", model, "--set", "loss.terms=ce,rp_triplet", "--set", "loss.weights=1,1"],
        data_root,
        tmp_path,
        capsys,
    )
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_non_finite_gradient_stops_naming_the_step(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reidbench.engine import trainer
    from reidbench.losses import modules

    real_forward, real_epoch = modules.TripletLoss.forward, trainer._train_epoch
    seen = {"epoch": 0, "calls": 0}

    def track_epoch(state, loader, device, cfg, epoch, run_dir):  # type: ignore[no-untyped-def]
        seen["epoch"] = epoch
        return real_epoch(state, loader, device, cfg, epoch, run_dir)

    def poisoned(self, out):  # type: ignore[no-untyped-def]
        value = real_forward(self, out)
        if seen["epoch"] == 1:
            seen["calls"] += 1
            if seen["calls"] == 2:  # finite value, NaN gradient: d sqrt(x)/dx at 0 is inf, times 0
                value = value + (out.feats.sum() * 0).abs().sqrt()
        return value

    monkeypatch.setattr(trainer, "_train_epoch", track_epoch)
    monkeypatch.setattr(modules.TripletLoss, "forward", poisoned)
    code, err = run([], data_root, tmp_path, capsys)
    assert code == 2
    (run_dir,) = tmp_path.iterdir()
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    per_epoch = history[0]["step"]
    assert "the gradient norm is nan (loss terms ce=" in err
    assert f"at epoch 2, step {per_epoch + 2}; training stopped" in err and "epoch 1) is kept" in err
    assert len(history) == 2 and history[1]["stopped"] in err and history[1]["good_steps"] == 1
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
