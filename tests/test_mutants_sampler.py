"""P x K samplers: what the mutation run found undefended (scripts/mutation_test.py).

Properties, not recorded streams (torch's generators are not promised to give the same draws in
every version): augmentation seeds are valid 31-bit seeds spread over their range and fresh in
every epoch; top-up batches use the sampler's own generator (the global RNG does not change
them) and keep P identities; the documented defaults (seed 0) and the arguments that
``build_sampler`` passes on; K = 1; the epoch length by hand; an identity with exactly K images
spread over uneven cameras uses each image once.
"""

from __future__ import annotations

from collections import Counter

import torch

from reidbench.data.sampler import (
    CameraBalancedPKSampler,
    PKSampler,
    build_sampler,
    camera_chunks,
)


def pids_and_cams() -> tuple[list[int], list[int]]:
    pids = [p for p in range(10) for _ in range(3 + p % 4)]
    return pids, [i % 3 for i in range(len(pids))]


def test_augmentation_seeds_are_31_bit_and_spread() -> None:
    pids, _ = pids_and_cams()
    seeds = []
    sampler = PKSampler(pids, 8, 2, seed=5)
    for epoch in range(8):
        sampler.set_epoch(epoch)
        seeds += [s for _, s in sampler]
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    assert max(seeds) > 2**30 and min(seeds) < 2**30
    assert len(set(seeds)) > 0.99 * len(seeds)


def test_every_epoch_draws_fresh_augmentation_seeds() -> None:
    pids, _ = pids_and_cams()
    sampler = PKSampler(pids, 8, 2, seed=0)
    per_epoch = []
    for epoch in range(8):
        sampler.set_epoch(epoch)
        per_epoch.append([s for _, s in sampler])
    for a in range(8):
        for b in range(a + 1, 8):
            assert per_epoch[a] != per_epoch[b], (a, b)


def uneven_pids() -> list[int]:
    """Identity 0 has 40 images (10 chunks of K = 4), identities 1..3 have 4 (one chunk each):
    13 chunks, 6 batches of P = 2 (12 slots). Identity 0 fills at most one slot per batch and
    the small ones 3, so at least 3 slots per epoch are top-ups: fresh chunks of the others."""
    return [0] * 40 + [p for p in range(1, 4) for _ in range(4)]


def test_top_ups_use_the_samplers_generator_and_keep_p_identities() -> None:
    pids = uneven_pids()
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        sampler = PKSampler(pids, 8, 4, seed=9)  # P = 2
        for epoch in range(4):
            sampler.set_epoch(epoch)
            runs.append(list(sampler))
    half = len(runs) // 2
    assert runs[:half] == runs[half:]  # the global RNG changed nothing
    for items in runs:
        assert len(items) == 6 * 8
        for start in range(0, len(items), 8):
            batch = [pids[i] for i, _ in items[start:start + 8]]
            assert sorted(Counter(batch).values()) == [4, 4]


def test_defaults_are_seed_zero() -> None:
    pids, cams = pids_and_cams()
    assert list(PKSampler(pids, 8, 2)) == list(PKSampler(pids, 8, 2, seed=0))
    assert list(CameraBalancedPKSampler(pids, cams, 8, 2)) == list(
        CameraBalancedPKSampler(pids, cams, 8, 2, seed=0))
    assert list(build_sampler("pk", pids, cams, 8, 2)) == list(PKSampler(pids, 8, 2, seed=0))


def test_build_sampler_passes_seed_rank_and_world_size_on() -> None:
    pids, cams = pids_and_cams()
    for name, cls in (("pk", PKSampler), ("pk_camera", CameraBalancedPKSampler)):
        built = build_sampler(name, pids, cams, 4, 2, seed=5, rank=1, world_size=2)
        assert (built.seed, built.rank, built.world_size) == (5, 1, 2)
        args = (pids, cams) if cls is CameraBalancedPKSampler else (pids,)
        assert list(built) == list(cls(*args, 4, 2, seed=5, rank=1, world_size=2))


def test_one_image_per_identity_is_allowed() -> None:
    pids, _ = pids_and_cams()
    sampler = PKSampler(pids, 4, 1)
    assert (sampler.p, sampler.k) == (4, 1)
    items = list(sampler)
    assert len(items) == len(sampler) == 4 * (len(pids) // 4)  # one chunk per image


def test_length_when_the_chunks_fill_exactly_one_batch() -> None:
    """4 identities x 4 images, K = 4, P = 4: 4 chunks, one batch of 16."""
    pids = [p for p in range(4) for _ in range(4)]
    sampler = PKSampler(pids, 16, 4)
    assert len(sampler) == 16 and len(list(sampler)) == 16


def test_exactly_k_images_over_uneven_cameras_use_each_image_once() -> None:
    """Camera 0 has 3 images, camera 1 one: a chunk of K = 4 takes all four (cycling over the
    cameras would repeat camera 1's image and drop one of camera 0's)."""
    indices, cams = [10, 11, 12, 13], [0, 0, 0, 1]
    for seed in range(10):
        (chunk,) = camera_chunks(indices, cams, 4, torch.Generator().manual_seed(seed))
        assert sorted(chunk) == indices
