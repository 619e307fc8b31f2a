"""The no-position control (``nope``) and the promise that ``rope``, ``cpe`` and ``nope`` differ
from ``ape`` in the position encoding only (same ViT otherwise, same parameters but the PE's)."""

from __future__ import annotations

import pytest
import torch

from reidbench.config import ModelConfig, RopeConfig
from reidbench.models import build_model
from reidbench.registry import load_builtins

load_builtins()

TINY = dict(size="nano", depth=2, embed_dim=32, num_heads=2, patch_size=8)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_nope_has_no_position_parameters_or_buffers() -> None:
    model = build_model(ModelConfig(name="nope", **TINY), (64, 32)).backbone
    assert model.pos_embed is None and model.cond_pos is None
    assert all(b.attn.rel_pos is None for b in model.blocks)
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    assert not [n for n in names if "pos" in n or "freq" in n]


@pytest.mark.parametrize("hw", [(64, 32), (48, 48)])
def test_nope_embedding_ignores_where_the_patches_are(hw: tuple[int, int]) -> None:
    """Without any position encoding the patches are a set: permuting the image's 8x8 patches
    leaves the embedding unchanged. APE (the same ViT plus its table) does see the difference."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, *hw, generator=g)
    rows, cols = hw[0] // 8, hw[1] // 8
    perm = torch.randperm(rows * cols, generator=g)
    patches = images.unfold(2, 8, 8).unfold(3, 8, 8).reshape(2, 3, rows * cols, 8, 8)
    shuffled = patches[:, :, perm].reshape(2, 3, rows, cols, 8, 8).permute(0, 1, 2, 4, 3, 5)
    shuffled = shuffled.reshape(2, 3, *hw)
    for name, same in [("nope", True), ("ape", False)]:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=name, **TINY), hw).eval()
        a, b = model(images), model(shuffled)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) is same, name


@pytest.mark.parametrize("hw", [(64, 32), (48, 48)])
def test_parameter_counts_differ_from_ape_by_the_encoding_only(hw: tuple[int, int]) -> None:
    """ape = nope + the (1 + N) x D table; rope axial = nope; rope mixed = nope + depth x D
    frequencies (2 x heads x head_dim / 2 per block); cpe = nope + a 3x3 depthwise filter and a
    bias per channel (10 D)."""
    d, depth, n = 32, 2, (hw[0] // 8) * (hw[1] // 8)
    count = {
        name: n_params(build_model(ModelConfig(name=name, rope=RopeConfig(mode=mode), **TINY), hw))
        for name, mode in [("ape", "axial"), ("nope", "axial"), ("rope", "axial"), ("cpe", "axial")]
    }
    mixed = n_params(build_model(ModelConfig(name="rope", rope=RopeConfig(mode="mixed"), **TINY), hw))
    assert count["ape"] == count["nope"] + (1 + n) * d
    assert count["rope"] == count["nope"]
    assert mixed == count["nope"] + depth * d
    assert count["cpe"] == count["nope"] + 10 * d


@pytest.mark.parametrize(("name", "own"), [
    ("nope", set()), ("rope", set()),
    ("cpe", {"backbone.cond_pos.proj.weight", "backbone.cond_pos.proj.bias"}),
    ("rope-mixed", {f"backbone.blocks.{i}.attn.rel_pos.freqs" for i in range(2)}),
])
def test_state_dicts_match_ape_but_for_the_encoding(name: str, own: set[str]) -> None:
    """Every weight of APE's ViT except its table exists, with the same shape, in the variant, and
    the variant has nothing else but its own encoding's parameters."""
    mode = "mixed" if name == "rope-mixed" else "axial"
    variant = build_model(ModelConfig(name=name.split("-")[0], rope=RopeConfig(mode=mode), **TINY), (64, 32))
    ape = build_model(ModelConfig(name="ape", **TINY), (64, 32))
    result = ape.load_state_dict(variant.state_dict(), strict=False)
    assert result.missing_keys == ["backbone.pos_embed.embed"]
    assert set(result.unexpected_keys) == own
