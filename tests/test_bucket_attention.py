"""The blocked bucket-bias attention equals explicit attention, values and gradients."""

from __future__ import annotations

import pytest
import torch

from reidbench.layers.bucket_attention import BucketTerm, bucket_attention, chunk_size


def reference(q, k, v, terms, scale):  # type: ignore[no-untyped-def]
    b, h, t, _ = q.shape
    bias = torch.zeros(b, h, t, t, dtype=q.dtype)
    for term in terms:
        table = term.table()
        lut = table.expand(b, h, t, table.shape[-1])
        g = torch.gather(lut, 3, term.ids.expand(b, h, t, t))
        bias = bias + (g.transpose(2, 3) if term.transposed else g)
    return torch.softmax(q @ k.transpose(2, 3) * scale + bias, dim=-1) @ v


def assert_matches_reference(q, k, v, terms, params, chunk) -> None:  # type: ignore[no-untyped-def]
    """Output and the gradients of q, k, v and ``params`` (of out.sum()) equal the explicit ones."""
    out = bucket_attention(q, k, v, terms, 0.5, chunk)
    ref = reference(q, k, v, terms, 0.5)
    torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(out.sum(), [q, k, v, *params])
    want = torch.autograd.grad(ref.sum(), [q, k, v, *params])
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("lut_shape", ["full", "batch-shared", "head-and-batch-shared"])
@pytest.mark.parametrize("chunk", [1, 2, None])
def test_matches_explicit_attention_and_gradients(lut_shape: str, chunk: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    b, h, t, d, nb = 2, 3, 13, 4, 7
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lb, lh = {"full": (b, h), "batch-shared": (1, h), "head-and-batch-shared": (1, 1)}[lut_shape]
    terms = [
        BucketTerm(torch.randint(nb, (t, t), generator=g),
                   torch.randn(lb, lh, t, nb, generator=g, dtype=torch.float64, requires_grad=True)),
        BucketTerm(torch.randint(nb, (t, t), generator=g),
                   torch.randn(b, h, t, nb, generator=g, dtype=torch.float64, requires_grad=True),
                   transposed=True),
    ]
    out = bucket_attention(q, k, v, terms, 0.5, chunk)
    ref = reference(q, k, v, terms, 0.5)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    inputs = [q, k, v, *(term.lut for term in terms)]  # type: ignore[misc]
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for a, w in zip(got, want):
        assert a.shape == w.shape
        torch.testing.assert_close(a, w)


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lut = torch.randn(1, 2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(4, (5, 5), generator=g)
    torch.autograd.gradcheck(
        lambda q, k, v, lut: bucket_attention(q, k, v, [BucketTerm(ids, lut=lut)], 0.7, 2),
        (q, k, v, lut),
    )


def test_strided_views_as_attention_passes_them() -> None:
    """q, k, v as the permuted views of one qkv projection, as ``Attention`` hands them over."""
    g = torch.Generator().manual_seed(2)
    b, t, h, d, nb = 2, 9, 3, 4, 5
    qkv = torch.randn(b, t, 3 * h * d, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    term = BucketTerm(torch.randint(nb, (t, t), generator=g),
                      torch.randn(b, h, t, nb, generator=g, dtype=torch.float64))
    out = bucket_attention(q, k, v, [term], 0.5, 4)
    ref = reference(q, k, v, [term], 0.5)
    torch.testing.assert_close(out, ref)
    (got,) = torch.autograd.grad(out.sum(), qkv)
    (want,) = torch.autograd.grad(ref.sum(), qkv)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("x_shape,w_heads", [((2, 3), 3), ((2, 3), 1), ((2, 1), 3), ((1, 1), 3)])
def test_linear_terms_recomputed_per_block(x_shape: tuple[int, int], w_heads: int) -> None:
    """lut = x @ weight given as (x, weight): same values and gradients as the explicit table."""
    g = torch.Generator().manual_seed(3)
    b, h, t, d, c, nb = 2, 3, 11, 4, 5, 6
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    x = torch.randn(*x_shape, t, c, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(w_heads, c, nb, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(nb, (t, t), generator=g)
    lut = torch.randn(1, h, t, nb, generator=g, dtype=torch.float64, requires_grad=True)
    terms = [BucketTerm(ids, x=x, weight=w), BucketTerm(ids.T.contiguous(), lut=lut)]
    out = bucket_attention(q, k, v, terms, 0.5, 4)
    ref = reference(q, k, v, terms, 0.5)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, [q, k, v, x, w, lut], grad)
    want = torch.autograd.grad(ref, [q, k, v, x, w, lut], grad)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_term_needs_exactly_one_form() -> None:
    ids = torch.zeros(3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="either lut"):
        BucketTerm(ids)
    with pytest.raises(ValueError, match="transposed"):
        BucketTerm(ids, x=torch.zeros(1, 1, 3, 2), weight=torch.zeros(1, 2, 4), transposed=True)


def test_linear_term_on_the_queries_themselves() -> None:
    """x = q (iRPE contextual, Shaw): the gradient through the table reaches q."""
    g = torch.Generator().manual_seed(4)
    b, h, t, d, nb = 2, 3, 9, 4, 5
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    w = torch.randn(1, d, nb, generator=g, dtype=torch.float64, requires_grad=True)
    terms = [BucketTerm(torch.randint(nb, (t, t), generator=g), x=q, weight=w)]
    assert_matches_reference(q, k, v, terms, [w], 4)


@pytest.mark.parametrize("batch,tokens,rows,want", [
    (32, 197, 32, 5),   # budget 5 items: 7 chunks, the last of 2
    (32, 129, 32, 7),   # budget 7 items: 5 chunks of at most 7
    (30, 129, 32, 6),   # budget 7 items: 5 chunks, so 6 each (equal chunks)
    (1, 197, 32, 1),    # at least one item, even over the budget
    (4, 16, 32, 4),     # everything in one chunk
])
def test_chunk_size_keeps_the_buffer_budget(batch: int, tokens: int, rows: int, want: int) -> None:
    n = chunk_size(batch, tokens, rows)
    assert n == want
    assert n == 1 or n * tokens <= batch * rows  # (n, H, T, T) within (B, H, rows, T)


def test_only_transposed_terms() -> None:
    """No row-aligned table to fold the backward's log-sum-exp into: it is subtracted after."""
    g = torch.Generator().manual_seed(5)
    b, h, t, d, nb = 2, 2, 7, 3, 4
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lut = torch.randn(b, h, t, nb, generator=g, dtype=torch.float64, requires_grad=True)
    terms = [BucketTerm(torch.randint(nb, (t, t), generator=g), lut=lut, transposed=True)]
    assert_matches_reference(q, k, v, terms, [lut], 1)
