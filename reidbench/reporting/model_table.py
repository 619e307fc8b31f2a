"""Model size and cost table: parameters, trainable parameters, GFLOPs and embedding size.

Each model is built exactly as a run builds it (``reidbench.models.build_model``: backbone + BN
neck, so the neck's frozen BN shift makes ``trainable_params`` smaller than ``params``) and
measured with one forward pass at batch 1 in eval mode under ``torch.utils.flop_counter``.
FLOPs follow torch's convention: a multiply-add counts as 2 FLOPs, and only matmul-like
operators are counted (linear, conv, (b)mm, scaled-dot-product attention); norms, activations,
softmax, pooling and ``grid_sample`` are not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from reidbench.config import ModelConfig
from reidbench.models import build_model

COLUMNS: tuple[tuple[str, str], ...] = (  # (row key, header)
    ("name", "model"),
    ("params", "params"),
    ("trainable_params", "trainable"),
    ("gflops", "GFLOPs"),
    ("embed_dim", "dim"),
)


def count_flops(model: torch.nn.Module, *inputs: Any) -> int:
    """FLOPs of ``model(*inputs)`` (multiply-add = 2), run without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def model_rows(
    names: Iterable[str], img_size: tuple[int, int], num_keypoints: int | None = None,
    cfg_overrides: Mapping[str, Any] | ModelConfig | None = None,
) -> list[dict[str, Any]]:
    """One row per registered model name, in the order given.

    Args:
        names: registered model names (``MODELS.names()`` for all).
        img_size: (height, width) input size.
        num_keypoints: K passed to the builders; when > 0 the forward also gets (1, K, 2)
            keypoints, otherwise None.
        cfg_overrides: ModelConfig fields applied to every model (e.g. ``{"size": "tiny"}``),
            or a ModelConfig whose fields (all but ``name``) are used.

    Returns:
        dicts with ``name``, ``params`` (total), ``trainable_params``, ``gflops`` (one forward,
        batch 1), ``embed_dim``.
    """
    if isinstance(cfg_overrides, ModelConfig):
        base = cfg_overrides
    else:
        base = ModelConfig(**dict(cfg_overrides or {}))
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, *img_size, generator=gen)  # (1, 3, H, W)
    keypoints = torch.rand(1, num_keypoints, 2, generator=gen) if num_keypoints else None
    rows = []
    for name in names:
        model = build_model(dataclasses.replace(base, name=name), img_size, num_keypoints).eval()
        params = list(model.parameters())
        rows.append({
            "name": name,
            "params": sum(p.numel() for p in params),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "gflops": count_flops(model, images, keypoints) / 1e9,
            "embed_dim": int(model.dim),
        })
    return rows


def _cell(key: str, value: Any) -> str:
    if key in ("params", "trainable_params"):
        return f"{value:,}"
    if key == "gflops":
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned plain-text table of ``model_rows`` output: names left-aligned, numbers right."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(key, row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(COLUMNS))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body)])
