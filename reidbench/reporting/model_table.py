"""Model size and cost table: parameters, trainable parameters, GFLOPs and embedding size.

Each model is built exactly as a run builds it (``reidbench.models.build_model``: backbone + BN
neck, so the neck's frozen BN shift makes ``trainable_params`` smaller than ``params``) and
measured with one forward pass at batch 1 in eval mode under ``torch.utils.flop_counter``.
FLOPs follow torch's convention: a multiply-add counts as 2 FLOPs, and only matmul-like
operators are counted (linear, conv, (b)mm, scaled-dot-product attention); norms, activations,
softmax, pooling and ``grid_sample`` are not.

Attention is counted on every torch version alike: scaled-dot-product attention by
``sdpa_flops`` for every fused kernel torch may dispatch to, and the in-place batched matmul of
the chunked bucket attention (``baddbmm_``: q k^T added onto the relative bias) as a matmul,
whether or not the installed torch's own FLOP table knows them (torch 2.14's knows neither the
CPU attention kernel nor in-place matmuls, and counted 0 for them).
"""

from __future__ import annotations

import dataclasses
import math
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


# fused scaled-dot-product attention forward kernels (the first three tensor arguments are
# q, k, v); names absent from the installed torch are skipped
_SDPA_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


def sdpa_flops(query_shape: Sequence[int], key_shape: Sequence[int],
               value_shape: Sequence[int], *_: Any, **__: Any) -> int:
    """FLOPs of softmax(q k^T) v for (B, Hq, Tq, d) queries and (B, Hkv, Tk, d|dv) keys and
    values (grouped heads broadcast): the two matmuls, 2 (B Hq Tq Tk d + B Hq Tq Tk dv)."""
    b, h, tq, d = query_shape
    tk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * tq * tk * (d + dv)


def _inplace_matmul_flops(_: Sequence[int], a: Sequence[int], b: Sequence[int], *__: Any,
                          **___: Any) -> int:
    """FLOPs of ``self.baddbmm_(a, b)`` / ``self.addmm_(a, b)``: those of a @ b (the scaled
    add is not counted, as for the out-of-place forms)."""
    return 2 * math.prod(a) * b[-1]


def _attention_mapping() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for names, formula in ((_SDPA_OPS, sdpa_flops), (("baddbmm_", "addmm_"), _inplace_matmul_flops)):
        for name in names:
            op = getattr(torch.ops.aten, name, None)
            if op is not None:
                mapping[op] = formula
    return mapping


def count_flops(model: torch.nn.Module, *inputs: Any) -> int:
    """FLOPs of ``model(*inputs)`` (multiply-add = 2), run without gradients; attention is
    counted by ``sdpa_flops`` on every torch version."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_attention_mapping()) as counter:
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
