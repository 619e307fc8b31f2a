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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
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
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) ^ 0x5EED)
        for step in self.global_schedule():
            mine = step[self.rank * self.p:(self.rank + 1) * self.p]
            for chunk in mine:
                for index in chunk:
                    yield index, int(torch.randint(2**31 - 1, (1,), generator=g).item())
