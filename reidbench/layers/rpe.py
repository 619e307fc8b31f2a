"""Relative position representations (Shaw et al., "Self-Attention with Relative Position
Representations", NAACL 2018) on a 2D patch grid, as a ``RelativePosition`` injected per block.

Two patches at grid offset (dy, dx) = position(i) - position(j) get the key encoding

    a^K_ij = rows^K[clip(dy, -k, k)] + cols^K[clip(dx, -k, k)]     (a d-vector)

from two learned tables of 2k + 1 rows (k = ``max_distance``), and the logits gain
s q_i . a^K_ij, with s = head_dim**-0.5 the attention scale (the same scale as the q . k term).
With ``on_values`` the output gains sum_j attn_ij a^V_ij from a second pair of tables. Every pair
involving a prefix (CLS) token uses one extra learned row of each table instead.

The (T, T, d) encodings are never built: q @ W, with W the (2k + 2)^2 sums of a row and a
column embedding, gives (B, H, T, (2k + 2)^2), gathered by the (T, T) index of each pair's
clipped (row, column) offsets; on values, the probabilities are scatter-added into
(B, H, T, 2k + 2) buckets and then multiplied by the table.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from reidbench.layers.bucket_attention import BucketTerm, explicit_bias
from reidbench.layers.position import AttentionContext, RelativePosition
from reidbench.layers.rel_index import grid_offsets


@lru_cache(maxsize=64)
def _axis_ids(
    grid: tuple[int, int], prefix: int, max_distance: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, T) int64 row and column indices into the tables, T = prefix + rows * cols (do not modify).

    Patch pairs: clip(offset, -k, k) + k in [0, 2k]; pairs with a prefix token: 2k + 1.
    """
    offsets = grid_offsets(grid)  # (N, N, 2)
    n = offsets.shape[0]
    out = []
    for axis in range(2):
        ids = torch.full((prefix + n, prefix + n), 2 * max_distance + 1, dtype=torch.int64)
        ids[prefix:, prefix:] = offsets[..., axis].clamp(-max_distance, max_distance) + max_distance
        out.append(ids.to(device))
    return out[0], out[1]


@lru_cache(maxsize=64)
def _pair_ids(
    grid: tuple[int, int], prefix: int, max_distance: int, device: torch.device
) -> torch.Tensor:
    """(T, T) index rows * (2k + 2) + cols into the (row, column) pair table (do not modify)."""
    rows, cols = _axis_ids(grid, prefix, max_distance, device)
    return rows * (2 * max_distance + 2) + cols


def scatter_pairs(attn: torch.Tensor, ids: torch.Tensor, size: int) -> torch.Tensor:
    """Per-row bucket mass: attn (B, H, T, T), ids (T, T) -> (B, H, T, size), the sum of attn[..., i, j]
    over the j with ids[i, j] = r (the adjoint of gathering lut[..., i, ids[i, j]])."""
    b, h, t, _ = attn.shape
    return attn.new_zeros(b, h, t, size).scatter_add(-1, ids.expand(b, h, -1, -1), attn)


def check_tokens(x: torch.Tensor, ctx: AttentionContext, name: str) -> None:
    """Raise when x (..., T, *) does not have the prefix + rows * cols tokens of ``ctx``."""
    t = ctx.num_prefix_tokens + ctx.grid[0] * ctx.grid[1]
    if x.shape[-2] != t:
        raise ValueError(f"{name} got {x.shape[-2]} tokens but grid {tuple(ctx.grid)} with "
                         f"{ctx.num_prefix_tokens} prefix tokens has {t}")


