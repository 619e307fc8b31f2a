"""P x K sampler: batch composition, exact length, determinism, disjoint ranks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from reidbench.data.sampler import (
    CameraBalancedPKSampler,
    PKSampler,
    build_sampler,
    camera_chunks,
    distributed_rank,
)
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


# --- camera-balanced variant -----------------------------------------------------------------


def make_cams(pids: list[int], seed: int = 0, cams: int = 4) -> list[int]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(cams), size=max(pids) + 1)  # uneven cameras per identity
    return [int(rng.choice(cams, p=weights[pid])) for pid in pids]


@pytest.mark.parametrize("p,k", [(4, 4), (3, 5)])
def test_camera_balanced_batches_and_length(p: int, k: int) -> None:
    pids = make_pids(2)
    sampler = CameraBalancedPKSampler(pids, make_cams(pids), p * k, k, seed=1)
    items = list(sampler)
    assert len(items) == len(sampler) == sampler.num_batches * p * k
    for batch in batches(sampler):
        counts = Counter(pids[i] for i, _ in batch)
        assert len(counts) == p and set(counts.values()) == {k}


@pytest.mark.parametrize("seed", range(20))
def test_camera_chunks_spread_every_camera_evenly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    per_cam = rng.integers(0, 9, size=int(rng.integers(1, 5)))
    cams = [c for c, n in enumerate(per_cam) for _ in range(n)] or [0]
    indices = [100 + i for i in range(len(cams))]
    cam_of = dict(zip(indices, cams))
    chunks = camera_chunks(indices, cams, k, torch.Generator().manual_seed(seed))
    assert len(chunks) == max(1, len(indices) // k) and all(len(c) == k for c in chunks)
    used = [i for c in chunks for i in c]
    assert set(used) <= set(indices)
    available = Counter(cams)
    if len(indices) < k:  # oversampled: cameras cycle, counts differ by at most one
        per_chunk = Counter(cam_of[i] for i in chunks[0])
        assert set(per_chunk) == set(available)
        assert max(per_chunk.values()) - min(per_chunk.values()) <= 1
        return
    assert len(set(used)) == len(used)  # no image twice when there are enough
    selected = Counter(cam_of[i] for i in used)
    # round-robin selection: a camera with unused images has at most one image fewer than any other
    for c in available:
        if selected[c] < available[c]:
            assert all(selected[c] >= selected[d] - 1 for d in available)
    m = len(chunks)
    for chunk in chunks:  # each camera dealt floor or ceil of its share to every chunk
        per_chunk = Counter(cam_of[i] for i in chunk)
        for c in available:
            assert per_chunk[c] in (selected[c] // m, -(-selected[c] // m))


def test_camera_balanced_covers_more_cameras_than_plain() -> None:
    pids = [p for p in range(12) for _ in range(12)]
    cams = [i % 3 for i in range(len(pids))]  # 3 cameras x 4 images per identity
    plain = PKSampler(pids, 16, 4, seed=0)
    balanced = CameraBalancedPKSampler(pids, cams, 16, 4, seed=0)
    for b in batches(balanced):  # every chunk of 4 holds all 3 cameras
        for pid in {pids[i] for i, _ in b}:
            assert len({cams[i] for i, _ in b if pids[i] == pid}) == 3
    missing = sum(len({cams[i] for i, _ in b if pids[i] == pid}) < 3
                  for b in batches(plain) for pid in {pids[i] for i, _ in b})
    assert missing > 0  # the plain sampler does not guarantee it


def test_camera_balanced_is_seeded_and_ranks_are_disjoint() -> None:
    pids = make_pids(3, ids=40)
    cams = make_cams(pids, 3)
    a = CameraBalancedPKSampler(pids, cams, 16, 4, seed=5)
    assert list(a) == list(CameraBalancedPKSampler(pids, cams, 16, 4, seed=5))
    assert list(a) != list(CameraBalancedPKSampler(pids, cams, 16, 4, seed=6))
    ranks = [CameraBalancedPKSampler(pids, cams, 16, 4, seed=7, rank=r, world_size=2) for r in range(2)]
    for b0, b1 in zip(batches(ranks[0]), batches(ranks[1])):
        assert not {pids[i] for i, _ in b0} & {pids[i] for i, _ in b1}


# --- building by name, distributed defaults --------------------------------------------------


def test_build_sampler_by_name_and_errors() -> None:
    pids = make_pids()
    cams = make_cams(pids)
    assert type(build_sampler("pk", pids, cams, 16, 4)) is PKSampler
    assert isinstance(build_sampler("pk_camera", pids, cams, 16, 4), CameraBalancedPKSampler)
    with pytest.raises(ConfigError, match="unknown data.sampler 'nope'; expected one of: pk, pk_camera"):
        build_sampler("nope", pids, cams, 16, 4)
    with pytest.raises(ConfigError, match="camera ids"):
        CameraBalancedPKSampler(pids, cams[:-1], 16, 4)
    with pytest.raises(ConfigError, match="rank 2 is not in"):
        PKSampler(pids, 16, 4, rank=2, world_size=2)


def test_build_sampler_reads_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from reidbench.data import sampler as sampler_module

    pids = make_pids(ids=40)
    assert distributed_rank() == (0, 1)  # no process group here
    monkeypatch.setattr(sampler_module, "distributed_rank", lambda: (1, 2))
    built = build_sampler("pk", pids, pids, 16, 4, seed=3)
    assert (built.rank, built.world_size) == (1, 2)
    assert list(built) == list(PKSampler(pids, 16, 4, seed=3, rank=1, world_size=2))


def _rank_worker(rank: int, world: int, init: str, out: str) -> None:
    import datetime
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child never enters an OpenMP region of the parent's pool
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        pids = make_pids(ids=40)
        sampler = build_sampler("pk", pids, pids, 16, 4, seed=11)
        steps = [sorted({pids[i] for i, _ in b}) for b in batches(sampler)]
        with open(f"{out}.{rank}", "w") as fh:
            json.dump({"rank": sampler.rank, "world": sampler.world_size, "steps": steps}, fh)
    finally:
        dist.destroy_process_group()


def test_ranks_under_a_real_process_group_draw_disjoint_identities(tmp_path: Path) -> None:
    """Two real processes in a gloo group: each builds its sampler from the group's rank and
    world size and draws identities disjoint from the other's in every step. Forked (well under
    a second; spawning re-imports torch in every child, 6 to 18 s on 2 cores)."""
    import json

    import torch.multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    out = str(tmp_path / "steps")
    mp.start_processes(_rank_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2,
                       join=True, start_method="fork")
    runs = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    assert [(r["rank"], r["world"]) for r in runs] == [(0, 2), (1, 2)]
    assert len(runs[0]["steps"]) == len(runs[1]["steps"]) > 0
    for s0, s1 in zip(runs[0]["steps"], runs[1]["steps"]):
        assert len(s0) == len(s1) == 4 and not set(s0) & set(s1)


# --- what an epoch draws: coverage, oversampling, epochs ----------------------------------------


def per_identity(sampler: PKSampler, pids: list[int]) -> dict[int, list[int]]:
    """The dataset indices each identity contributed to one epoch, in order."""
    out: dict[int, list[int]] = {}
    for index, _ in sampler:
        out.setdefault(pids[index], []).append(index)
    return out


@pytest.mark.parametrize("sampler_cls", [PKSampler, CameraBalancedPKSampler])
def test_every_image_is_used_over_epochs_not_only_the_first_k(sampler_cls: type) -> None:
    """Identities with K + 2 images, one chunk each per epoch: within an epoch an identity's K
    images are distinct, and over epochs every one of its images is drawn (a sampler that always
    takes an identity's first K images never draws the last two)."""
    k, p = 4, 4
    pids = [pid for pid in range(12) for _ in range(k + 2)]
    cams = [(i % 6) // 3 for i in range(len(pids))]  # 3 images per camera: 2 of each drawn
    args = (pids, cams) if sampler_cls is CameraBalancedPKSampler else (pids,)
    sampler = sampler_cls(*args, p * k, k, seed=2)
    seen: dict[int, set[int]] = {pid: set() for pid in range(12)}
    for epoch in range(20):
        sampler.set_epoch(epoch)
        used = per_identity(sampler, pids)
        assert set(used) == set(range(12))  # 12 chunks / P = 3 steps: every identity once
        for pid, indices in used.items():
            assert len(indices) == k and len(set(indices)) == k
            seen[pid] |= set(indices)
    for pid in range(12):
        assert seen[pid] == {i for i, q in enumerate(pids) if q == pid}


@pytest.mark.parametrize("p,chunks", [(1, 3), (4, 2)])
def test_epoch_uses_each_image_exactly_once_when_counts_divide(p: int, chunks: int) -> None:
    """n = chunks * K images per identity and every step takes every identity that has chunks
    left (P = 1, or exactly P identities): the epoch is a partition of the whole split."""
    k = 4
    ids = 5 if p == 1 else p
    pids = [pid for pid in range(ids) for _ in range(chunks * k)]
    sampler = PKSampler(pids, p * k, k, seed=3)
    indices = [i for i, _ in sampler]
    assert sorted(indices) == list(range(len(pids)))


def test_identities_below_k_are_drawn_with_replacement_from_their_own_images() -> None:
    """n < K: one chunk of K per epoch drawn with replacement (a single image repeated K times);
    an identity with n >= K never repeats an image inside one chunk."""
    k = 4
    pids = [0] + [1] * 3 + [p for p in range(2, 10) for _ in range(k)]
    sampler = PKSampler(pids, 2 * k, k, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        used = per_identity(sampler, pids)
        assert used[0] == [0] * k  # the only image, K times
        assert len(used[1]) == k and set(used[1]) <= {1, 2, 3}
        for pid in range(2, 10):
            if pid in used:
                for b in range(0, len(used[pid]), k):
                    assert len(set(used[pid][b:b + k])) == k
    # over epochs every image of the short identity is drawn
    drawn = set()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn |= set(per_identity(sampler, pids)[1])
    assert drawn == {1, 2, 3}


def test_epochs_differ_in_images_and_order_and_repeat_exactly() -> None:
    pids = make_pids()
    a = PKSampler(pids, 16, 4, seed=3)
    epochs = []
    for epoch in range(3):
        a.set_epoch(epoch)
        epochs.append(list(a))
    # not only the augmentation seeds: the schedule itself changes between epochs
    indices = [[i for i, _ in e] for e in epochs]
    assert indices[0] != indices[1] and indices[1] != indices[2]
    assert [s for _, s in epochs[0]] != [s for _, s in epochs[1]]
    # same seed and epoch: identical, whatever was drawn before and by whichever instance
    b = PKSampler(pids, 16, 4, seed=3)
    b.set_epoch(1)
    assert list(b) == epochs[1] and list(b) == epochs[1]
    a.set_epoch(0)
    assert list(a) == epochs[0]


def test_camera_balanced_chunks_spread_cameras_through_the_sampler() -> None:
    """The documented promise seen in the batches: each identity's K consecutive items (one
    chunk) hold every camera floor or ceil of its share of the identity's picks."""
    k = 4
    pids = [p for p in range(8) for _ in range(8)]
    cams = [(i % 8) // 3 for i in range(len(pids))]  # per identity: cameras 0, 0, 0, 1, 1, 1, 2, 2
    sampler = CameraBalancedPKSampler(pids, cams, 2 * k, k, seed=4)
    items = [i for i, _ in sampler]
    chunks: dict[int, list[list[int]]] = {}
    for c in range(0, len(items), k):
        chunk = items[c:c + k]
        assert len({pids[i] for i in chunk}) == 1
        chunks.setdefault(pids[chunk[0]], []).append(chunk)
    assert len(chunks) == 8
    for pid, cs in chunks.items():
        own = {i for i, q in enumerate(pids) if q == pid}
        for c in cs:  # 2 chunks take all 8 images: 3, 3, 2 of cameras 0, 1, 2 -> 1 or 2 each
            assert set(c) <= own and len(set(c)) == k
            per_cam = Counter(cams[i] for i in c)
            assert all(per_cam[cam] in (1, 2) for cam in (0, 1, 2)), per_cam
