"""The blocked bucket-bias attention equals explicit attention, values and gradients."""

from __future__ import annotations

import pytest
import torch

from reidbench.layers.bucket_attention import BucketTerm, bucket_attention


def reference(q, k, v, terms, scale):  # type: ignore[no-untyped-def]
    b, h, t, _ = q.shape
    bias = torch.zeros(b, h, t, t, dtype=q.dtype)
    for term in terms:
        lut = term.lut.expand(b, h, t, term.lut.shape[-1])
        g = torch.gather(lut, 3, term.ids.expand(b, h, t, t))
        bias = bias + (g.transpose(2, 3) if term.transposed else g)
    return torch.softmax(q @ k.transpose(2, 3) * scale + bias, dim=-1) @ v


@pytest.mark.parametrize("lut_shape", ["full", "batch-shared", "head-and-batch-shared"])
@pytest.mark.parametrize("block", [1, 5, 64])
def test_matches_explicit_attention_and_gradients(lut_shape: str, block: int) -> None:
    g = torch.Generator().manual_seed(0)
    b, h, t, d, nb = 2, 3, 13, 4, 7
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lb, lh = {"full": (b, h), "batch-shared": (1, h), "head-and-batch-shared": (1, 1)}[lut_shape]
    terms = [
        BucketTerm(torch.randn(lb, lh, t, nb, generator=g, dtype=torch.float64, requires_grad=True),
                   torch.randint(nb, (t, t), generator=g)),
        BucketTerm(torch.randn(b, h, t, nb, generator=g, dtype=torch.float64, requires_grad=True),
                   torch.randint(nb, (t, t), generator=g), transposed=True),
    ]
    out = bucket_attention(q, k, v, terms, 0.5, block)
    ref = reference(q, k, v, terms, 0.5)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    inputs = [q, k, v, *(term.lut for term in terms)]
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
        lambda q, k, v, lut: bucket_attention(q, k, v, [BucketTerm(lut, ids)], 0.7, 2),
        (q, k, v, lut),
    )


def test_strided_views_as_attention_passes_them() -> None:
    """q, k, v as the permuted views of one qkv projection, as ``Attention`` hands them over."""
    g = torch.Generator().manual_seed(2)
    b, t, h, d, nb = 2, 9, 3, 4, 5
    qkv = torch.randn(b, t, 3 * h * d, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    term = BucketTerm(torch.randn(b, h, t, nb, generator=g, dtype=torch.float64),
                      torch.randint(nb, (t, t), generator=g))
    out = bucket_attention(q, k, v, [term], 0.5, 4)
    ref = reference(q, k, v, [term], 0.5)
    torch.testing.assert_close(out, ref)
    (got,) = torch.autograd.grad(out.sum(), qkv)
    (want,) = torch.autograd.grad(ref.sum(), qkv)
    torch.testing.assert_close(got, want)
