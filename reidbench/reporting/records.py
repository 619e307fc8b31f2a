"""The run record: ``<output>/<run-id>/`` holds everything a result is rebuilt from.

Files: ``config.yaml`` (resolved config), ``environment.json`` (versions, device, git commit,
command line), ``metrics.json`` (written last: its presence marks a complete run),
``timings.json``, ``history.jsonl`` (per-epoch losses) and ``checkpoint.pt`` (not committed).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import reidbench
from reidbench.config import RunConfig

METRICS, CONFIG, ENVIRONMENT, TIMINGS, HISTORY = (
    "metrics.json", "config.yaml", "environment.json", "timings.json", "history.jsonl",
)


def new_run_id(cfg: RunConfig, now: datetime | None = None) -> str:
    """``YYYYmmdd-HHMMSS-<model>-<dataset>-s<seed>`` (UTC); path-safe."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    dataset = "".join(c if c.isalnum() or c in "-_" else "_" for c in cfg.data.name)
    return f"{stamp}-{cfg.model.name}-{dataset}-s{cfg.train.seed}"


def unique_run_dir(output: Path, run_id: str) -> Path:
    path, n = output / run_id, 1
    while path.exists():
        n += 1
        path = output / f"{run_id}-{n}"
    return path


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """The commit of the reidbench checkout and whether its tree had changes, if known."""
    repo = repo or Path(reidbench.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "reidbench": reidbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "git": git_commit(),
        "command": sys.argv,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def list_runs(output: Path, complete: bool | None = None) -> list[Path]:
    """Run folders under ``output`` (sorted by name, i.e. by start time), filtered by completeness."""
    if not output.is_dir():
        return []
    runs = sorted(p for p in output.iterdir() if (p / CONFIG).is_file())
    if complete is None:
        return runs
    return [p for p in runs if (p / METRICS).is_file() == complete]
