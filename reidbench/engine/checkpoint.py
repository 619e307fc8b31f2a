"""Checkpoints: everything needed to continue a run exactly where it stopped, in a safe format.

A checkpoint holds tensors and plain values only (dicts, lists, numbers, strings, None): the
model, loss and optimizer state dicts, the scheduler's state, counters, the per-epoch history
and the RNG states as byte tensors. Every reader goes through ``read_checkpoint``, which loads
with ``torch.load(weights_only=True)``: a file that would need any other object (a pickled
``__reduce__`` payload, a class instance) is refused before anything in it runs, with one line
naming the file. ``load_checkpoint`` (resume) then checks the structure of a training
checkpoint and ``model_weights`` (evaluation, robustness) that of model weights, so a foreign
or truncated file is one clear error, never a traceback.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reidbench.errors import ReidbenchError
from reidbench.fileio import atomic_torch_save, load_torch_file

CHECKPOINT = "checkpoint.pt"

# what `save_checkpoint` writes: key -> accepted types
TRAINING_KEYS: dict[str, tuple[type, ...]] = {
    "model": (dict,), "loss": (dict,), "optimizer": (dict,), "scheduler": (dict,),
    "epoch": (int,), "step": (int,), "train_seconds": (int, float), "history": (list,),
    "torch_rng": (torch.Tensor,), "cuda_rng": (list, type(None)),
}
SAFE_FORMAT = ("reidbench reads checkpoints with weights_only=True (tensors and plain values "
               "only) and never runs code from a file; use a checkpoint written by `reidbench "
               "run`, or a state dict saved with torch.save(model.state_dict(), path)")


class CheckpointError(ReidbenchError):
    """A checkpoint file is missing, unreadable, unsafe or not in the expected format."""


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically: an interrupted save keeps the previous one.

    The state is checked against the format first, so nothing a safe reader would refuse is
    ever written."""
    path = run_dir / CHECKPOINT
    check_training_checkpoint(state, path)
    atomic_torch_save(path, state)
    return path


def read_checkpoint(path: Path) -> Any:
    """The object in ``path``, loaded safely (``weights_only=True``, tensors on the CPU).

    Anything that is not tensors and plain values is refused by the unpickler before it is
    built: no code in the file runs."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        return load_torch_file(path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded safely ({_unpickler_reason(exc)}); {SAFE_FORMAT}"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated file, not a PyTorch file, corrupt archive
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error_summary(exc)}): the file is truncated or "
            "not a PyTorch checkpoint"
        ) from None


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The training checkpoint of ``run_dir``, read safely and checked (``TRAINING_KEYS``)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    return check_training_checkpoint(read_checkpoint(path), path)


def check_training_checkpoint(obj: Any, path: Path) -> dict[str, Any]:
    """``obj`` if it is a training checkpoint as ``save_checkpoint`` writes it, else a
    CheckpointError naming ``path`` and the first key that is missing or malformed."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} is not a reidbench training checkpoint: it "
                              f"holds a {type(obj).__name__}, expected a dict")
    missing = [k for k in TRAINING_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a reidbench training checkpoint: it "
                              f"lacks {', '.join(repr(k) for k in missing)}")
    for key, types in TRAINING_KEYS.items():
        value = obj[key]
        if not isinstance(value, types) or isinstance(value, bool):
            _malformed(path, key, f"a {type(value).__name__}, expected "
                       + " or ".join(t.__name__ for t in types))
    for key in ("model", "loss"):
        _check_tensors(obj[key], path, key)
    for key in TRAINING_KEYS:
        _check_plain(obj[key], path, key)
    if obj["epoch"] < 0 or obj["step"] < 0:
        _malformed(path, "epoch", f"epoch {obj['epoch']}, step {obj['step']}")
    optimizer = obj["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(
            optimizer.get("param_groups"), list):
        _malformed(path, "optimizer", "no 'state' dict and 'param_groups' list")
    if not all(isinstance(record, dict) for record in obj["history"]):
        _malformed(path, "history", "entries that are not dicts")
    rngs = [obj["torch_rng"], *(obj["cuda_rng"] or [])]
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rngs):
        _malformed(path, "torch_rng", "RNG states that are not byte tensors")
    return obj


def model_weights(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict in a checkpoint: a training checkpoint's ``model`` entry, or the
    whole object when it is a plain state dict (name -> tensor)."""
    weights = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    if not isinstance(weights, Mapping) or not weights:
        raise CheckpointError(
            f"checkpoint {path} holds no model weights: expected a reidbench checkpoint (a dict "
            f"with 'model') or a state dict of tensors, got a {type(weights).__name__}"
        )
    _check_tensors(weights, path, "model" if weights is not obj else "state dict")
    return dict(weights)


def _check_tensors(mapping: Any, path: Path, key: str) -> None:
    for name, value in mapping.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            _malformed(path, key, f"entry {name!r} = a {type(value).__name__}, expected a tensor")


def _check_plain(value: Any, path: Path, where: str) -> None:
    """Tensors and plain values only, all the way down (what ``weights_only=True`` reads)."""
    if isinstance(value, (torch.Tensor, int, float, str, type(None))):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, path, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                _malformed(path, where, f"a key {key!r} that is not a string or an integer")
            _check_plain(item, path, f"{where}.{key}")
        return
    _malformed(path, where, f"a {type(value).__name__}; a checkpoint holds tensors and plain "
                            "values only")


def _malformed(path: Path, key: str, what: str) -> None:
    raise CheckpointError(f"checkpoint {path} is malformed: {key!r} holds {what}")


def error_summary(exc: BaseException) -> str:
    """One line of an exception's message: its first line, and the next one too when the first
    only introduces it (``Error(s) in loading state_dict for M:``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _unpickler_reason(exc: BaseException) -> str:
    """The one useful line of torch's weights-only error, e.g. ``Unsupported global: GLOBAL
    posix.system``."""
    text = str(exc)
    _, found, rest = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if found else []
    if not lines:
        return "it holds objects other than tensors and plain values"
    return lines[0].split(" was not an allowed global")[0].split(". Please")[0]
