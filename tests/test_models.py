"""Model contract, parametrized over the registry: a new model is covered by registering it."""

from __future__ import annotations

import pytest
import torch

import reidbench.models  # noqa: F401  (registers models)
from reidbench.config import ModelConfig
from reidbench.models import build_model
from reidbench.registry import MODELS

TINY = dict(size="nano", depth=2, embed_dim=32, num_heads=2, patch_size=8)
GRIDS = {"non-square 16x8": (128, 64), "square 14x14": (112, 112)}


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("with_keypoints", [False, True])
def test_forward_backward(name: str, grid: str, with_keypoints: bool) -> None:
    g = torch.Generator().manual_seed(0)
    model = build_model(ModelConfig(name=name, **TINY), GRIDS[grid], num_keypoints=5)
    images = torch.randn(3, 3, *GRIDS[grid], generator=g)
    kps = torch.rand(3, 5, 2, generator=g) if with_keypoints else None
    out = model(images, kps)
    assert out.shape == (3, model.dim) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODELS.names())
def test_state_dict_round_trip(name: str) -> None:
    cfg = ModelConfig(name=name, **TINY)
    a, b = build_model(cfg, (128, 64), 5), build_model(cfg, (128, 64), 5)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


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
