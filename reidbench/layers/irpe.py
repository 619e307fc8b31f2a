"""iRPE: image relative position encoding (Wu et al., "Rethinking and Improving Relative Position
Encoding for Vision Transformer", ICCV 2021), as a ``RelativePosition`` injected per block.

Every pair of tokens (i, j) falls in a bucket (``rel_index.bucket_ids``: the 2D offset of the two
patches mapped by a method and a piecewise or clip index function; prefix tokens such as CLS share
one extra bucket). A learned lookup table holds one entry per bucket:

- ``bias`` mode (queries/keys): a scalar per bucket, b_ij = t[bucket(i, j)], added to the logits;
- ``contextual`` mode on keys: a d-vector per bucket, term_ij = (s q_i) . r[bucket(i, j)];
- ``contextual`` mode on queries: term_ij = (s k_j) . r[bucket(j, i)] (the same form, transposed);
- ``contextual`` mode on values: out_i += sum_j attn_ij r[bucket(i, j)].

s is the attention scale head_dim**-0.5, as in the reference implementation where the term is
computed from the already-scaled queries. The ``cross`` method is the sum of a rows-only and a
cols-only encoding, each with its own table. Bias mode on values does not exist (the reference
raises too); ``IRPEConfig`` rejects it.

The contextual terms never build a (T, T, d) tensor: the keys (queries) term multiplies the
queries (keys) by the table once, (B, H, T, d) @ (d, buckets), then gathers (B, H, T, T) entries
by bucket id; the values term scatter-adds the probabilities into (B, H, T, buckets) and then
multiplies by the table. ``naive_contextual_key_term`` is the direct (T, T, d) version, kept as
the reference of tests and the "naive" baseline of benchmarks.

Tables are zero-initialised, as in the reference: an iRPE model starts out computing exactly what
its counterpart without relative encoding computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reidbench.layers.bucket_attention import BucketTerm, explicit_bias
from reidbench.layers.position import AttentionContext, RelativePosition, patch_pair_ids
from reidbench.layers.rel_index import MAPPINGS, bucket_ids, num_buckets
from reidbench.layers.rpe import check_tokens, scatter_pairs

IRPE_METHODS = ("euclidean", "quant", "cross", "product")
IRPE_MODES = ("bias", "contextual")


@dataclass(frozen=True)
class IRPEConfig:
    """How one iRPE module encodes relative positions (the fields of the paper's configurations)."""

    ratio: float = 1.9  # alpha:beta:gamma = 1:2:8 times ratio; sets the number of buckets
    method: str = "product"  # 2D offset -> bucket: "euclidean", "quant", "cross" (rows + cols), "product"
    mapping: str = "piecewise"  # 1D index function: "piecewise" (exact near, log far) or "clip"
    mode: str = "contextual"  # "bias" (a scalar per bucket) or "contextual" (a d-vector per bucket)
    on: str = "k"  # which of queries/keys/values carry an encoding: a non-empty subset of "qkv"
    shared_head: bool = True  # one table shared by all heads (True) or one table per head (False)
    skip: int = 1  # prefix (CLS) tokens before the patches; they get one extra bucket of their own

    def __post_init__(self) -> None:
        if self.method not in IRPE_METHODS:
            raise ValueError(f"unknown iRPE method {self.method!r}; expected one of {IRPE_METHODS}")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"unknown iRPE mapping {self.mapping!r}; expected one of {MAPPINGS}")
        if self.mode not in IRPE_MODES:
            raise ValueError(f"unknown iRPE mode {self.mode!r}; expected one of {IRPE_MODES}")
        if not self.on or set(self.on) - set("qkv") or len(set(self.on)) != len(self.on):
            raise ValueError(f"iRPE 'on' must be a non-empty subset of 'qkv', got {self.on!r}")
        if self.mode == "bias" and "v" in self.on:
            raise ValueError("iRPE bias mode exists on queries and keys only; use mode='contextual' "
                             "for an encoding on values")
        if self.ratio <= 0:
            raise ValueError(f"iRPE ratio must be positive, got {self.ratio}")
        if self.skip < 0:
            raise ValueError(f"iRPE skip must be >= 0, got {self.skip}")

    @property
    def table_methods(self) -> tuple[str, ...]:
        """The ``rel_index`` method of each table: cross is a rows table plus a cols table."""
        return ("cross_rows", "cross_cols") if self.method == "cross" else (self.method,)

    @property
    def num_buckets(self) -> int:
        """Buckets of one table, the prefix tokens' bucket included (49 + 1 for the defaults)."""
        return num_buckets(self.table_methods[0], self.ratio, self.skip)


