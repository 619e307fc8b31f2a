"""Shaw et al. 2D relative position representations: efficient terms against a per-pair reference,
clipping, the prefix-token embedding and a forward/backward pass through Attention."""

from __future__ import annotations

import itertools

import pytest
import torch

from reidbench.layers.attention import Attention
from reidbench.layers.position import AttentionContext
from reidbench.layers.rpe import ShawRPE, shaw_factory

GRID = (4, 3)
CTX = AttentionContext(grid=GRID, num_prefix_tokens=1)
T = 1 + GRID[0] * GRID[1]


def random_inputs(t: int = T, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(2, 3, t, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    attn = torch.randn(2, 3, t, t, generator=gen, dtype=torch.float64).softmax(-1)
    return q, k, attn


def randomised(mod: ShawRPE, seed: int = 1) -> ShawRPE:
    mod = mod.double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return mod


def table_index(n: int, m: int, axis: int, k: int, grid: tuple[int, int] = GRID) -> int:
    """Row of the tables for tokens n, m (token 0 is CLS), written independently of the module."""
    if n == 0 or m == 0:
        return 2 * k + 1
    offset = divmod(n - 1, grid[1])[axis] - divmod(m - 1, grid[1])[axis]
    return max(-k, min(k, offset)) + k


def per_pair_reference(
    mod: ShawRPE, q: torch.Tensor, attn: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    k = mod.max_distance
    b, h, t, d = q.shape
    logits = torch.zeros(b, h, t, t, dtype=q.dtype)
    out = torch.zeros(b, h, t, d, dtype=q.dtype) if mod.on_values else None
    for i, j in itertools.product(range(t), range(t)):
        r, c = table_index(i, j, 0, k), table_index(i, j, 1, k)
        a_key = mod.key_rows[:, r] + mod.key_cols[:, c]  # (H|1, d)
        logits[:, :, i, j] = (mod.scale * q[:, :, i] * a_key).sum(-1)
        if out is not None:
            out[:, :, i] += attn[:, :, i, j, None] * (mod.value_rows[:, r] + mod.value_cols[:, c])
    return logits, out


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("on_values", [False, True])
@pytest.mark.parametrize("max_distance", [0, 1, 2, 4])
def test_efficient_equals_per_pair(max_distance: int, on_values: bool, shared: bool) -> None:
    mod = randomised(ShawRPE(5, 3, max_distance=max_distance, on_values=on_values, shared_head=shared))
    q, k, attn = random_inputs()
    ref_logits, ref_out = per_pair_reference(mod, q, attn)
    torch.testing.assert_close(mod.logits_bias(q, k, CTX), ref_logits, rtol=1e-12, atol=1e-12)
    out = mod.output_term(attn, CTX)
    assert mod.needs_probabilities == on_values
    if on_values:
        assert out is not None and ref_out is not None
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    else:
        assert out is None


def test_offsets_are_clipped_at_max_distance() -> None:
    grid = (16, 8)
    ctx = AttentionContext(grid=grid, num_prefix_tokens=1)
    mod = randomised(ShawRPE(5, 3, max_distance=2))
    rows, cols = mod.axis_ids(ctx, torch.device("cpu"))
    assert int(rows[1:, 1:].min()) == 0 and int(rows[1:, 1:].max()) == 4
    q, k, _ = random_inputs(t=1 + 16 * 8)
    term = mod.logits_bias(q, k, ctx)

    def token(y: int, x: int) -> int:
        return 1 + y * grid[1] + x

    i = token(0, 3)
    # keys 2, 5 and 15 rows below (same column): all clipped to dy = -2, so the same encoding
    far = [token(dy, 3) for dy in (2, 5, 15)]
    assert {int(rows[i, j]) for j in far} == {0}
    torch.testing.assert_close(term[..., i, far[1]], term[..., i, far[0]])
    torch.testing.assert_close(term[..., i, far[2]], term[..., i, far[0]])
    # one row closer is inside the window: a different encoding
    assert not torch.allclose(term[..., i, token(1, 3)], term[..., i, far[0]])
    # columns clip as well: dx = -4 and dx = -2 share the clipped column
    assert int(cols[token(0, 0), token(0, 4)]) == int(cols[token(0, 0), token(0, 2)]) == 0


def test_prefix_pairs_use_the_extra_row() -> None:
    mod = randomised(ShawRPE(5, 3, max_distance=3))
    rows, cols = mod.axis_ids(CTX, torch.device("cpu"))
    for ids in (rows, cols):
        assert (ids[0] == 7).all() and (ids[:, 0] == 7).all() and int(ids[1:, 1:].max()) <= 6
    with torch.no_grad():
        mod.key_rows.zero_()
        mod.key_cols.zero_()
        mod.key_rows[:, 7] = 1.0  # only the prefix embedding is non-zero
    q, k, _ = random_inputs()
    term = mod.logits_bias(q, k, CTX)
    assert (term[..., 1:, 1:] == 0).all()
    expected = mod.scale * q[..., 0, :].sum(-1, keepdim=True)  # q_0 . (1, ..., 1): every key
    torch.testing.assert_close(term[..., 0, :], expected.expand(-1, -1, T))


def test_token_count_must_match_the_grid() -> None:
    mod = ShawRPE(5, 3)
    q = torch.randn(1, 3, T + 1, 5)
    with pytest.raises(ValueError, match="tokens"):
        mod.logits_bias(q, q, CTX)
    with pytest.raises(ValueError, match="max_distance"):
        ShawRPE(5, 3, max_distance=-1)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("on_values", [False, True])
def test_attention_forward_backward_non_square(on_values: bool, shared: bool) -> None:
    torch.manual_seed(0)
    rel = shaw_factory(8, 4, max_distance=4, on_values=on_values, shared_head=shared)(0)
    attn = Attention(32, 4, rel_pos=rel)
    ctx = AttentionContext(grid=(16, 8), num_prefix_tokens=1)
    x = torch.randn(2, 1 + 16 * 8, 32, requires_grad=True)
    y = attn(x, ctx)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    names = {"key_rows", "key_cols"} | ({"value_rows", "value_cols"} if on_values else set())
    params = dict(rel.named_parameters())
    assert set(params) == names
    for name, p in params.items():
        assert p.shape == (1 if shared else 4, 10, 8)
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_factory_gives_a_fresh_module_per_block() -> None:
    make = shaw_factory(8, 4)
    a, b = make(0), make(1)
    assert isinstance(a, ShawRPE) and a is not b and a.key_rows is not b.key_rows
    assert a.max_distance == 4 and not a.on_values
    assert 0.01 < float(a.key_rows.detach().std()) < 0.03  # trunc_normal_(std=0.02), as the ViT weights