class ShawRPE(RelativePosition):
    """Shaw et al. relative position representations with per-axis clipped 2D offsets.

    Args:
        head_dim: per-head width d; the attention scale is head_dim**-0.5, as in ``Attention``.
        num_heads: attention heads (the table count when ``shared_head`` is False).
        max_distance: clipping distance k of each axis offset.
        on_values: also add the value encoding to the attention output (needs probabilities).
        shared_head: one set of tables for all heads (Shaw's original) or one per head.

    Tables (H|1, 2k + 2, d), trunc-normal(0.02) initialised: ``key_rows``, ``key_cols`` and, with
    ``on_values``, ``value_rows``, ``value_cols``; row 2k + 1 is the prefix-token embedding.
    """

    def __init__(
        self, head_dim: int, num_heads: int, max_distance: int = 4, on_values: bool = False,
        shared_head: bool = True,
    ) -> None:
        super().__init__()
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}")
        self.head_dim, self.num_heads, self.max_distance = head_dim, num_heads, max_distance
        self.on_values, self.shared_head = on_values, shared_head
        self.scale = head_dim**-0.5
        self.size = 2 * max_distance + 2  # clipped offsets -k..k, then the prefix row
        shape = (1 if shared_head else num_heads, self.size, head_dim)
        names = ("key_rows", "key_cols") + (("value_rows", "value_cols") if on_values else ())
        for name in names:
            table = nn.Parameter(torch.empty(shape))
            nn.init.trunc_normal_(table, std=0.02)
            self.register_parameter(name, table)

    @property
    def needs_probabilities(self) -> bool:
        return self.on_values

    def axis_ids(self, ctx: AttentionContext, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, T) row and column table indices of every pair for the grid of ``ctx`` (cached)."""
        return _axis_ids(tuple(ctx.grid), ctx.num_prefix_tokens, self.max_distance, device)

    def bucket_terms(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> list[BucketTerm]:
        """The key term s q_i . a^K_ij as one bucket table over (row, column) offset pairs:
        (s q) @ W gives (B, H, T, (2k + 2)^2) with W[:, r * (2k + 2) + c] = rows^K[r] + cols^K[c],
        gathered with each pair's product index. One gather (and one scatter in backward)
        instead of one per axis; W's gradient reaches both tables through autograd."""
        check_tokens(q, ctx, "ShawRPE")
        pair = _pair_ids(tuple(ctx.grid), ctx.num_prefix_tokens, self.max_distance, q.device)
        w = self.key_rows.unsqueeze(2) + self.key_cols.unsqueeze(1)  # (H|1, 2k+2, 2k+2, d)
        w = (w.to(q.dtype) * self.scale).flatten(1, 2).transpose(-2, -1)  # (H|1, d, (2k+2)^2)
        # a linear term: the (B, H, T, (2k + 2)^2) table q @ W is recomputed per chunk
        return [BucketTerm(pair, x=q, weight=w)]

    def logits_bias(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> torch.Tensor | None:
        """(B, H, T, T) term s q_i . a^K_ij from unscaled queries q (B, H, T, d)."""
        return explicit_bias(self.bucket_terms(q, k, ctx))

    def output_term(self, attn: torch.Tensor, ctx: AttentionContext) -> torch.Tensor | None:
        """(B, H, T, d) value term sum_j attn_ij a^V_ij from (B, H, T, T) probabilities, or None."""
        if not self.on_values:
            return None
        check_tokens(attn, ctx, "ShawRPE")
        rows, cols = self.axis_ids(ctx, attn.device)
        out = scatter_pairs(attn, rows, self.size) @ self.value_rows.to(attn.dtype)
        return out + scatter_pairs(attn, cols, self.size) @ self.value_cols.to(attn.dtype)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, max_distance={self.max_distance}, "
                f"on_values={self.on_values}, shared_head={self.shared_head}")


def shaw_factory(
    head_dim: int, num_heads: int, max_distance: int = 4, on_values: bool = False,
    shared_head: bool = True,
) -> Callable[[int], RelativePosition]:
    """Per-block factory for ``VisionTransformer(rel_pos_factory=...)``: a fresh ``ShawRPE`` for
    every block."""

    def make(block: int) -> RelativePosition:
        return ShawRPE(head_dim, num_heads, max_distance, on_values, shared_head)

    return make
