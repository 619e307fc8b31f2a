"""P x K sampler: batch composition, exact length, determinism, disjoint ranks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from reidbench.data.sampler import PKSampler
from reidbench.errors import ConfigError


def make_pids(seed: int = 0, ids: int = 30) -> list[int]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, ids)  # some identities have fewer than K images
    return [pid for pid, c in enumerate(counts) for _ in range(c)]


def batches(sampler: PKSampler) -> list[list[tuple[int, int]]]:
    items = list(sampler)
    size = sampler.p * sampler.k
    return [items[i:i + size] for i in range(0, len(items), size)]


@pytest.mark.parametrize("p,k", [(4, 4), (8, 2), (3, 5)])
def test_batches_are_p_identities_times_k(p: int, k: int) -> None:
    pids = make_pids()
    sampler = PKSampler(pids, p * k, k, seed=1)
    items = list(sampler)
    assert len(items) == len(sampler)  # exact epoch length
    for batch in batches(sampler):
        assert len(batch) == p * k
        counts = Counter(pids[i] for i, _ in batch)
        assert len(counts) == p and set(counts.values()) == {k}


def test_identities_with_few_images_are_oversampled() -> None:
    pids = [0] + [1] * 2 + [p for p in range(2, 10) for _ in range(8)]
    sampler = PKSampler(pids, 16, 4, seed=0)
    for batch in batches(sampler):
        for pid in (0, 1):
            idx = [i for i, _ in batch if pids[i] == pid]
            assert len(idx) in (0, 4)
            assert set(idx) <= {j for j, q in enumerate(pids) if q == pid}


def test_epoch_length_counts_chunks() -> None:
    pids = [p for p in range(10) for _ in range(9)]  # 2 chunks of K=4 per identity
    sampler = PKSampler(pids, 8, 4, seed=0)  # P = 2
    assert len(sampler) == (10 * 2 // 2) * 8


def test_same_seed_same_order_and_epochs_differ() -> None:
    pids = make_pids()
    a, b = PKSampler(pids, 16, 4, seed=3), PKSampler(pids, 16, 4, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(PKSampler(pids, 16, 4, seed=4)) != list(a)


def test_ranks_draw_disjoint_identities_each_step() -> None:
    pids = make_pids(ids=40)
    ranks = [PKSampler(pids, 16, 4, seed=7, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    for b0, b1 in zip(batches(ranks[0]), batches(ranks[1])):
        assert not {pids[i] for i, _ in b0} & {pids[i] for i, _ in b1}


def test_too_few_identities_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs 16 identities"):
        PKSampler([0, 1, 2], 64, 4)
    with pytest.raises(ConfigError, match="multiple of K"):
        PKSampler(make_pids(), 30, 4)
