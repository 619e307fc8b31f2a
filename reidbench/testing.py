"""Contract checks for a registered model or position encoding, for your tests and ours.

``check_encoding("name")`` builds the registered model at a tiny size and checks what every model
of the zoo promises (``tests/test_models.py`` runs the same checks over the whole registry):

- ``check_forward_backward``: ``model(images, keypoints)`` gives finite (B, D) embeddings and
  finite gradients, on a non-square (16x8) and a square (14x14) patch grid, with and without
  keypoints;
- ``check_state_dict_round_trip``: a second model loading the first one's state dict computes
  exactly the same embeddings (every parameter and persistent buffer is in the state dict);
- ``check_batch_independence``: in eval mode an image's embedding does not depend on the other
  images of its batch.

A failed check raises ``AssertionError`` naming the model and what went wrong. The checks use a
fixed seed and need no GPU, data or internet. ``registered_temporarily()`` undoes what a test
registered (a plugin imported in the test, say) when it ends.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from reidbench import registry
from reidbench.config import ModelConfig
from reidbench.models import build_model
from reidbench.registry import DATASETS, LOSSES, MODELS, PERTURBATIONS, load_builtins

# a 2-block, 32-wide ViT with 8-pixel patches: fast on any CPU
TINY: dict[str, Any] = dict(size="nano", depth=2, embed_dim=32, num_heads=2, patch_size=8)
# (height, width) inputs: re-ID's 16x8 grid and faces' 14x14 grid of 8-pixel patches
GRIDS: dict[str, tuple[int, int]] = {"non-square 16x8": (128, 64), "square 14x14": (112, 112)}
NUM_KEYPOINTS = 5


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def tiny_config(name: str, **fields: Any) -> ModelConfig:
    """``ModelConfig`` of the tiny size for model ``name``; ``fields`` override any field
    (e.g. ``rope=RopeConfig(mode="mixed")``)."""
    return dataclasses.replace(ModelConfig(name=name, **TINY), **fields)


def check_forward_backward(name: str, img_size: tuple[int, int], with_keypoints: bool,
                           **fields: Any) -> None:
    """Finite (B, D) embeddings and finite gradients for (B, 3, H, W) images of ``img_size``."""
    g = torch.Generator().manual_seed(0)
    model = build_model(tiny_config(name, **fields), img_size, num_keypoints=NUM_KEYPOINTS)
    images = torch.randn(3, 3, *img_size, generator=g)
    kps = torch.rand(3, NUM_KEYPOINTS, 2, generator=g) if with_keypoints else None
    out = model(images, kps)
    where = f"model {name!r} at {img_size[0]}x{img_size[1]}, keypoints={with_keypoints}"
    _require(out.shape == (3, model.dim), f"{where}: embeddings of shape {tuple(out.shape)}, "
                                          f"expected (3, {model.dim})")
    _require(bool(torch.isfinite(out).all()), f"{where}: non-finite embeddings")
    out.square().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    _require(not bad, f"{where}: non-finite gradients in {', '.join(bad)}")


def check_state_dict_round_trip(name: str, img_size: tuple[int, int] = (128, 64),
                                **fields: Any) -> None:
    """A fresh model loading the state dict of another computes exactly the same embeddings."""
    cfg = tiny_config(name, **fields)
    torch.manual_seed(0)
    a = build_model(cfg, img_size, NUM_KEYPOINTS)
    torch.manual_seed(1)
    b = build_model(cfg, img_size, NUM_KEYPOINTS)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    x = torch.randn(2, 3, *img_size, generator=torch.Generator().manual_seed(1))
    _require(torch.equal(a(x), b(x)), f"model {name!r}: a copy loaded from its state dict computes "
                                      "different embeddings (state outside the state dict?)")


def check_batch_independence(name: str, img_size: tuple[int, int] = (128, 64),
                             **fields: Any) -> None:
    """In eval mode each image's embedding is the same alone as within a batch of three."""
    model = build_model(tiny_config(name, **fields), img_size, NUM_KEYPOINTS).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, *img_size, generator=g)
    kps = torch.rand(3, NUM_KEYPOINTS, 2, generator=g)
    with torch.no_grad():
        batch = model(x, kps)
        alone = torch.cat([model(x[i:i + 1], kps[i:i + 1]) for i in range(3)])
    diff, scale = (batch - alone).abs().max().item(), batch.abs().max().item()
    _require(diff <= 1e-4 * (1.0 + scale),  # float noise of batched kernels is far below this
             f"model {name!r}: an image's embedding depends on the rest of its batch (max "
             f"difference {diff:.3g} for embeddings up to {scale:.3g})")


def check_encoding(name: str, **fields: Any) -> None:
    """Every check above for registered model ``name`` (built-in ones are loaded first; register
    yours, e.g. by importing your plugin or ``registry.load_plugins([...])``, before calling).
    ``fields`` override the tiny ``ModelConfig``."""
    load_builtins()
    MODELS.get(name)  # an unknown name: the registry's error, listing the known ones
    for img_size in GRIDS.values():
        for with_keypoints in (False, True):
            check_forward_backward(name, img_size, with_keypoints, **fields)
    check_state_dict_round_trip(name, **fields)
    check_batch_independence(name, **fields)


@contextmanager
def registered_temporarily(*modules: str) -> Iterator[None]:
    """Within the block, register (or load plugins) freely: on exit the registries hold what they
    held before, and ``modules`` (your plugins, with their submodules) are forgotten, so that a
    later import or ``load_plugins`` registers them again."""
    registries = (MODELS, DATASETS, LOSSES, PERTURBATIONS)
    saved = [r.snapshot() for r in registries]
    loaded = set(registry._plugins_loaded)
    try:
        yield
    finally:
        for reg, items in zip(registries, saved):
            reg.restore(items)
        registry._plugins_loaded.intersection_update(loaded)
        for name in list(sys.modules):
            if any(name == m or name.startswith(m + ".") for m in modules):
                del sys.modules[name]
