"""Attention whose logits get a bias gathered from per-query bucket tables, computed a chunk of
the batch at a time so that neither the (B, H, T, T) bias nor the probabilities are ever stored
whole.

Every relative encoding here has this form. For query i and key j the bias is

    sum over terms t of  lut_t[b, h, i, ids_t[i, j]]      (or lut_t[b, h, j, ids_t[j, i]]
                                                            for a "transposed" term)

with ``lut_t`` a (B|1, H|1, T, nb) table and ``ids_t`` a (T, T) bucket index: iRPE bias mode
(the table broadcast over queries), iRPE contextual mode ((q * scale) @ W), KP-RPE (a table per
patch from its keypoint offsets) and Shaw RPE (one table over (row, column) offset pairs). A
term whose table is linear in small per-token features, ``lut = x @ weight``, can be given as
(x, weight): its table is then recomputed chunk by chunk and never stored, and its gradient goes
straight to x and weight.

Forward keeps q, k, v, the output, the row log-sum-exp and the terms' inputs; backward
recomputes each chunk's probabilities (as flash attention does) and scatters the bias gradient
back into the buckets. Chunks split the batch, not the queries: every GEMM is then a whole
(T, d) x (d, T) product per head, several times faster on a CPU than the same work in thin
query blocks, and each chunk writes its own rows of dq, dk and dv exactly once. Extra memory
is a few (n, H, T, T) buffers per chunk of n batch items (see ``chunk_size``).

Reduced precision: bf16 or fp16 inputs (as ``torch.autocast`` hands them over, or a model cast to
that dtype) are accepted, tables of any floating dtype may be mixed with them. Each chunk is
computed in fp32 (logits, softmax, log-sum-exp, every product; autocast is switched off inside
the kernel), so the logits may exceed fp16's range and the softmax is not summed in 8 bits; the
output and the gradients are returned in their inputs' dtypes, rounded once. fp32 and fp64 inputs
run exactly the operations they always did (every cast below is then a no-op).
"""

from __future__ import annotations

import contextlib
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


