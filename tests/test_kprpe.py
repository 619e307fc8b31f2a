"""KP-RPE (reidbench.layers.kprpe): offsets, zero init, keypoint equivariance, fallback, cache."""

from __future__ import annotations

import numpy as np
import pytest
import rpe_reference as ref
import torch
from torch import nn

from reidbench.layers.attention import Attention
from reidbench.layers.kprpe import KeypointRPE, KPRPEBlockTerm, keypoint_offsets, kprpe_factory
from reidbench.layers.position import AttentionContext


def _randomise(shared: KeypointRPE, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shared.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _keypoints(b: int, k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(b, k, 2, generator=g)  # (B, K, 2) away from the borders


def _qk(b: int, heads: int, t: int, d: int = 4) -> torch.Tensor:
    return torch.zeros(b, heads, t, d)


def _reference_bias(shared: KeypointRPE, layer: int, ctx: AttentionContext, b: int) -> torch.Tensor:
    """(B, H, T, T) bias from the published definition (``rpe_reference.KPRPETerm``: offsets of
    each patch centre to each keypoint, iRPE product buckets), not from the module's helpers."""
    params = {n: p.detach().double().numpy() for n, p in shared.named_parameters()}
    kp = None if ctx.keypoints is None else ctx.keypoints.double().numpy()
    term = ref.KPRPETerm(params, layer, shared.depth, shared.num_heads, ctx.grid, kp, ctx.num_prefix_tokens,
                         shared.ratio)
    t = ctx.num_prefix_tokens + ctx.grid[0] * ctx.grid[1]
    zeros = np.zeros((b, shared.num_heads, t, 1))  # the bias does not read queries or keys
    return torch.from_numpy(term.logits(zeros, zeros, 1.0)).float()


def test_offsets_hand_computed_2x3_grid() -> None:
    # centres x in {1/6, 1/2, 5/6}, y in {1/4, 3/4}; offsets are centre - keypoint, (x, y) per keypoint
    kp = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]], dtype=torch.float64)
    expected = torch.tensor([
        [-1 / 3, -1 / 4, 1 / 6, -3 / 4],
        [0.0, -1 / 4, 1 / 2, -3 / 4],
        [1 / 3, -1 / 4, 5 / 6, -3 / 4],
        [-1 / 3, 1 / 4, 1 / 6, -1 / 4],
        [0.0, 1 / 4, 1 / 2, -1 / 4],
        [1 / 3, 1 / 4, 5 / 6, -1 / 4],
    ], dtype=torch.float64)[None]
    off = keypoint_offsets(kp, (2, 3))
    assert off.shape == (1, 6, 4)
    torch.testing.assert_close(off, expected, rtol=0, atol=1e-15)


def test_zero_init_is_exactly_zero_and_attention_unchanged() -> None:
    torch.manual_seed(0)
    dim, heads, grid = 16, 2, (3, 4)
    shared, factory = kprpe_factory(num_keypoints=3, depth=2, num_heads=heads)
    ctx = AttentionContext(grid, 1, _keypoints(2, 3))
    t = 1 + 12
    term = factory(0)
    assert isinstance(term, KPRPEBlockTerm)
    bias = term.logits_bias(_qk(2, heads, t), _qk(2, heads, t), ctx)
    assert bias.shape == (2, heads, t, t)
    assert torch.equal(bias, torch.zeros_like(bias))

    with_kp = Attention(dim, heads, rel_pos=term)
    without = Attention(dim, heads, rel_pos=None)
    without.load_state_dict(with_kp.state_dict())
    x = torch.randn(2, t, dim)
    torch.testing.assert_close(with_kp(x, ctx), without(x, ctx), rtol=0, atol=1e-6)


def test_zero_init_in_vit_equals_vit_without_kprpe() -> None:
    from reidbench.models.vit import VisionTransformer

    kw = dict(img_size=(16, 12), patch_size=4, embed_dim=16, depth=2, num_heads=2)
    torch.manual_seed(0)
    plain = VisionTransformer(**kw)
    shared, factory = kprpe_factory(num_keypoints=5, depth=2, num_heads=2)
    torch.manual_seed(0)
    vit = VisionTransformer(**kw, rel_pos_factory=factory)
    vit.kprpe = shared  # what the lead's builder does: the shared module is owned by the ViT
    keys = [k for k in vit.state_dict() if "kprpe" in k or "rel_pos" in k]
    assert sorted(keys) == ["kprpe.bias", "kprpe.prefix_bias", "kprpe.weight"]
    assert torch.count_nonzero(shared.weight) == 0  # the ViT's Linear init did not touch it
    images = torch.randn(2, 3, 16, 12)
    kp = _keypoints(2, 5)
    torch.testing.assert_close(vit(images, kp), plain(images, kp), rtol=0, atol=1e-6)
    torch.testing.assert_close(vit(images), plain(images), rtol=0, atol=1e-6)


