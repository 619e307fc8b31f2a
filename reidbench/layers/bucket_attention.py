"""Attention whose logits get a bias gathered from per-query bucket tables, computed in query
blocks so that neither the (B, H, T, T) bias nor the probabilities are ever stored whole.

Every relative encoding here has this form. For query i and key j the bias is

    sum over terms t of  lut_t[b, h, i, ids_t[i, j]]      (or lut_t[b, h, j, ids_t[j, i]]
                                                            for a "transposed" term)

with ``lut_t`` a (B|1, H|1, T, nb) table and ``ids_t`` a (T, T) bucket index: iRPE bias mode
(the table broadcast over queries), iRPE contextual mode ((q * scale) @ W), KP-RPE (a table per
patch from its keypoint offsets) and Shaw RPE (one term per axis). A term whose table is linear
in small per-token features, ``lut = x @ weight``, can be given as (x, weight): its table is then
recomputed block by block and never stored, and its gradient goes straight to x and weight.

Forward keeps q, k, v, the output, the row log-sum-exp and the terms' inputs; backward
recomputes each block's probabilities (as flash attention does) and scatters the bias gradient
back into the buckets. Extra memory is a few (B, H, block, T) buffers per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BucketTerm:
    """One bias term, gathered with ``ids`` (T, T) int64 from a (B|1, H|1, T, nb) table given
    either as ``lut`` or as ``x @ weight`` with x (B|1, H|1, T, c) and weight (H|1, c, nb)."""

    ids: torch.Tensor
    lut: torch.Tensor | None = None
    transposed: bool = False  # bias[i, j] = lut[j, ids[j, i]] instead of lut[i, ids[i, j]]
    x: torch.Tensor | None = None
    weight: torch.Tensor | None = None

    def __post_init__(self) -> None:
        linear = self.x is not None and self.weight is not None
        if linear == (self.lut is not None):
            raise ValueError("a BucketTerm takes either lut or (x, weight)")
        if linear and self.transposed:
            raise ValueError("transposed terms need their whole table: give lut")

    def table(self) -> torch.Tensor:
        """The whole (B|1, H|1, T, nb) table."""
        if self.lut is not None:
            return self.lut
        assert self.x is not None and self.weight is not None
        return torch.matmul(self.x, self.weight)


def _reduce_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``t`` over the leading dims where ``shape`` broadcasts (size 1)."""
    dims = [i for i in range(t.dim()) if shape[i] == 1 and t.shape[i] != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


class _Terms:
    """The terms' tensors, flattened for autograd, with per-block gathers and their adjoints.

    Kinds: "lut", "transposed" (one tensor: the table), "linear" (x, weight) and "linear_q"
    (weight only: x is the attention's own q, so it is neither saved twice nor differentiated
    separately; its gradient goes into dq).
    """

    def __init__(self, kinds: tuple[str, ...], ids: tuple[torch.Tensor, ...],
                 tensors: tuple[torch.Tensor, ...], q: torch.Tensor | None = None) -> None:
        self.kinds, self.ids, self.tensors, self.q = kinds, ids, tensors, q
        self.slots: list[tuple[int, ...]] = []
        i = 0
        for kind in kinds:
            width = 2 if kind == "linear" else 1
            self.slots.append(tuple(range(i, i + width)))
            i += width

    def block_bias(self, s: int, e: int, shape: tuple[int, int, int, int]) -> torch.Tensor:
        """The (B, H, e - s, T) bias of query rows s:e."""
        b, h, _, t = shape
        out = None
        for kind, idx, slot in zip(self.kinds, self.ids, self.slots):
            if kind in ("linear", "linear_q"):
                x, w = self._linear(slot)
                lut = torch.matmul(x[:, :, s:e], w)  # (B|1, H|1, e-s, nb)
                g = torch.gather(lut.expand(b, h, e - s, lut.shape[-1]), 3,
                                 idx[s:e].expand(b, h, e - s, t))
            else:
                lut = self.tensors[slot[0]]
                if kind == "transposed":  # lut[j, ids[j, i]] for all j and i in s:e
                    g = torch.gather(lut.expand(b, h, t, lut.shape[-1]), 3,
                                     idx[:, s:e].expand(b, h, t, e - s)).transpose(2, 3)
                else:
                    g = torch.gather(lut[:, :, s:e].expand(b, h, e - s, lut.shape[-1]), 3,
                                     idx[s:e].expand(b, h, e - s, t))
            out = g if out is None else out + g
        assert out is not None
        return out

    def _linear(self, slot: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(slot) == 2:
            return self.tensors[slot[0]], self.tensors[slot[1]]
        assert self.q is not None
        return self.q, self.tensors[slot[0]]

    def new_grads(self) -> list[torch.Tensor]:
        return [torch.zeros_like(x) for x in self.tensors]

    def backward_block(
        self, ds: torch.Tensor, s: int, e: int, grads: list[torch.Tensor], dq: torch.Tensor
    ) -> None:
        """Accumulate the block's contribution to each tensor's gradient (and, for "linear_q"
        terms, to dq's rows s:e); ds is (B, H, e-s, T)."""
        b, h, n, t = ds.shape
        for kind, idx, slot in zip(self.kinds, self.ids, self.slots):
            if kind == "transposed":
                lut = self.tensors[slot[0]]
                d = ds.new_zeros(b, h, t, lut.shape[-1])
                d.scatter_add_(3, idx[:, s:e].expand(b, h, t, n), ds.transpose(2, 3))
                grads[slot[0]] += _reduce_to(d, lut.shape)
                continue
            nb = self.tensors[slot[-1]].shape[-1]
            d = ds.new_zeros(b, h, n, nb).scatter_add_(3, idx[s:e].expand(b, h, n, t), ds)
            if kind in ("linear", "linear_q"):
                x, w = self._linear(slot)
                d = _reduce_to(d, torch.Size((x.shape[0], max(x.shape[1], w.shape[0]), n, nb)))
                dx = _reduce_to(torch.matmul(d, w.transpose(-2, -1)), x[:, :, s:e].shape)
                if kind == "linear":
                    grads[slot[0]][:, :, s:e] += dx
                else:
                    dq[:, :, s:e] += dx
                grads[slot[-1]] += _reduce_to(
                    torch.matmul(x[:, :, s:e].transpose(-2, -1), d).sum(0), w.shape)
            else:
                lut = self.tensors[slot[0]]
                grads[slot[0]][:, :, s:e] += _reduce_to(d, lut[:, :, s:e].shape)


class _BucketAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, qkv: torch.Tensor, scale: float, block: int,
        kinds: tuple[str, ...], ids: tuple[torch.Tensor, ...], *tensors: torch.Tensor,
    ) -> torch.Tensor:
        q, k, v = qkv.unbind(0)  # contiguous (B, H, T, d) each
        terms = _Terms(kinds, ids, tensors, q)
        b, h, t, d = q.shape
        # the output is stored (B, T, H, d) so that merging the heads afterwards is a view
        out = q.new_empty(b, t, h, d).transpose(1, 2)
        lse = q.new_empty(b, h, t)
        kt = k.reshape(b * h, t, d).transpose(1, 2)  # a view: the GEMM reads it transposed
        for s in range(0, t, block):
            e = min(t, s + block)
            p = _block_logits(q, kt, terms, s, e, scale)  # (B, H, b, T)
            m = p.amax(dim=3, keepdim=True)
            p.sub_(m).exp_()
            denom = p.sum(dim=3, keepdim=True)
            out[:, :, s:e] = torch.matmul(p, v).div_(denom)
            lse[:, :, s:e] = (m + denom.log()).squeeze(3)
        ctx.save_for_backward(qkv, out, lse, *ids, *tensors)
        ctx.scale, ctx.block, ctx.kinds = scale, block, kinds
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qkv, out, lse, *rest = ctx.saved_tensors
        q, k, v = qkv.unbind(0)
        n_ids = len(ctx.kinds)
        terms = _Terms(ctx.kinds, tuple(rest[:n_ids]), tuple(rest[n_ids:]), q)
        scale, block = ctx.scale, ctx.block
        b, h, t, d = q.shape
        bh = b * h
        dqkv = qkv.new_empty(qkv.shape)  # the first block overwrites dk and dv (beta=0)
        dq, dk, dv = dqkv.unbind(0)
        grads = terms.new_grads()
        kt = k.reshape(bh, t, d).transpose(1, 2)
        vt = v.reshape(bh, t, d).transpose(1, 2)
        for s in range(0, t, block):
            e = min(t, s + block)
            n = e - s
            p = _block_logits(q, kt, terms, s, e, scale)
            p.sub_(lse[:, :, s:e, None]).exp_()  # (B, H, b, T) probabilities
            do = dout[:, :, s:e].contiguous()  # dout may be strided: copy one block only
            delta = (do * out[:, :, s:e]).sum(dim=3, keepdim=True)  # (B, H, b, 1)
            do = do.view(bh, n, d)
            beta = 0.0 if s == 0 else 1.0
            dv.view(bh, t, d).baddbmm_(p.view(bh, n, t).transpose(1, 2), do, beta=beta)
            ds = torch.bmm(do, vt).view(b, h, n, t)  # dP
            ds.sub_(delta).mul_(p)  # dS = P * (dP - delta): gradient of the logits
            del p
            # rows s:e of dq as one (B*H, n, d) strided view, written by the GEMM itself
            dq[:, :, s:e].view(bh, n, d).baddbmm_(ds.view(bh, n, t), k.reshape(bh, t, d),
                                                   beta=0.0, alpha=scale)
            dk.view(bh, t, d).baddbmm_(ds.view(bh, n, t).transpose(1, 2),
                                       q[:, :, s:e].reshape(bh, n, d), beta=beta, alpha=scale)
            terms.backward_block(ds, s, e, grads, dq)
        out_grads = [g if ctx.needs_input_grad[5 + i] else None for i, g in enumerate(grads)]
        return (dqkv, None, None, None, None, *out_grads)


def _block_logits(
    q: torch.Tensor, kt: torch.Tensor, terms: _Terms, s: int, e: int, scale: float
) -> torch.Tensor:
    """(B, H, e - s, T) logits of query rows s:e: the gathered bias, then += scale * q k^T in
    place (one buffer per block)."""
    b, h, t, d = q.shape
    logits = terms.block_bias(s, e, (b, h, t, t)).contiguous()
    logits.view(b * h, e - s, t).baddbmm_(
        q[:, :, s:e].reshape(b * h, e - s, d), kt.reshape(b * h, d, t), alpha=scale
    )
    return logits


def explicit_bias(terms: list[BucketTerm]) -> torch.Tensor:
    """The whole (B|1, H|1, T, T) bias of ``terms`` (broadcast dims kept), for the paths that need
    explicit probabilities."""
    tables = [term.table() for term in terms]
    t = terms[0].ids.shape[0]
    b, h = max(x.shape[0] for x in tables), max(x.shape[1] for x in tables)
    flat = _Terms(tuple("transposed" if x.transposed else "lut" for x in terms),
                  tuple(x.ids for x in terms), tuple(tables))
    return flat.block_bias(0, t, (b, h, t, t))


def bucket_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: list[BucketTerm],
    scale: float, block: int = 32,
) -> torch.Tensor:
    """softmax(q k^T * scale + sum of the terms' gathered biases) @ v, in query blocks.

    q, k, v: (B, H, T, d); the terms' tables broadcast over batch and heads. Returns
    (B, H, T, d). Gradients flow to q, k, v and the terms' tensors (lut, or x and weight).
    A term whose ``x`` is ``q`` itself reuses the attention's queries.
    """
    return packed_bucket_attention(torch.stack((q, k, v)), terms, scale, block, q=q)