def _rows(t: torch.Tensor, b0: int, b1: int) -> torch.Tensor:
    """Batch items b0:b1 of ``t``, or ``t`` itself where it broadcasts over the batch."""
    return t if t.shape[0] == 1 else t[b0:b1]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel computes in for inputs of ``dtype``: fp32 for the 16-bit floats, the
    input dtype otherwise."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast off inside the kernel, which chooses its own precision (a no-op when it is off)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class _Terms:
    """The terms' tensors, flattened for autograd, with per-chunk gathers and their adjoints.

    Kinds: "lut", "transposed" (one tensor: the table), "linear" (x, weight) and "linear_q"
    (weight only: x is the attention's own q, so it is neither saved twice nor differentiated
    separately; its gradient goes into dq).

    ``dtype``: every chunk's tensors are cast to it before use (the compute dtype), and the
    gradients are accumulated in it; None keeps the tensors' own dtypes.
    """

    def __init__(self, kinds: tuple[str, ...], ids: tuple[torch.Tensor, ...],
                 tensors: tuple[torch.Tensor, ...], q: torch.Tensor | None = None,
                 dtype: torch.dtype | None = None) -> None:
        self.kinds, self.ids, self.tensors, self.q, self.dtype = kinds, ids, tensors, q, dtype
        self.slots: list[tuple[int, ...]] = []
        i = 0
        for kind in kinds:
            width = 2 if kind == "linear" else 1
            self.slots.append(tuple(range(i, i + width)))
            i += width

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.dtype is None else t.to(self.dtype)

    def chunk_bias(
        self, b0: int, b1: int, heads: int, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (b1 - b0, H, T, T) bias of batch items b0:b1, minus ``shift`` (n, H, T) along
        each query row if given: subtracted from a small (n, H, T, nb) table before the gather,
        so it costs no pass over the (T, T) bias."""
        out = None
        for kind, idx, slot in zip(self.kinds, self.ids, self.slots):
            t = idx.shape[0]
            if kind in ("linear", "linear_q"):
                x, w = self._linear(slot)
                lut = torch.matmul(self._cast(_rows(x, b0, b1)), self._cast(w))  # (n|1, H|1, T, nb)
            else:
                lut = self._cast(_rows(self.tensors[slot[0]], b0, b1))
            if shift is not None and kind != "transposed":  # row i of the table is query i
                lut, shift = lut - shift.unsqueeze(3), None
            shape = (b1 - b0, heads, t, t)
            g = torch.gather(lut.expand(*shape[:3], lut.shape[-1]), 3, idx.expand(shape))
            if kind == "transposed":  # bias[i, j] = lut[j, ids[j, i]]
                g = g.transpose(2, 3)
            out = g if out is None else out + g
        assert out is not None
        return out if shift is None else out - shift.unsqueeze(3)

    def _linear(self, slot: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(slot) == 2:
            return self.tensors[slot[0]], self.tensors[slot[1]]
        assert self.q is not None
        return self.q, self.tensors[slot[0]]

    def new_grads(self) -> list[torch.Tensor]:
        return [torch.zeros_like(x, dtype=self.dtype) for x in self.tensors]

    def backward_chunk(
        self, ds: torch.Tensor, b0: int, b1: int, grads: list[torch.Tensor], dq: torch.Tensor
    ) -> None:
        """Accumulate the chunk's contribution to each tensor's gradient (and, for "linear_q"
        terms, to ``dq``: the (n, H, T, d) gradient of the chunk's queries); ds is the
        (n, H, T, T) gradient of the logits of batch items b0:b1."""
        n, h, t, _ = ds.shape
        for kind, idx, slot in zip(self.kinds, self.ids, self.slots):
            nb = self.tensors[slot[-1]].shape[-1]
            src = ds.transpose(2, 3) if kind == "transposed" else ds
            d = ds.new_zeros(n, h, t, nb).scatter_add_(3, idx.expand(n, h, t, t), src)
            if kind in ("linear", "linear_q"):
                x, w = self._linear(slot)
                xc, w = self._cast(_rows(x, b0, b1)), self._cast(w)
                d = _reduce_to(d, torch.Size((xc.shape[0], max(x.shape[1], w.shape[0]), t, nb)))
                dx = _reduce_to(torch.matmul(d, w.transpose(-2, -1)), xc.shape)
                if kind == "linear_q":
                    dq += dx
                else:
                    _rows(grads[slot[0]], b0, b1).add_(dx)
                grads[slot[-1]] += _reduce_to(
                    torch.matmul(xc.transpose(-2, -1), d).sum(0), w.shape)
            else:
                lut = self.tensors[slot[0]]
                _rows(grads[slot[0]], b0, b1).add_(_reduce_to(d, _rows(lut, b0, b1).shape))


class _BucketAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, qkv: torch.Tensor, scale: float, chunk: int,
        kinds: tuple[str, ...], ids: tuple[torch.Tensor, ...], *tensors: torch.Tensor,
    ) -> torch.Tensor:
        q, k, v = qkv.unbind(0)  # contiguous (B, H, T, d) each
        acc = compute_dtype(qkv.dtype)
        terms = _Terms(kinds, ids, tensors, q, acc)
        b, h, t, d = q.shape
        # the output is stored (B, T, H, d) so that merging the heads afterwards is a view
        out = q.new_empty(b, t, h, d).transpose(1, 2)
        lse = q.new_empty(b, h, t, dtype=acc)
        with autocast_off(qkv.device.type):
            for b0 in range(0, b, chunk):
                b1 = min(b, b0 + chunk)
                p = _chunk_logits(q, k, terms, b0, b1, scale)  # (n, H, T, T) in acc
                m = p.amax(dim=3, keepdim=True)
                p.sub_(m).exp_()
                denom = p.sum(dim=3, keepdim=True)
                out[b0:b1] = torch.matmul(p, v[b0:b1].to(acc)).div_(denom)  # rounded to q's dtype
                lse[b0:b1] = (m + denom.log()).squeeze(3)
        ctx.save_for_backward(qkv, out, lse, *ids, *tensors)
        ctx.scale, ctx.chunk, ctx.kinds = scale, chunk, kinds
        return out

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        qkv, out, lse, *rest = ctx.saved_tensors
        q, k, v = qkv.unbind(0)
        n_ids = len(ctx.kinds)
        acc = lse.dtype  # the compute dtype of the forward pass
        tensors = tuple(rest[n_ids:])
        terms = _Terms(ctx.kinds, tuple(rest[:n_ids]), tensors, q, acc)
        scale, chunk = ctx.scale, ctx.chunk
        b, h, t, d = q.shape
        dqkv = qkv.new_empty(qkv.shape, dtype=acc)
        dq, dk, dv = dqkv.unbind(0)  # contiguous: a chunk's rows are one (n * H, T, d) block
        grads = terms.new_grads()
        with autocast_off(qkv.device.type):
            for b0 in range(0, b, chunk):
                b1 = min(b, b0 + chunk)
                bh = (b1 - b0) * h
                p = _chunk_logits(q, k, terms, b0, b1, scale, shift=lse[b0:b1])
                p.exp_()  # (n, H, T, T) probabilities: the logits minus their log-sum-exp
                do = dout[b0:b1].contiguous()  # dout may be strided: copy one chunk only
                if do.dtype != acc:
                    do = do.to(acc)
                delta = (do * out[b0:b1].to(acc)).sum(dim=3, keepdim=True)  # (n, H, T, 1)
                pf, do = p.view(bh, t, t), do.view(bh, t, d)
                # every chunk owns its rows of dq, dk and dv: each is written once (beta=0)
                dv[b0:b1].view(bh, t, d).baddbmm_(pf.transpose(1, 2), do, beta=0.0)
                ds = torch.bmm(do, v[b0:b1].to(acc).reshape(bh, t, d).transpose(1, 2))  # dP
                ds.sub_(delta.view(bh, t, 1)).mul_(pf)  # dS = P * (dP - delta): logits' gradient
                del p, pf
                dq[b0:b1].view(bh, t, d).baddbmm_(ds, k[b0:b1].to(acc).reshape(bh, t, d),
                                                  beta=0.0, alpha=scale)
                dk[b0:b1].view(bh, t, d).baddbmm_(ds.transpose(1, 2),
                                                  q[b0:b1].to(acc).reshape(bh, t, d),
                                                  beta=0.0, alpha=scale)
                terms.backward_chunk(ds.view(b1 - b0, h, t, t), b0, b1, grads, dq[b0:b1])
        out_grads = [g.to(x.dtype) if ctx.needs_input_grad[5 + i] else None
                     for i, (g, x) in enumerate(zip(grads, tensors))]
        return (dqkv.to(qkv.dtype), None, None, None, None, *out_grads)


def _chunk_logits(
    q: torch.Tensor, k: torch.Tensor, terms: _Terms, b0: int, b1: int, scale: float,
    shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, H, T, T) logits of batch items b0:b1 (minus ``shift`` along each row): the gathered
    bias, then += scale * q k^T in place (one buffer per chunk)."""
    _, h, t, d = q.shape
    bh = (b1 - b0) * h
    logits = terms.chunk_bias(b0, b1, h, shift).contiguous()
    qc, kc = q[b0:b1], k[b0:b1]
    if terms.dtype is not None:
        qc, kc = qc.to(terms.dtype), kc.to(terms.dtype)
    logits.view(bh, t, t).baddbmm_(
        qc.reshape(bh, t, d), kc.reshape(bh, t, d).transpose(1, 2), alpha=scale
    )
    return logits


def explicit_bias(terms: list[BucketTerm]) -> torch.Tensor:
    """The whole (B|1, H|1, T, T) bias of ``terms`` (broadcast dims kept), for the paths that need
    explicit probabilities."""
    tables = [term.table() for term in terms]
    b, h = max(x.shape[0] for x in tables), max(x.shape[1] for x in tables)
    flat = _Terms(tuple("transposed" if x.transposed else "lut" for x in terms),
                  tuple(x.ids for x in terms), tuple(tables))
    return flat.chunk_bias(0, b, h)


# default chunk budget in query rows: as fast as 32 on CPU, less memory (benchmarks/attention.py)
CHUNK_ROWS = 16


def chunk_size(batch: int, tokens: int, rows: int = CHUNK_ROWS) -> int:
    """Batch items per chunk: as many as keep a chunk's (n, H, T, T) buffers within the size of
    (B, H, rows, T), at least one, split into equal chunks."""
    n = max(1, batch * rows // tokens)
    chunks = -(-batch // n)
    return -(-batch // chunks)


def bucket_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: list[BucketTerm],
    scale: float, chunk: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + sum of the terms' gathered biases) @ v, ``chunk`` batch items at
    a time (default: ``chunk_size``).

    q, k, v: (B, H, T, d); the terms' tables broadcast over batch and heads. Returns
    (B, H, T, d). Gradients flow to q, k, v and the terms' tensors (lut, or x and weight).
    A term whose ``x`` is ``q`` itself reuses the attention's queries.
    """
    return packed_bucket_attention(torch.stack((q, k, v)), terms, scale, chunk, q=q)


def packed_bucket_attention(
    qkv: torch.Tensor, terms: list[BucketTerm], scale: float, chunk: int | None = None,
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
    if chunk is None:
        chunk = chunk_size(qkv.shape[1], qkv.shape[3])
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
    return _BucketAttention.apply(qkv, scale, chunk, tuple(kinds),
                                  tuple(term.ids for term in terms), *tensors)
