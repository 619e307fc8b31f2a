"""Identity-balanced P x K sampling.

Each batch holds P distinct identities with K images each. An identity contributes
``max(1, n // K)`` chunks of K images per epoch (identities with fewer than K images are
oversampled with replacement), and the epoch has ``total_chunks // (P * world_size)`` batches
per rank, so ``len()`` is exact. When fewer than P identities still have unused chunks, the
batch is filled with fresh random chunks of other identities. Under DDP every rank builds the
same global schedule from the same seed and takes its own slice of P identities per step, so
ranks see disjoint identities in each step.

Each yielded item is ``(dataset_index, augmentation_seed)``; the dataset seeds that sample's
augmentation from it, so a run is reproducible with any number of loader workers.

``CameraBalancedPKSampler`` builds each identity's K-image chunks so that every camera of the
identity is spread as evenly as possible over the chunks (``camera_chunks``); batches, length,
seeding and rank slicing are those of ``PKSampler``. ``build_sampler`` picks one by name
(``data.sampler``) and reads the rank and world size from ``torch.distributed`` when a process
group is initialised (``torchrun``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from reidbench.errors import ConfigError


class PKSampler(Sampler[tuple[int, int]]):
    """Args:
        pids: identity of each dataset index.
        batch_size: P * K images per batch on each rank.
        num_instances: K.
        seed: base seed; epoch e uses a generator seeded with (seed, e).
        rank, world_size: this process's slice of each global batch (DDP).
    """

    def __init__(
        self, pids: Sequence[int], batch_size: int, num_instances: int, seed: int = 0,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if num_instances < 1 or batch_size % num_instances:
            raise ConfigError(
                f"batch size {batch_size} must be a positive multiple of K={num_instances}"
            )
        self.k = num_instances
        self.p = batch_size // num_instances
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        self.index_by_pid = {pid: by_pid[pid] for pid in sorted(by_pid)}
        needed = self.p * world_size
        if len(self.index_by_pid) < needed:
            raise ConfigError(
                f"P x K sampling needs {needed} identities per step (batch {batch_size} / "
                f"K={num_instances} x {world_size} ranks) but the training split has "
                f"{len(self.index_by_pid)}; lower train.batch_size or raise data.num_instances"
            )
        total_chunks = sum(max(1, len(v) // self.k) for v in self.index_by_pid.values())
        self.num_batches = max(1, total_chunks // needed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.p * self.k

    def _chunks(self, indices: list[int], g: torch.Generator) -> list[list[int]]:
        if len(indices) < self.k:
            picks = torch.randint(len(indices), (self.k,), generator=g).tolist()
            return [[indices[i] for i in picks]]
        perm = torch.randperm(len(indices), generator=g).tolist()
        return [
            [indices[i] for i in perm[c * self.k:(c + 1) * self.k]]
            for c in range(len(indices) // self.k)
        ]

    def global_schedule(self) -> list[list[list[int]]]:
        """All ranks' batches of this epoch: [step][slot] -> K indices (world_size * P slots)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        pids = list(self.index_by_pid)
        chunks = {pid: self._chunks(self.index_by_pid[pid], g) for pid in pids}
        needed = self.p * self.world_size
        steps = []
        for _ in range(self.num_batches):
            available = [pid for pid in pids if chunks[pid]]
            order = torch.randperm(len(available), generator=g).tolist()
            chosen = [available[i] for i in order[:needed]]
            batch = [chunks[pid].pop() for pid in chosen]
            if len(chosen) < needed:  # top up with fresh chunks of other identities
                rest = [pid for pid in pids if pid not in set(chosen)]
                extra = torch.randperm(len(rest), generator=g).tolist()[: needed - len(chosen)]
                for i in extra:
                    batch.append(self._chunks(self.index_by_pid[rest[i]], g)[0])
            steps.append(batch)
        return steps

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # augmentation seeds: rank 0 keeps the single-process stream, other ranks get their own
        g = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + self.epoch) ^ 0x5EED) + self.rank * 7_919_993
        )
        for step in self.global_schedule():
            mine = step[self.rank * self.p:(self.rank + 1) * self.p]
            for chunk in mine:
                for index in chunk:
                    yield index, int(torch.randint(2**31 - 1, (1,), generator=g).item())


