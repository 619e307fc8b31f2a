"""Bucket attention: what the mutation run found undefended (scripts/mutation_test.py).

The explicit reference here is softmax(scale q k^T + bias) v with the bias gathered entry by
entry from the tables, differentiated by autograd. Gaps closed: a linear term (lut = x @ w)
whose x differs per batch item, over several chunks (each chunk must read its own rows of x);
the ``chunk`` argument is honoured (items b0:b1 per chunk) and its default is
``chunk_size(B, T)``; ``chunk_size`` at budgets below two items; a linear term after a table
term; logits of very different size per query row (the softmax's max is taken per row); the
argument checks of ``packed_bucket_attention`` and ``BucketTerm``.
"""

from __future__ import annotations

import pytest
import torch

from reidbench.layers import bucket_attention as ba
from reidbench.layers.bucket_attention import (
    BucketTerm,
    bucket_attention,
    chunk_size,
    packed_bucket_attention,
)


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ids: torch.Tensor,
             lut: torch.Tensor, scale: float) -> torch.Tensor:
    """bias[b, h, i, j] = lut[b|0, h|0, i, ids[i, j]], written as loops over the pairs."""
    b, h, t, _ = q.shape
    rows = []
    for bb in range(b):
        heads = []
        for hh in range(h):
            table = lut[bb if lut.shape[0] > 1 else 0, hh if lut.shape[1] > 1 else 0]  # (T, nb)
            heads.append(torch.stack([table[i, ids[i]] for i in range(t)]))  # (T, T)
        rows.append(torch.stack(heads))
    bias = torch.stack(rows)
    return torch.softmax(scale * q @ k.transpose(2, 3) + bias, dim=-1) @ v


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("heads_of_x", [1, 3])
def test_per_item_linear_term_over_several_chunks(chunk: int, heads_of_x: int) -> None:
    g = torch.Generator().manual_seed(11)
    b, h, t, d, c, nb = 3, 3, 7, 4, 5, 6
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    x = torch.randn(b, heads_of_x, t, c, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(h, c, nb, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(nb, (t, t), generator=g)
    out = bucket_attention(q, k, v, [BucketTerm(ids, x=x, weight=w)], 0.5, chunk)
    ref = explicit(q, k, v, ids, x @ w, 0.5)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, [q, k, v, x, w], grad)
    want = torch.autograd.grad(ref, [q, k, v, x, w], grad)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def spy_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the (b0, b1) batch items of every chunk's logits."""
    seen: list[tuple[int, int]] = []
    inner = ba._chunk_logits

    def spy(q, k, terms, b0, b1, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((b0, b1))
        return inner(q, k, terms, b0, b1, *args, **kwargs)

    monkeypatch.setattr(ba, "_chunk_logits", spy)
    return seen


def test_the_chunk_argument_sets_the_batch_items_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_chunks(monkeypatch)
    g = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(5, 2, 9, 4, generator=g, dtype=torch.float64) for _ in range(3))
    lut = torch.randn(1, 2, 9, 3, generator=g, dtype=torch.float64)
    ids = torch.randint(3, (9, 9), generator=g)
    out = bucket_attention(q, k, v, [BucketTerm(ids, lut)], 0.5, 2)
    assert seen == [(0, 2), (2, 4), (4, 5)]
    torch.testing.assert_close(out, explicit(q, k, v, ids, lut, 0.5))


def test_the_default_chunk_is_chunk_size_of_batch_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """B = 5, H = 2, T = 40, d = 4: the chunks follow chunk_size(5, 40), not the heads or d."""
    seen = spy_chunks(monkeypatch)
    g = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(5, 2, 40, 4, generator=g, dtype=torch.float64) for _ in range(3))
    lut = torch.randn(1, 2, 40, 3, generator=g, dtype=torch.float64)
    ids = torch.randint(3, (40, 40), generator=g)
    bucket_attention(q, k, v, [BucketTerm(ids, lut)], 0.5)
    n = chunk_size(5, 40)
    assert seen == [(b0, min(5, b0 + n)) for b0 in range(0, 5, n)]


