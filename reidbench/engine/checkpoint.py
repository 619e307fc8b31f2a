"""Checkpoints: everything needed to continue a run exactly where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reidbench.errors import ReidbenchError
from reidbench.reporting.io import atomic_torch_save

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically: an interrupted save keeps the previous one."""
    path = run_dir / CHECKPOINT
    atomic_torch_save(path, state)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ReidbenchError(f"no checkpoint to resume from at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ReidbenchError(f"checkpoint {path} cannot be read: {exc}") from None