def packed_bucket_attention(
    qkv: torch.Tensor, terms: list[BucketTerm], scale: float, block: int = 32,
    q: torch.Tensor | None = None,
) -> torch.Tensor:
    """``bucket_attention`` on q, k, v packed in one contiguous (3, B, H, T, d) tensor, which is
    saved for backward as is and receives one packed gradient (no stacking copy).

    ``q``: the view object the terms use for the queries (``BucketTerm(x=q)``), if any. The
    (B, H, T, d) result is laid out (B, T, H, d) in memory, so ``out.transpose(1, 2)`` merges the
    heads without a copy.
    """
    if not qkv.is_contiguous() or qkv.dim() != 5 or qkv.shape[0] != 3:
        raise ValueError(f"qkv must be a contiguous (3, B, H, T, d) tensor, got {tuple(qkv.shape)}")
    kinds, tensors = [], []
    for term in terms:
        if term.lut is not None:
            kinds.append("transposed" if term.transposed else "lut")
            tensors.append(term.lut)
        elif q is not None and term.x is q:  # the attention's own queries: gradient into dq
            assert term.weight is not None
            kinds.append("linear_q")
            tensors.append(term.weight)
        else:
            assert term.x is not None and term.weight is not None
            kinds.append("linear")
            tensors += [term.x, term.weight]
    return _BucketAttention.apply(qkv, scale, block, tuple(kinds),
                                  tuple(term.ids for term in terms), *tensors)