def naive_contextual_key_term(q: torch.Tensor, table: torch.Tensor, bucket_ids: torch.Tensor) -> torch.Tensor:
    """Contextual term on keys computed directly: term[b, h, i, j] = q[b, h, i] . table[h, :, id[i, j]].

    Materialises the gathered (H|1, T, T, d) encodings; a reference for the efficient path.

    Args:
        q: (B, H, T, d) queries, already multiplied by the attention scale.
        table: (H or 1, d, buckets) lookup table.
        bucket_ids: (T, T) int64 bucket of each (query, key) pair.

    Returns:
        (B, H, T, T) term to add to the attention logits.
    """
    emb = table[:, :, bucket_ids].permute(0, 2, 3, 1)  # (H|1, T, T, d)
    emb = emb.expand(q.shape[1], -1, -1, -1)  # (H, T, T, d)
    return torch.einsum("bhid,hijd->bhij", q, emb)


class IRPE(RelativePosition):
    """Image relative position encoding of one attention block (see the module docstring).

    Args:
        cfg: which encoding (method, mapping, mode, where, sharing).
        head_dim: per-head width d; the attention scale is head_dim**-0.5, as in ``Attention``.
        num_heads: attention heads (the table count when ``cfg.shared_head`` is False).

    Parameters live in ``tables``, keyed ``"{q|k|v}_{method}"`` (cross: ``k_cross_rows`` and
    ``k_cross_cols``), with shapes (H|1, buckets) in bias mode, (H|1, d, buckets) for contextual
    queries/keys and (H|1, buckets, d) for contextual values.
    """

    def __init__(self, cfg: IRPEConfig, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.cfg, self.head_dim, self.num_heads = cfg, head_dim, num_heads
        self.scale = head_dim**-0.5
        self.num_buckets = cfg.num_buckets
        heads = 1 if cfg.shared_head else num_heads
        self.tables = nn.ParameterDict()
        for on in "qkv":
            if on not in cfg.on:
                continue
            for method in cfg.table_methods:
                if cfg.mode == "bias":
                    shape: tuple[int, ...] = (heads, self.num_buckets)
                elif on == "v":
                    shape = (heads, self.num_buckets, head_dim)
                else:
                    shape = (heads, head_dim, self.num_buckets)
                self.tables[f"{on}_{method}"] = nn.Parameter(torch.zeros(shape))  # zero init: see docstring

    @property
    def needs_probabilities(self) -> bool:
        return "v" in self.cfg.on

    def bucket_ids(self, method: str, ctx: AttentionContext, device: torch.device) -> torch.Tensor:
        """(T, T) int64 bucket ids of ``method`` on ``device`` for the grid of ``ctx`` (cached)."""
        if ctx.num_prefix_tokens != self.cfg.skip:
            raise ValueError(f"iRPE was built for skip={self.cfg.skip} prefix tokens but the model has "
                             f"{ctx.num_prefix_tokens}; set IRPEConfig.skip to match")
        return bucket_ids(ctx.grid, method, self.cfg.ratio, self.cfg.mapping, self.cfg.skip, device)

    def _terms(self, on: str, x: torch.Tensor, ctx: AttentionContext) -> list[BucketTerm]:
        """Bucket tables of the key ("k": x = q) or query ("q": x = k, transposed) encoding.

        Bias mode: the (H|1, buckets) table broadcast over batch and queries. Contextual mode:
        (x * scale) @ W, a (B, H|1, T, buckets) table (on keys given as x and W so that it is
        recomputed per chunk and never stored), never a (T, T, d) tensor.
        """
        terms = []
        for method in self.cfg.table_methods:
            table = self.tables[f"{on}_{method}"].to(x.dtype)
            ids = self.bucket_ids(method, ctx, x.device)  # (T, T)
            if self.cfg.mode == "bias":
                lut = table[None, :, None, :].expand(1, table.shape[0], ids.shape[0], table.shape[1])
                terms.append(BucketTerm(ids, lut=lut, transposed=on == "q"))
            elif on == "k":  # (x * scale) @ W as a linear term: recomputed per chunk, never stored
                terms.append(BucketTerm(ids, x=x, weight=table * self.scale))
            else:  # the transposed (query-side) term needs the keys' whole table
                terms.append(BucketTerm(ids, lut=x @ (table * self.scale), transposed=True))
        return terms

    def bucket_terms(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> list[BucketTerm] | None:
        """The query and/or key encodings as bucket tables (None when only values are encoded)."""
        check_tokens(q, ctx, "IRPE")
        terms = []
        if "k" in self.cfg.on:
            terms += self._terms("k", q, ctx)
        if "q" in self.cfg.on:
            terms += self._terms("q", k, ctx)
        return terms or None

    def logits_bias(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> torch.Tensor | None:
        """(B|1, H|1, T, T) term on the logits from the query and/or key encodings, or None."""
        terms = self.bucket_terms(q, k, ctx)
        return explicit_bias(terms) if terms else None

    def output_term(self, attn: torch.Tensor, ctx: AttentionContext) -> torch.Tensor | None:
        """(B, H, T, d) value encoding sum_j attn_ij r[bucket(i, j)] from (B, H, T, T) probabilities."""
        if "v" not in self.cfg.on:
            return None
        check_tokens(attn, ctx, "IRPE")
        out: torch.Tensor | None = None
        for method in self.cfg.table_methods:
            table = self.tables[f"v_{method}"]  # (H|1, buckets, d)
            ids = self.bucket_ids(method, ctx, attn.device)
            mass = scatter_pairs(attn, ids, self.num_buckets)  # (B, H, T, buckets)
            term = mass @ table.to(attn.dtype)  # (B, H, T, d)
            out = term if out is None else out + term
        return out

    @property
    def has_pair_bias(self) -> bool:
        """Bias mode only: contextual terms depend on the queries/keys (values: on the output)."""
        return self.cfg.mode == "bias"

    def pair_bias(self, ctx: AttentionContext, index: torch.Tensor) -> torch.Tensor | None:
        """(B, n, n) bias-mode term between the patches ``index`` (B, n), averaged over heads:
        t_k[bucket(a, b)] on keys plus t_q[bucket(b, a)] on queries (summed over the two tables
        of ``cross``); None in contextual mode, whose term depends on the queries/keys."""
        if not self.has_pair_bias:
            return None
        out: torch.Tensor | None = None
        for on in "kq":
            if on not in self.cfg.on:
                continue
            for method in self.cfg.table_methods:
                table = self.tables[f"{on}_{method}"].mean(0)  # (buckets,), mean over heads
                ids = patch_pair_ids(self.bucket_ids(method, ctx, index.device), ctx.num_prefix_tokens, index)
                term = table[ids.transpose(-2, -1) if on == "q" else ids]  # (B, n, n)
                out = term if out is None else out + term
        return out

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"method={c.method}, mapping={c.mapping}, mode={c.mode}, on={c.on!r}, ratio={c.ratio}, "
                f"shared_head={c.shared_head}, skip={c.skip}, buckets={self.num_buckets}")


def irpe_factory(cfg: IRPEConfig, head_dim: int, num_heads: int) -> Callable[[int], RelativePosition]:
    """Per-block factory for ``VisionTransformer(rel_pos_factory=...)``: a fresh ``IRPE`` for every block."""

    def make(block: int) -> RelativePosition:
        return IRPE(cfg, head_dim, num_heads)

    return make
