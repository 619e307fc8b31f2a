"""``torchrun`` support: one process per device, PyTorch's DistributedDataParallel, rank 0 writes.

``torchrun --nproc_per_node N -m reidbench run ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. ``session``
reads them, initialises the default process group (NCCL on CUDA, Gloo on CPU), pins each process
to ``cuda:LOCAL_RANK`` and tears the group down at the end; a plain ``reidbench run`` (no
``WORLD_SIZE``, or 1) is a world of one and touches nothing. Nothing here reimplements PyTorch:
gradients are averaged by DDP, objects moved by ``broadcast_object_list`` / ``all_gather_object``.

What each part of a run does under a world of N (see the README, "Scaling out"):

- data: every rank reads the dataset (rank 0 first, so a synthetic set is generated once); the
  P x K sampler gives each rank its own P identities of every step (``data.sampler``);
  ``train.batch_size`` is per rank, the global batch is N times that;
- model: one DDP wrapper around the model and the loss (whose classifier is trained too); on
  CUDA the BatchNorm layers (the BN neck, the CNNs' BNs) become ``SyncBatchNorm``, so batch
  statistics are those of the global batch; on CPU PyTorch has no SyncBatchNorm, each rank
  normalises with its own P x K batch (a complete batch of the single-process recipe); DDP
  broadcasts rank 0's running statistics before every step, and at the end of every epoch the
  floating-point buffers are averaged over the ranks (``average_buffers``), so the checkpoint
  and every rank hold the same ones;
- records: only rank 0 creates the run folder, holds its lock and writes config, environment,
  history, checkpoints and metrics, and draws progress bars; the others log warnings only;
- evaluation: feature extraction is split by batches over the ranks (batch i on rank i mod N,
  the same batches a single process would run) and gathered in order, so the features, and the
  metrics, are those of one process.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reidbench.engine import progress
from reidbench.errors import ReidbenchError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" when a group is initialised

    @property
    def main(self) -> bool:
        """Whether this process writes records, checkpoints and progress bars."""
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.size, "backend": self.backend}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ReidbenchError(f"environment variable {name}={value!r} is not an integer "
                             "(torchrun sets it)") from None


def world() -> World:
    """The current world: the initialised process group's, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                     str(dist.get_backend()))
    return World()


def device_for(name: str, local_rank: int) -> torch.device:
    """The device of one rank for ``train.device`` ``name``: ``cuda:LOCAL_RANK`` for auto (with
    CUDA) and cuda, the CPU for cpu. An explicit ``cuda:N`` is refused: torchrun picks the GPU."""
    if name.startswith("cuda:"):
        raise ReidbenchError(f"train.device={name} under torchrun: each rank uses cuda:LOCAL_RANK; "
                             "set train.device=cuda (or auto) and choose GPUs with "
                             "CUDA_VISIBLE_DEVICES")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ReidbenchError("train.device=cuda requested but CUDA is not available here")
        if local_rank >= torch.cuda.device_count():
            raise ReidbenchError(f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} "
                                 "visible; start at most that many processes per node")
        return torch.device("cuda", local_rank)
    if name in ("auto", "cpu"):
        return torch.device("cpu")
    raise ReidbenchError(f"train.device={name} is not supported under torchrun; use cpu, cuda or "
                         "auto")


@contextmanager
def session(device_name: str) -> Iterator[tuple[World, torch.device | None]]:
    """The run's world and, under torchrun, its device (None outside torchrun: the caller picks).

    Initialises the default process group from torchrun's environment when ``WORLD_SIZE`` > 1
    and none exists yet, and destroys it on exit; ranks other than 0 draw no progress bars and
    log warnings and errors only (for the rest of the process).
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        current = world()
        yield current, None if current.size == 1 else device_for(device_name, current.local_rank)
        return
    if not dist.is_available():
        raise ReidbenchError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    device = device_for(device_name, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        here = world()
        if not here.main:  # for the rest of this process: its lines would repeat rank 0's
            quiet = logging.getLogger("reidbench")
            quiet.setLevel(max(logging.WARNING, quiet.getEffectiveLevel()))
        log.info("torchrun: %d processes (%s), this is rank %d on %s", here.size, backend,
                 here.rank, device)
        with progress.showing(False) if not here.main else nullcontext():
            yield here, device
    finally:
        dist.destroy_process_group()


def barrier(w: World) -> None:
    if w.size > 1:
        dist.barrier()


def broadcast(value: T, w: World) -> T:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if w.size == 1:
        return value
    box = [value if w.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def on_main(action: Callable[[], T], w: World, what: str) -> T:
    """Run ``action`` on rank 0 and give its result to every rank; an error on rank 0 becomes a
    ReidbenchError on the other ranks too (instead of leaving them waiting)."""
    result: Any = None
    error: str | None = None
    if w.main:
        try:
            result = action()
        except BaseException as exc:
            if w.size > 1:
                broadcast((None, f"{type(exc).__name__}: {exc}"), w)
            raise
    if w.size == 1:
        return result  # type: ignore[no-any-return]
    result, error = broadcast((result, None), w)
    if error is not None:
        raise ReidbenchError(f"rank 0 failed to {what}: {error}")
    return result  # type: ignore[no-any-return]


def wrap_for_training(module: nn.Module, device: torch.device, w: World) -> nn.Module:
    """``module`` inside DistributedDataParallel when the world has several ranks (else as is).

    ``find_unused_parameters``: a step may leave parameters without a gradient (KP-RPE's keypoint
    tables on a batch without keypoints, a loss term's unused head), which DDP must be told."""
    if w.size == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                               find_unused_parameters=True)