class CameraBalancedPKSampler(PKSampler):
    """``PKSampler`` whose K images of an identity are drawn across the identity's cameras.

    Args:
        pids, camids: identity and camera of each dataset index.
        batch_size, num_instances, seed, rank, world_size: as in ``PKSampler``.

    Chunks come from ``camera_chunks``: the images used in an epoch are picked round-robin
    over the cameras (a camera with unused images ends with at most one pick fewer than any
    other), then every camera's picks are dealt over the chunks as evenly as possible. An
    identity with fewer than K images fills its one chunk by cycling over its cameras (with
    replacement).
    """

    def __init__(
        self, pids: Sequence[int], camids: Sequence[int], batch_size: int, num_instances: int,
        seed: int = 0, rank: int = 0, world_size: int = 1,
    ) -> None:
        if len(camids) != len(pids):
            raise ConfigError(f"{len(pids)} identities but {len(camids)} camera ids")
        super().__init__(pids, batch_size, num_instances, seed, rank, world_size)
        self.camids = [int(c) for c in camids]

    def _chunks(self, indices: list[int], g: torch.Generator) -> list[list[int]]:
        return camera_chunks(indices, [self.camids[i] for i in indices], self.k, g)


def camera_chunks(
    indices: list[int], camids: list[int], k: int, g: torch.Generator
) -> list[list[int]]:
    """One identity's ``max(1, n // k)`` chunks of k images, cameras spread over the chunks.

    Args:
        indices: the identity's n dataset indices; camids: their cameras.
        k: images per chunk.
        g: the generator every random choice is drawn from.

    With M chunks and s_c images of camera c selected (M * k in all), each chunk holds
    floor(s_c / M) or ceil(s_c / M) images of camera c. The selection takes one unused image
    of each camera in turn (cameras in random order, images shuffled), so the s_c are as equal
    as the cameras' image counts allow. For n < k: one chunk cycling over the cameras, each
    camera cycling over its shuffled images, so camera counts differ by at most one.
    """
    by_cam: dict[int, list[int]] = defaultdict(list)
    for index, cam in zip(indices, camids):
        by_cam[cam].append(index)
    cams = [sorted(by_cam)[i] for i in torch.randperm(len(by_cam), generator=g).tolist()]
    pools = {c: [by_cam[c][i] for i in torch.randperm(len(by_cam[c]), generator=g).tolist()] for c in cams}
    if len(indices) < k:  # slot i: camera i mod C, that camera's (i div C)-th image, cycling
        pool = [pools[cams[i % len(cams)]] for i in range(k)]
        return [[p[(i // len(cams)) % len(p)] for i, p in enumerate(pool)]]
    chunks = len(indices) // k
    picked: dict[int, list[int]] = {c: [] for c in cams}
    need, turn = chunks * k, 0
    while need:  # round-robin over the cameras that still have unused images
        cam = cams[turn % len(cams)]
        turn += 1
        if len(picked[cam]) < len(pools[cam]):
            picked[cam].append(pools[cam][len(picked[cam])])
            need -= 1
    # deal camera by camera: item t goes to chunk t mod M, so camera c lands floor/ceil(s_c / M)
    flat = [index for cam in cams for index in picked[cam]]
    return [flat[c::chunks] for c in range(chunks)]


SAMPLERS = ("pk", "pk_camera")


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of the initialised ``torch.distributed`` group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def build_sampler(
    name: str, pids: Sequence[int], camids: Sequence[int], batch_size: int, num_instances: int,
    seed: int = 0, rank: int | None = None, world_size: int | None = None,
) -> PKSampler:
    """The sampler ``name`` (``data.sampler``: pk | pk_camera); rank and world size default to
    the ``torch.distributed`` group's (each rank then draws its own identities per step)."""
    if rank is None or world_size is None:
        rank, world_size = distributed_rank()
    if name == "pk":
        return PKSampler(pids, batch_size, num_instances, seed, rank, world_size)
    if name == "pk_camera":
        return CameraBalancedPKSampler(pids, camids, batch_size, num_instances, seed, rank, world_size)
    raise ConfigError(f"unknown data.sampler {name!r}; expected one of: {', '.join(SAMPLERS)}")