def test_bias_matches_reference_and_layers_read_different_slices() -> None:
    shared, factory = kprpe_factory(num_keypoints=2, depth=3, num_heads=2)
    _randomise(shared)
    ctx = AttentionContext((2, 3), 1, _keypoints(2, 2))
    t = 7
    biases = [factory(layer).logits_bias(_qk(2, 2, t), _qk(2, 2, t), ctx) for layer in range(3)]
    for layer, bias in enumerate(biases):
        torch.testing.assert_close(bias, _reference_bias(shared, layer, ctx, 2))
    assert not torch.allclose(biases[0], biases[1])
    assert not torch.allclose(biases[1], biases[2])
    # a few entries by hand: query patch i, key patch j of layer 1, head 1; patch n of the 2 x 3
    # grid has centre ((n % 3 + 0.5) / 3, (n // 3 + 0.5) / 2); the product bucket of the offset
    # (dy, dx) is (dy + 3) * 7 + dx + 3: (-1, -2) -> 15, (1, -1) -> 30, (0, 0) -> 24
    w = shared.weight.view(3, 2, shared.num_buckets, 4)[1, 1]
    bvec = shared.bias.view(3, 2, shared.num_buckets)[1, 1]
    for b, i, j, bucket in [(0, 0, 5, 15), (1, 4, 2, 30), (1, 3, 3, 24)]:
        centre = torch.tensor([(i % 3 + 0.5) / 3, (i // 3 + 0.5) / 2])
        off = torch.cat([centre - point for point in ctx.keypoints[b]])  # [dx0, dy0, dx1, dy1]
        table = w @ off + bvec  # (nb,)
        torch.testing.assert_close(biases[1][b, 1, 1 + i, 1 + j], table[bucket])
    assert torch.equal(biases[2][:, :, 0, :], shared.prefix_bias[2].view(1, 2, 1).expand(2, 2, t))
    assert torch.equal(biases[2][:, :, :, 0], shared.prefix_bias[2].view(1, 2, 1).expand(2, 2, t))


def test_bias_follows_keypoints_shifted_by_one_patch() -> None:
    rows, cols, p = 4, 5, 1
    shared, factory = kprpe_factory(num_keypoints=3, depth=1, num_heads=2)
    _randomise(shared)
    kp = _keypoints(2, 3)
    moved = kp + torch.tensor([1.0 / cols, 0.0])
    t = p + rows * cols
    term = factory(0)
    old = term.logits_bias(_qk(2, 2, t), _qk(2, 2, t), AttentionContext((rows, cols), p, kp))
    new = term.logits_bias(_qk(2, 2, t), _qk(2, 2, t), AttentionContext((rows, cols), p, moved))
    assert not torch.allclose(old, new)
    # patches whose right neighbour stays in the grid; shifting both tokens of a pair by one column
    src = torch.tensor([r * cols + c for r in range(rows) for c in range(cols - 1)]) + p
    dst = src + 1
    torch.testing.assert_close(new[:, :, dst][:, :, :, dst], old[:, :, src][:, :, :, src])
    torch.testing.assert_close(new[:, :, :p], old[:, :, :p])  # prefix pairs ignore keypoints


def test_fallback_without_keypoints_is_bias_only_table() -> None:
    shared, factory = kprpe_factory(num_keypoints=4, depth=2, num_heads=3)
    _randomise(shared)
    ctx = AttentionContext((3, 3), 1, None)
    t = 10
    for layer in range(2):
        bias = factory(layer).logits_bias(_qk(2, 3, t), _qk(2, 3, t), ctx)
        assert bias.shape == (2, 3, t, t)
        torch.testing.assert_close(bias, _reference_bias(shared, layer, ctx, 2))
    # the bias-only table is what zero offsets (every keypoint at the patch centre) give
    zero_ctx = AttentionContext((1, 1), 0, torch.full((1, 4, 2), 0.5))
    zero = factory(1).logits_bias(_qk(1, 3, 1), _qk(1, 3, 1), zero_ctx)
    centre_bucket = 24  # offset (0, 0): (0 + 3) * 7 + 0 + 3
    torch.testing.assert_close(zero[0, :, 0, 0], shared.bias.view(2, 3, -1)[1, :, centre_bucket])


def test_backward_gives_finite_gradients_from_zero_init() -> None:
    dim, heads, depth, grid = 16, 2, 2, (3, 3)
    shared, factory = kprpe_factory(num_keypoints=2, depth=depth, num_heads=heads)
    layers = [Attention(dim, heads, rel_pos=factory(i)) for i in range(depth)]
    ctx = AttentionContext(grid, 1, _keypoints(2, 2))
    x = torch.randn(2, 10, dim)
    for layer in layers:
        x = x + layer(x, ctx)
    x.pow(2).sum().backward()
    for name, p in shared.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name  # zero init still learns


@pytest.mark.parametrize(("grid", "k"), [((16, 8), 10), ((14, 14), 5)])
def test_real_grids(grid: tuple[int, int], k: int) -> None:
    dim, heads, depth = 24, 3, 2
    shared, factory = kprpe_factory(num_keypoints=k, depth=depth, num_heads=heads)
    _randomise(shared)
    t = 1 + grid[0] * grid[1]
    ctx = AttentionContext(grid, 1, _keypoints(2, k))
    bias = factory(1).logits_bias(_qk(2, heads, t), _qk(2, heads, t), ctx)
    assert bias.shape == (2, heads, t, t)
    torch.testing.assert_close(bias, _reference_bias(shared, 1, ctx, 2))
    out = Attention(dim, heads, rel_pos=factory(0))(torch.randn(2, t, dim), ctx)
    assert out.shape == (2, t, dim) and torch.isfinite(out).all()


class _Stack(nn.Module):
    """A ViT-like stack: one context per forward, shared KP-RPE owned by the stack."""

    def __init__(self, dim: int, heads: int, depth: int, k: int) -> None:
        super().__init__()
        self.kprpe, factory = kprpe_factory(k, depth, heads)
        self.layers = nn.ModuleList(Attention(dim, heads, rel_pos=factory(i)) for i in range(depth))

    def forward(self, x: torch.Tensor, keypoints: torch.Tensor | None) -> torch.Tensor:
        ctx = AttentionContext((2, 3), 1, keypoints)
        for layer in self.layers:
            x = x + layer(x, ctx)
        return x


def test_no_stale_results_across_forward_passes() -> None:
    torch.manual_seed(0)
    stack = _Stack(dim=8, heads=2, depth=3, k=2)
    _randomise(stack.kprpe)
    x = torch.randn(2, 7, 8)
    kp_a, kp_b = _keypoints(2, 2, seed=1), _keypoints(2, 2, seed=2)

    out_a = stack(x, kp_a)
    out_b = stack(x, kp_b)
    assert not torch.allclose(out_a, out_b)
    torch.testing.assert_close(stack(x, kp_a), out_a)

    out_none = stack(x, None)
    fresh = _Stack(dim=8, heads=2, depth=3, k=2)
    fresh.load_state_dict(stack.state_dict())
    torch.testing.assert_close(out_none, fresh(x, None))
    assert not torch.allclose(out_none, out_a)

    # two training steps on the same keypoints tensor: no stale graph, no stale weights
    opt = torch.optim.SGD(stack.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        stack(x, kp_a).pow(2).mean().backward()
        opt.step()
    assert not torch.allclose(stack(x, kp_a), out_a)


def test_reused_context_sees_weight_updates() -> None:
    shared, factory = kprpe_factory(num_keypoints=2, depth=2, num_heads=2)
    _randomise(shared)
    ctx = AttentionContext((2, 3), 1, _keypoints(1, 2))
    first = factory(0).logits_bias(_qk(1, 2, 7), _qk(1, 2, 7), ctx)  # layer 0 keeps the cache
    with torch.no_grad():
        shared.weight.add_(1.0)
    second = factory(0).logits_bias(_qk(1, 2, 7), _qk(1, 2, 7), ctx)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, _reference_bias(shared, 0, ctx, 1))


def test_errors() -> None:
    shared, factory = kprpe_factory(num_keypoints=3, depth=2, num_heads=2)
    with pytest.raises(IndexError):
        factory(2)
    ctx = AttentionContext((2, 3), 1, _keypoints(1, 4))
    with pytest.raises(ValueError, match="keypoints of shape"):
        factory(0).logits_bias(_qk(1, 2, 7), _qk(1, 2, 7), ctx)
    with pytest.raises(ValueError, match="prefix tokens"):
        factory(0).logits_bias(_qk(1, 2, 8), _qk(1, 2, 8), AttentionContext((2, 3), 1, None))


def test_deepcopy_and_pickle_keep_the_owner_link() -> None:
    import copy
    import io

    shared, factory = kprpe_factory(num_keypoints=2, depth=2, num_heads=2)
    term = factory(0)
    model = nn.ModuleDict({"kprpe": shared, "attn": Attention(8, 2, rel_pos=term)})
    model["attn"](torch.randn(1, 7, 8), AttentionContext((2, 3), 1, _keypoints(1, 2)))
    clone = copy.deepcopy(model)
    assert clone["attn"].rel_pos.owner is clone["kprpe"]
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded["attn"].rel_pos.owner is loaded["kprpe"]