def sync_batchnorm(model: nn.Module, device: torch.device, w: World) -> nn.Module:
    """``model`` with its BatchNorm layers as ``SyncBatchNorm`` on CUDA when the world has several
    ranks (the parameters are the same objects, so an optimizer built before keeps them); as is
    on one rank, and on the CPU, where PyTorch's SyncBatchNorm does not run."""
    if w.size == 1 or device.type != "cuda":
        if w.size > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                              for m in model.modules()):
            log.info("BatchNorm on CPU under torchrun: per-rank batch statistics (PyTorch's "
                     "SyncBatchNorm needs CUDA); running statistics averaged over the ranks at "
                     "the end of every epoch")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def average_buffers(modules: Sequence[nn.Module], w: World) -> None:
    """Average the floating-point buffers of ``modules`` over the ranks, in place (BatchNorm's
    running statistics, AdaFace's feature-norm statistics): each rank updated them with its own
    last batch, and they become one value, the mean, on every rank. Integer buffers (batch
    counters) are rank 0's. Nothing on one rank."""
    if w.size == 1:
        return
    for module in modules:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(w.size)
            else:
                dist.broadcast(buffer, src=0)


def parameter_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer of ``module`` (``state_digest``)."""
    return state_digest(module.state_dict())


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict's tensors, in order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def check_in_sync(module: nn.Module, w: World) -> list[str]:
    """Every rank's ``parameter_digest`` of ``module`` (rank order; [] on one rank);
    ReidbenchError when they differ, i.e. the ranks trained different models."""
    if w.size == 1:
        return []
    mine = parameter_digest(module)
    digests: list[Any] = [None] * w.size
    dist.all_gather_object(digests, mine)
    if len(set(digests)) > 1:
        raise ReidbenchError("the ranks ended training with different weights (digests "
                             + ", ".join(f"rank {i}: {d[:12]}" for i, d in enumerate(digests))
                             + "); the run's records are not written")
    return [str(d) for d in digests]


def batch_shard(items: Sequence[T], batch_size: int, w: World) -> list[T]:
    """This rank's items for sharded extraction: the batches i of ``items`` (in batches of
    ``batch_size``) with i mod world size == rank, in order."""
    if w.size == 1:
        return list(items)
    out: list[T] = []
    for start in range(w.rank * batch_size, len(items), w.size * batch_size):
        out.extend(items[start:start + batch_size])
    return out


def unshard_rows(parts: Sequence[np.ndarray | None], total: int, batch_size: int) -> np.ndarray:
    """Rows of every rank's ``batch_shard`` (``parts[r]``: rank r's rows, None if it had none)
    back in the original order of ``total`` rows."""
    world_size = len(parts)
    if world_size == 1:
        assert parts[0] is not None
        return parts[0]
    offsets = [0] * world_size
    rows = []
    for i, start in enumerate(range(0, total, batch_size)):
        r = i % world_size
        n = min(batch_size, total - start)
        part = parts[r]
        assert part is not None
        rows.append(part[offsets[r]:offsets[r] + n])
        offsets[r] += n
    return np.concatenate(rows) if rows else np.zeros((0,))


def gather(value: T, w: World) -> list[T]:
    """Every rank's ``value``, in rank order (``[value]`` on one rank)."""
    if w.size == 1:
        return [value]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, value)
    return out
