"""Attention whose logits get a bias gathered from per-query bucket tables, computed in query
blocks so that neither the (B, H, T, T) bias nor the probabilities are ever stored whole.

Every relative encoding here has this form. For query i and key j the bias is

    sum over terms t of  lut_t[b, h, i, ids_t[i, j]]      (or lut_t[b, h, j, ids_t[j, i]]
                                                            for a "transposed" term)

with ``lut_t`` a (B|1, H|1, T, nb) table and ``ids_t`` a (T, T) bucket index: iRPE bias mode
(the table broadcast over queries), iRPE contextual mode ((q * scale) @ W), KP-RPE (a table per
patch from its keypoint offsets) and Shaw RPE (one term per axis). Forward keeps q, k, v, the
output, the row log-sum-exp and the small tables; backward recomputes each block's
probabilities (as flash attention does) and scatters the bias gradient back into the tables'
buckets. Peak extra memory is a few (B, H, block, T) buffers instead of several (B, H, T, T).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class BucketTerm:
    """One bias term: ``lut`` (B|1, H|1, T, nb) gathered with ``ids`` (T, T) int64."""

    lut: torch.Tensor
    ids: torch.Tensor
    transposed: bool = False  # bias[i, j] = lut[j, ids[j, i]] instead of lut[i, ids[i, j]]


def _block_bias(
    luts: tuple[torch.Tensor, ...], ids: tuple[torch.Tensor, ...], transposed: tuple[bool, ...],
    s: int, e: int, shape: tuple[int, int, int, int],
) -> torch.Tensor:
    """The (B, H, e - s, T) bias of query rows s:e."""
    b, h, _, t = shape
    out = None
    for lut, idx, tr in zip(luts, ids, transposed):
        if tr:  # rows of the key side: lut[j, ids[j, i]] for all j, i in s:e -> (B, H, T, e-s)
            g = torch.gather(lut.expand(b, h, t, lut.shape[-1]), 3,
                             idx[:, s:e].expand(b, h, t, e - s)).transpose(2, 3)
        else:
            g = torch.gather(lut[:, :, s:e].expand(b, h, e - s, lut.shape[-1]), 3,
                             idx[s:e].expand(b, h, e - s, t))
        out = g if out is None else out + g
    assert out is not None
    return out


def explicit_bias(terms: list[BucketTerm]) -> torch.Tensor:
    """The whole (B|1, H|1, T, T) bias of ``terms`` (broadcast dims kept), for the paths that need
    explicit probabilities."""
    t = terms[0].ids.shape[0]
    batch = max(x.lut.shape[0] for x in terms)
    heads = max(x.lut.shape[1] for x in terms)
    return _block_bias(tuple(x.lut for x in terms), tuple(x.ids for x in terms),
                       tuple(x.transposed for x in terms), 0, t, (batch, heads, t, t))


def _block_logits(
    q: torch.Tensor, kt: torch.Tensor, luts: tuple[torch.Tensor, ...], ids: tuple[torch.Tensor, ...],
    transposed: tuple[bool, ...], s: int, e: int, scale: float,
) -> torch.Tensor:
    """(B, H, e - s, T) logits of query rows s:e: the gathered bias, then += scale * q k^T in
    place (one buffer per block)."""
    b, h, t, d = q.shape
    logits = _block_bias(luts, ids, transposed, s, e, (b, h, t, t)).contiguous()
    logits.view(b * h, e - s, t).baddbmm_(
        q[:, :, s:e].reshape(b * h, e - s, d), kt.reshape(b * h, d, t), alpha=scale
    )
    return logits


class _BucketAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, block: int,
        transposed: tuple[bool, ...], ids: tuple[torch.Tensor, ...], *luts: torch.Tensor,
    ) -> torch.Tensor:
        # contiguous copies are saved: measured, this peaks lower than keeping the strided views
        # (which pin the whole qkv projection) and re-copying them in backward
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, h, t, d = q.shape
        out = q.new_empty(b, h, t, d)
        lse = q.new_empty(b, h, t)
        kt = k.transpose(2, 3).contiguous()
        for s in range(0, t, block):
            e = min(t, s + block)
            p = _block_logits(q, kt, luts, ids, transposed, s, e, scale)  # (B, H, b, T)
            m = p.amax(dim=3, keepdim=True)
            p.sub_(m).exp_()
            denom = p.sum(dim=3, keepdim=True)
            out[:, :, s:e] = torch.matmul(p, v).div_(denom)
            lse[:, :, s:e] = (m + denom.log()).squeeze(3)
        ctx.save_for_backward(q, k, v, out, lse, *ids, *luts)
        ctx.scale, ctx.block, ctx.transposed, ctx.n = scale, block, transposed, len(ids)
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse, *rest = ctx.saved_tensors
        ids, luts = tuple(rest[:ctx.n]), tuple(rest[ctx.n:])
        scale, block, transposed = ctx.scale, ctx.block, ctx.transposed
        b, h, t, d = q.shape
        bh = b * h
        dout = dout.contiguous()
        delta = (dout * out).sum(dim=3, keepdim=True)  # (B, H, T, 1)
        dq = q.new_empty(b, h, t, d)  # contiguous, whatever the strides of the saved views
        dk, dv = q.new_zeros(b, h, t, d), q.new_zeros(b, h, t, d)
        dluts = [q.new_zeros(b, h, t, lut.shape[-1]) for lut in luts]
        kt = k.transpose(2, 3).contiguous()
        vt = v.transpose(2, 3).contiguous()
        for s in range(0, t, block):
            e = min(t, s + block)
            n = e - s
            p = _block_logits(q, kt, luts, ids, transposed, s, e, scale)
            p.sub_(lse[:, :, s:e, None]).exp_()  # (B, H, b, T) probabilities
            do = dout[:, :, s:e].reshape(bh, n, d)
            dv.view(bh, t, d).baddbmm_(p.view(bh, n, t).transpose(1, 2), do)
            ds = torch.bmm(do, vt.view(bh, d, t)).view(b, h, n, t)  # dP
            ds.sub_(delta[:, :, s:e]).mul_(p)  # dS = P * (dP - delta): gradient of the logits
            del p
            dq[:, :, s:e] = torch.bmm(ds.view(bh, n, t), k.view(bh, t, d)).view(b, h, n, d).mul_(scale)
            dk.view(bh, t, d).baddbmm_(ds.view(bh, n, t).transpose(1, 2),
                                       q[:, :, s:e].reshape(bh, n, d), alpha=scale)
            for dlut, idx, tr in zip(dluts, ids, transposed):
                if tr:
                    dlut.scatter_add_(3, idx[:, s:e].expand(b, h, t, n), ds.transpose(2, 3))
                else:
                    dlut[:, :, s:e].scatter_add_(3, idx[s:e].expand(b, h, n, t), ds)
        grads = []
        for dlut, lut in zip(dluts, luts):
            if not ctx.needs_input_grad[7 + len(grads)]:
                grads.append(None)
                continue
            dims = [i for i in (0, 1, 2) if lut.shape[i] == 1 and dlut.shape[i] != 1]
            grads.append(dlut.sum(dim=dims, keepdim=True) if dims else dlut)
        return (dq, dk, dv, None, None, None, None, *grads)


def bucket_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: list[BucketTerm],
    scale: float, block: int = 32,
) -> torch.Tensor:
    """softmax(q k^T * scale + sum of the terms' gathered biases) @ v, in query blocks.

    q, k, v: (B, H, T, d); every ``term.lut`` is (B|1, H|1, T, nb), broadcast over batch and
    heads; ``term.ids`` is (T, T). Returns (B, H, T, d). Gradients flow to q, k, v and the luts.
    """
    return _BucketAttention.apply(
        q, k, v, scale, block, tuple(term.transposed for term in terms),
        tuple(term.ids for term in terms), *(term.lut for term in terms),
    )
