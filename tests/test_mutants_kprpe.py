"""KP-RPE: what the mutation run found undefended (scripts/mutation_test.py).

``pair_bias`` (the head-averaged bias the positional losses read) had no test of its own: it
is compared here with the explicit KP-RPE of ``rpe_reference`` (numpy, from the paper's
definition). Also pinned: the fallback table's batch, float64 modules with float32 keypoints,
the device of offsets and bucket ids (the meta device exists in every torch build), the
argument checks, the default and passed-on ratio.
"""

from __future__ import annotations

import numpy as np
import pytest
import rpe_reference as ref
import torch

from reidbench.layers.kprpe import KeypointRPE, keypoint_offsets, kprpe_factory
from reidbench.layers.position import AttentionContext

GRID = (3, 4)
HEADS, DEPTH, K = 3, 2, 3


def module(seed: int = 0, skip: int = 1) -> KeypointRPE:
    shared = KeypointRPE(K, DEPTH, HEADS).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in shared.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return shared


def params(shared: KeypointRPE) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in shared.named_parameters()}


def keypoints(b: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, K, 2, generator=g, dtype=torch.float64)


def reference_bias(shared: KeypointRPE, layer: int, kp: torch.Tensor | None, b: int,
                   skip: int) -> np.ndarray:
    """(B, H, T, T) explicit KP-RPE bias of block ``layer`` (rpe_reference)."""
    term = ref.KPRPETerm(params(shared), layer, DEPTH, HEADS, GRID,
                         None if kp is None else kp.numpy(), skip=skip)
    t = skip + GRID[0] * GRID[1]
    return term.logits(np.zeros((b, HEADS, t, 1)), np.zeros((b, HEADS, t, 1)), 1.0)


@pytest.mark.parametrize("skip", [0, 1])
@pytest.mark.parametrize("with_keypoints", [True, False])
@pytest.mark.parametrize("layer", [0, 1])
def test_pair_bias_is_the_head_mean_of_the_explicit_bias(
    skip: int, with_keypoints: bool, layer: int
) -> None:
    shared = module(seed=layer)
    b, n = 2, 5
    kp = keypoints(b) if with_keypoints else None
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=skip, keypoints=kp)
    g = torch.Generator().manual_seed(7)
    index = torch.stack([torch.randperm(GRID[0] * GRID[1], generator=g)[:n] for _ in range(b)])
    full = reference_bias(shared, layer, kp, b, skip).mean(1)  # (B, T, T)
    tokens = index.numpy() + skip
    expected = np.stack([full[i][np.ix_(tokens[i], tokens[i])] for i in range(b)])
    got = shared.pair_bias(layer, ctx, index)
    assert got.shape == (b, n, n)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=0, atol=1e-12)
    view = shared.block_term(layer).pair_bias(ctx, index)
    np.testing.assert_allclose(view.detach().numpy(), expected, rtol=0, atol=1e-12)


def test_pair_bias_checks_layer_and_batch() -> None:
    shared = module()
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=1, keypoints=keypoints(2))
    index = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(IndexError, match="out of range"):
        shared.pair_bias(DEPTH, ctx, index[:2])
    with pytest.raises(IndexError, match="out of range"):
        shared.pair_bias(-1, ctx, index[:2])
    with pytest.raises(ValueError, match="batch 2 but the patch index has batch 3"):
        shared.pair_bias(0, ctx, index)


def test_layer_term_checks_layer_and_batch() -> None:
    shared = module()
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=1, keypoints=keypoints(2))
    with pytest.raises(IndexError, match="out of range"):
        shared.layer_term(DEPTH, ctx, 2)
    with pytest.raises(ValueError, match="batch 2 but attention has batch 3"):
        shared.layer_term(0, ctx, 3)


@pytest.mark.parametrize("batch", [1, HEADS])
def test_fallback_bias_has_the_attention_batch(batch: int) -> None:
    """Without keypoints the table is the bias alone, one for the whole batch, expanded to it
    (batch = number of heads included)."""
    shared = module(seed=3)
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=1)
    got = shared.layer_bias(1, ctx, batch)
    t = 1 + GRID[0] * GRID[1]
    assert got.shape == (batch, HEADS, t, t)
    np.testing.assert_allclose(got.detach().numpy(), reference_bias(shared, 1, None, batch, 1),
                               rtol=0, atol=1e-12)


def test_float32_keypoints_in_a_float64_module_stay_float64() -> None:
    shared = module(seed=4)
    kp = keypoints(2, seed=5)
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=1, keypoints=kp.float())
    got = shared.layer_bias(0, ctx, 2)
    assert got.dtype == torch.float64
    expected = reference_bias(shared, 0, kp.float().double(), 2, 1)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=0, atol=1e-12)


def test_offsets_and_bucket_ids_follow_the_device() -> None:
    kp = torch.zeros(2, K, 2, device="meta")
    offsets = keypoint_offsets(kp, GRID)
    assert offsets.device.type == "meta" and offsets.shape == (2, 12, 2 * K)
    shared = KeypointRPE(K, DEPTH, HEADS).to("meta")
    ctx = AttentionContext(grid=GRID, num_prefix_tokens=1, keypoints=kp)
    term = shared.layer_term(0, ctx, 2)
    assert term.ids.device.type == "meta"


def test_keypoint_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="keypoints must be"):
        keypoint_offsets(torch.zeros(2, K, 3), GRID)
    with pytest.raises(ValueError, match="keypoints must be"):
        keypoint_offsets(torch.zeros(K, 2), GRID)


def test_sizes_must_be_at_least_one() -> None:
    one = KeypointRPE(1, 1, 1)
    assert one.weight.shape == (49, 2)  # default ratio 1.9: 49 product buckets
    for sizes in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError, match=">= 1"):
            KeypointRPE(*sizes)


def test_factory_passes_the_ratio_on() -> None:
    shared, factory = kprpe_factory(2, 2, 1, ratio=2.6)  # b = 5: (2 * 5 + 1)^2 = 121 buckets
    assert shared.ratio == 2.6 and shared.num_buckets == 121
    assert shared.weight.shape == (2 * 1 * 121, 4)
    assert factory(1).layer == 1 and factory(1).owner is shared