@pytest.mark.parametrize("batch,tokens,rows,want", [
    (3, 197, 32, 1),  # budget 96 // 197 = 0 -> at least one item, never two
    (5, 64, 16, 1),   # budget 80 // 64 = 1
    (6, 33, 16, 2),   # budget 96 // 33 = 2: 3 chunks of 2
])
def test_chunk_size_below_two_items(batch: int, tokens: int, rows: int, want: int) -> None:
    assert chunk_size(batch, tokens, rows) == want


def test_a_linear_term_after_a_table_term() -> None:
    g = torch.Generator().manual_seed(14)
    b, h, t, d, c, nb = 2, 2, 6, 3, 4, 5
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lut = torch.randn(1, h, t, nb, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(b, 1, t, c, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(h, c, nb, generator=g, dtype=torch.float64, requires_grad=True)
    ids1, ids2 = torch.randint(nb, (t, t), generator=g), torch.randint(nb, (t, t), generator=g)
    out = bucket_attention(q, k, v, [BucketTerm(ids1, lut), BucketTerm(ids2, x=x, weight=w)], 0.5, 1)
    b1 = torch.gather(lut.expand(b, h, t, nb), 3, ids1.expand(b, h, t, t))
    b2 = torch.gather((x @ w).expand(b, h, t, nb), 3, ids2.expand(b, h, t, t))
    ref = torch.softmax(0.5 * q @ k.transpose(2, 3) + b1 + b2, dim=-1) @ v
    torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(out.sum(), [q, k, v, lut, x, w])
    want = torch.autograd.grad(ref.sum(), [q, k, v, lut, x, w])
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_rows_of_very_different_size_keep_their_own_softmax() -> None:
    """Query 0's logits are near +800, query 1's near -800: a max over anything but the row
    would underflow exp() of the second row to zero and give NaN."""
    g = torch.Generator().manual_seed(15)
    b, h, t, d, nb = 1, 1, 4, 2, 2
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    lut = torch.zeros(1, 1, t, nb, dtype=torch.float64)
    lut[0, 0, 0] = torch.tensor([800.0, 801.0])
    lut[0, 0, 1] = torch.tensor([-800.0, -801.0])
    lut.requires_grad_(True)
    ids = torch.randint(nb, (t, t), generator=g)
    out = bucket_attention(q, k, v, [BucketTerm(ids, lut)], 0.5, 1)
    ref = explicit(q, k, v, ids, lut, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)
    got = torch.autograd.grad(out.sum(), [q, k, v, lut])
    want = torch.autograd.grad(ref.sum(), [q, k, v, lut])
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_packed_qkv_must_be_contiguous_3_b_h_t_d() -> None:
    ids = torch.zeros(4, 4, dtype=torch.int64)
    terms = [BucketTerm(ids, torch.zeros(1, 1, 4, 1))]
    with pytest.raises(ValueError, match="qkv must be"):
        packed_bucket_attention(torch.zeros(2, 1, 1, 4, 3), terms, 1.0)  # two, not three
    with pytest.raises(ValueError, match="qkv must be"):
        packed_bucket_attention(torch.zeros(3, 1, 4, 3), terms, 1.0)  # no head dim
    strided = torch.zeros(3, 1, 1, 3, 4).transpose(3, 4)  # (3, 1, 1, 4, 3), not contiguous
    with pytest.raises(ValueError, match="qkv must be"):
        packed_bucket_attention(strided, terms, 1.0)


def test_a_term_with_x_but_no_weight_is_refused() -> None:
    ids = torch.zeros(3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="either lut"):
        BucketTerm(ids, x=torch.zeros(1, 1, 3, 2))
    with pytest.raises(ValueError, match="either lut"):
        BucketTerm(ids, weight=torch.zeros(1, 2, 4))
