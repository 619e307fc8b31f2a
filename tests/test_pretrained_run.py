"""``model.pretrained`` in a run: the weights reach the model that trains, and the record names
them (``pretrained.json`` in full, ``metrics.json`` key ``pretrained`` for the leaderboard).

The checkpoints are timm ``VisionTransformer``s with random weights made here (square 32x32
input, so the position embedding must be resampled to the run's 64x32 grid); nothing is
downloaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import MINI_MARKET, require_shared_data

from reidbench import cli
from reidbench.engine.checkpoint import read_checkpoint

timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

DIM, DEPTH, HEADS, PATCH = 32, 1, 2, 8
TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--epochs", "1", "--device", "cpu", "--set", f"model.depth={DEPTH}",
        "--set", f"model.embed_dim={DIM}", "--set", f"model.num_heads={HEADS}",
        "--set", "data.height=64", "--set", "data.width=32", "--set", f"model.patch_size={PATCH}",
        "--set", "train.warmup_epochs=0"]


def timm_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    model = TimmViT(img_size=32, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                    num_classes=10)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    state = model.state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state}, path)  # nested, as DeiT ships it
    return state


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["-q", "run", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("model,suffix,precision", [("ape", ".pth", "fp32"),
                                                    ("kprpe", ".safetensors", "bf16")])
def test_a_run_starts_from_the_weights_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, suffix: str, precision: str,
) -> None:
    require_shared_data(MINI_MARKET)
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    weights = tmp_path / f"vit{suffix}"
    state = timm_checkpoint(weights)
    out = tmp_path / "runs"
    # lr 1e-12: one epoch moves no weight measurably, so the trained model still holds the file's
    code, err = run([*TINY, "--model", model, "--output", str(out), "--set",
                     f"model.pretrained={weights}", "--set", "train.lr=1e-12", "--set",
                     f"train.precision={precision}"], capsys)
    assert code == 0, err
    (folder,) = out.iterdir()
    trained = read_checkpoint(folder / "checkpoint.pt")["model"]
    for key in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "cls_token", "norm.weight",
                "patch_embed.proj.weight"):
        torch.testing.assert_close(trained[f"backbone.{key}"], state[key], rtol=0, atol=1e-6)
    report = json.loads((folder / "pretrained.json").read_text())
    block = json.loads((folder / "metrics.json").read_text())["pretrained"]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert block["path"] == str(weights) and block["sha256"] == sha == report["sha256"]
    assert block["target"] == report["target"] == "backbone"
    # 4x4 grid of the 32x32 checkpoint -> 8x4 of the 64x32 model
    assert block["resampled"] == 1 and report["resampled"][0]["from"] == [1, 17, DIM]
    assert report["resampled"][0]["to"] == [1, 33, DIM]
    assert block["loaded"] == len(report["loaded"]) == 5 + 1 + 12 * DEPTH
    assert block["missing"] == block["unexpected"] == 0
    assert block["ignored"] == 2  # the classifier head's weight and bias
    assert (block["initialised"] > 0) == (model == "kprpe")  # the keypoint tables keep their init


def test_bad_starting_weights_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "runs"
    code, err = run([*TINY, "--output", str(out), "--set",
                     f"model.pretrained={tmp_path / 'absent.pth'}"], capsys)
    assert code == 2 and "no such file (weights are never downloaded" in err
    code, err = run([*TINY, "--output", str(out), "--set", f"model.pretrained={tmp_path}/w.npz"],
                    capsys)
    assert code == 2 and "unknown file type '.npz'" in err
    weights = tmp_path / "vit.pth"
    timm_checkpoint(weights)
    code, err = run([*TINY, "--model", "resnet50", "--output", str(out), "--set",
                     f"model.pretrained={weights}"], capsys)
    assert code == 2 and "resnet50 is a CNN" in err
    assert not out.exists()
    assert all(line.startswith("reidbench: error: ") for line in err.strip().splitlines())
