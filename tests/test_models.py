"""Model contract, parametrized over the registry: a new model is covered by registering it."""

from __future__ import annotations

import math

import pytest
import torch

from reidbench import testing as contract
from reidbench.config import ModelConfig
from reidbench.models import build_model
from reidbench.registry import MODELS, load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

TINY = contract.TINY
GRIDS = contract.GRIDS


# the contract checks are public (reidbench/testing.py), so a plugin's tests run the same ones


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("with_keypoints", [False, True])
def test_forward_backward(name: str, grid: str, with_keypoints: bool) -> None:
    contract.check_forward_backward(name, GRIDS[grid], with_keypoints)


@pytest.mark.parametrize("name", MODELS.names())
def test_state_dict_round_trip(name: str) -> None:
    contract.check_state_dict_round_trip(name)


@pytest.mark.parametrize("name", MODELS.names())
def test_batch_independence(name: str) -> None:
    contract.check_batch_independence(name)


def test_grid_is_height_by_width() -> None:
    model = build_model(ModelConfig(**TINY), (128, 64))
    assert model.backbone.grid == (16, 8)


def test_sincos_ape_is_fixed() -> None:
    model = build_model(ModelConfig(ape="sincos", **TINY), (128, 64))
    assert not any("pos_embed" in n for n, _ in model.named_parameters())


def test_bad_input_size_is_a_clear_error() -> None:
    from reidbench.errors import ConfigError

    with pytest.raises(ConfigError, match="not a multiple of the patch size 8"):
        build_model(ModelConfig(**TINY), (100, 64))


# --- knowable values: parameter counts in closed form, a hand-set model's output ----------------


def vit_param_count(d: int, depth: int, heads: int, patch: int, grid: tuple[int, int], rel: str = "",
                    keypoints: int = 1, k: int = 4, mlp_ratio: float = 4.0) -> int:
    """Parameters of a ViT + BN neck, counted by hand: patch conv, CLS, learned position table,
    blocks (2 LayerNorms, qkv, proj, MLP), final norm, neck; plus the relative tables."""
    n, hidden, hd = grid[0] * grid[1], int(d * mlp_ratio), d // heads
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
    total = 3 * patch * patch * d + d + d + (1 + n) * d + depth * block + 2 * d + 2 * d
    per_block = {
        "": 0,
        "irpe": hd * 50,  # contextual keys, one shared (d, 49 + 1 prefix bucket) table
        "irpe-bias-qk-cross": 2 * 2 * heads * 8,  # q and k, rows and cols tables of 7 + 1 buckets, per head
        "rpe": 2 * (2 * k + 2) * hd,  # key rows and key columns: offsets -k..k and the prefix row
        "rpe-values": 4 * (2 * k + 2) * hd,
        "kprpe": heads * 49 * (2 * keypoints + 1) + heads,  # linear map 2K -> 49 per head, bias, prefix
    }[rel]
    return total + depth * per_block


@pytest.mark.parametrize(("name", "rel", "label"), [
    ("ape", {}, ""), ("irpe", {}, "irpe"),
    ("irpe", {"mode": "bias", "on": "qk", "method": "cross", "shared_head": False}, "irpe-bias-qk-cross"),
    ("rpe", {}, "rpe"), ("rpe", {"on_values": True}, "rpe-values"), ("kprpe", {}, "kprpe"),
])
@pytest.mark.parametrize("keypoints", [1, 5])
def test_parameter_counts_equal_the_closed_form(name: str, rel: dict, label: str, keypoints: int) -> None:
    from reidbench.config import RelPosConfig

    cfg = ModelConfig(name=name, rel=RelPosConfig(**rel), **TINY)  # type: ignore[arg-type]
    for hw in GRIDS.values():
        model = build_model(cfg, hw, num_keypoints=keypoints)
        want = vit_param_count(32, 2, 2, 8, (hw[0] // 8, hw[1] // 8), label, keypoints)
        assert sum(p.numel() for p in model.parameters()) == want


def test_recorded_parameter_counts_equal_the_closed_form() -> None:
    """The committed leaderboard's params column (nano: width 128, 4 blocks, 4 heads, 8-pixel
    patches; 10 body keypoints at 128x64, 5 face landmarks at 112x112)."""
    import csv

    from conftest import REPO

    settings = {"synthetic-reid": ((16, 8), 10), "synthetic-faces": ((14, 14), 5)}
    with (REPO / "results" / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        grid, kps = settings[row["dataset"]]
        label = "" if row["model"] == "ape" else row["model"]
        assert int(row["params"]) == vit_param_count(128, 4, 4, 8, grid, label, kps), row["run_id"]


@pytest.mark.parametrize("name", ["ape", "rpe", "irpe", "kprpe", "rope", "cpe", "nope"])
def test_hand_set_model_outputs_its_normalised_cls_token(name: str) -> None:
    """Every weight and bias zero, norms with unit scale, BN neck at its initial statistics: each
    block adds nothing, so the embedding is LN(cls) / sqrt(1 + 1e-5) whatever the image and
    keypoints; with cls = (1, -1, 1, -1, ...) (mean 0, variance 1) that is cls / sqrt(1 + 1e-6) /
    sqrt(1 + 1e-5)."""
    model = build_model(ModelConfig(name=name, **TINY), (32, 16), num_keypoints=3)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.fill_(1.0 if n.endswith("weight") and p.ndim == 1 else 0.0)  # LayerNorm / BN scales
        model.backbone.cls_token.copy_(torch.tensor([1.0, -1.0] * 16))
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = model(torch.randn(2, 3, 32, 16, generator=g), torch.rand(2, 3, 2, generator=g))
    expected = torch.tensor([1.0, -1.0] * 16) / math.sqrt(1 + 1e-6) / math.sqrt(1 + 1e-5)
    torch.testing.assert_close(out, expected.expand(2, 32), rtol=1e-6, atol=1e-6)
