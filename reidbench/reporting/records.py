"""The run record: ``<output>/<run-id>/`` holds everything a result is rebuilt from.

Files: ``config.yaml`` (resolved config), ``environment.json`` (versions, device, git commit,
command line), ``metrics.json`` (written last: its presence marks a complete run),
``timings.json``, ``history.jsonl`` (per-epoch losses) and ``checkpoint.pt`` (not committed).

Rules every writer and reader here follows:

- A run folder is created atomically and exclusively (``create_run_dir``): two runs started in
  the same second get two folders. A process writing into a run folder holds its lock
  (``run_lock``), so a second ``--resume`` of a run in progress is refused.
- Every file is written atomically (``reidbench/fileio.py``).
- ``config.yaml`` is read strictly (``read_run_config``): a record lacking a section or key is
  an error naming the file and the key, never filled with defaults.
- ``environment.json`` keeps every attempt: its top-level keys describe the attempt that
  started the run (as they always did), and ``"resumes"`` lists one such object per resumed
  attempt, in order, each with ``resumed_after_epoch`` and ``changed`` (the settings the resume
  changed, ``{"train.epochs": [4, 8]}``). Readers wanting the original environment read the
  top-level keys; ``attempts`` gives all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import reidbench
from reidbench.config import RunConfig, config_text, from_dict, load_yaml
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.fileio import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

METRICS, CONFIG, ENVIRONMENT, TIMINGS, HISTORY = (
    "metrics.json", "config.yaml", "environment.json", "timings.json", "history.jsonl",
)
RESUMES = "resumes"  # environment.json: the attempts that resumed the run, in order


def new_run_id(cfg: RunConfig, now: datetime | None = None) -> str:
    """``YYYYmmdd-HHMMSS-<model>-<dataset>-s<seed>`` (UTC); path-safe."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    dataset = "".join(c if c.isalnum() or c in "-_" else "_" for c in cfg.data.name)
    return f"{stamp}-{cfg.model.name}-{dataset}-s{cfg.train.seed}"


def create_run_dir(output: Path, run_id: str, exact: bool = False) -> Path:
    """Create and return a new, empty run folder: ``output/run_id``, else ``run_id-2``, ``-3``...

    ``os.mkdir`` is atomic and fails when the folder exists, so two runs started together
    never share a folder (there is no check-then-create window). With ``exact`` the name is
    not changed: an existing folder is an error.
    """
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReidbenchError(f"cannot create the runs folder {output}: {exc.strerror or exc}") from None
    for n in itertools.count(1):
        path = output / (run_id if n == 1 else f"{run_id}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            if exact:
                raise ReidbenchError(
                    f"run folder {path} already exists; a new run never writes into an existing "
                    "folder (continue it with --resume, or choose another folder)"
                ) from None
            continue
        except OSError as exc:
            raise ReidbenchError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        return path
    raise AssertionError("unreachable")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` while this process writes into it.

    The lock is ``flock(2)`` on the run folder itself: there is no lock file to leave behind,
    and no stale lock after a crash or ``kill -9``, because the operating system releases it
    when the process ends, however it ends. It is advisory: it stops another reidbench process
    (a second ``--resume``, or a resume of a run still training), not other programs. Where
    ``flock`` does not exist (Windows) or the file system does not support it, the run goes on
    unlocked, with a warning.
    """
    try:
        import fcntl
    except ImportError:
        log.warning("cannot lock %s on this platform: do not resume it twice at once", run_dir)
        yield
        return
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as exc:
        raise ReidbenchError(f"cannot open run folder {run_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReidbenchError(
                f"run {run_dir} is in use by another reidbench process (it holds the folder's "
                "lock): wait for it to finish or stop it, then resume"
            ) from None
        except OSError as exc:  # e.g. ENOLCK on a network file system
            log.warning("cannot lock %s (%s): do not resume it twice at once", run_dir,
                        exc.strerror or exc)
        yield
    finally:
        os.close(fd)  # releases the lock


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


def write_run_config(cfg: RunConfig, path: Path) -> None:
    """The resolved config, written atomically (never a half file)."""
    atomic_write_text(path, config_text(cfg))


def missing_keys(cls: type, data: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields of dataclass ``cls`` that ``data`` lacks (a section that is
    not a mapping counts as missing as a whole)."""
    if not isinstance(data, dict):
        return [prefix.rstrip(".") or "config"]
    hints = typing.get_type_hints(cls)
    missing = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            missing.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            missing += missing_keys(hints[f.name], data[f.name], f"{prefix}{f.name}.")
    return missing


# keys added to RunConfig after runs were recorded -> the value that reproduces what those runs
# did (issue 15: random initialisation, fp32); filled in only where a record lacks the key
MIGRATIONS: dict[str, Any] = {
    "model.pretrained": None, "model.pretrained_grid": [], "train.precision": "fp32",
    # issue 19: no training augmentation recipe, the CLS-token embedding
    "data.augment": "none", "model.head": "cls",
    # issue 18: the rotary settings (read only by the rope model; earlier runs had no rope model)
    "model.rope": {"mode": "axial", "theta": None},
}


def migrate(data: Any) -> Any:
    """``data`` (a record's config mapping) with the ``MIGRATIONS`` keys it lacks filled in; a
    record whose section is missing or malformed is left as it is (the strict check names it)."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    for dotted, value in MIGRATIONS.items():
        *parents, key = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key not in node:
            node[key] = copy.deepcopy(value)
    return out


def read_run_config(path: Path) -> RunConfig:
    """The config a run was recorded with, read strictly: every section and key must be in the
    file (a truncated or hand-cut record is an error naming the file and the key, never filled
    with defaults), and every value must be valid.

    A config key added to ``RunConfig`` later is absent from older records: reading them then
    needs an explicit migration here (the value that reproduces what those runs did), never a
    silent default.
    """
    data = migrate(load_yaml(path))
    missing = missing_keys(RunConfig, data)
    if missing:
        extra = missing[1:]
        more = (f" (and {len(extra)} more: {', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})"
                if extra else "")
        raise ConfigError(
            f"run record {path} lacks {missing[0]}{more}; a run record holds the whole resolved "
            "config and is never filled with defaults: the file is truncated or was edited, "
            "restore it"
        )
    try:
        return from_dict(RunConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"run record {path}: {exc}") from None


def write_environment(run_dir: Path, attempt: dict[str, Any]) -> None:
    """``environment.json`` of a new run: the attempt that starts it."""
    atomic_write_json(run_dir / ENVIRONMENT, attempt)


def append_environment(run_dir: Path, attempt: dict[str, Any]) -> None:
    """Add a resumed attempt to ``environment.json``; what is there is kept as it was."""
    path = run_dir / ENVIRONMENT
    env: dict[str, Any] = {}
    if path.is_file():
        try:
            env = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ReidbenchError(
                f"cannot read {path} ({exc.__class__.__name__}: {exc}); a resumed run appends "
                "to it and never overwrites it: restore the file, or move it away to start a "
                "new one"
            ) from None
        if not isinstance(env, dict) or not isinstance(env.get(RESUMES, []), list):
            raise ReidbenchError(f"{path} is not an environment record (a JSON object with an "
                                 f"optional {RESUMES!r} list); restore it or move it away")
    else:
        log.warning("%s is missing; recording this attempt as a resume only", path)
    atomic_write_json(path, {**env, RESUMES: [*env.get(RESUMES, []), attempt]})


def attempts(env: dict[str, Any]) -> list[dict[str, Any]]:
    """Every attempt recorded in an ``environment.json`` object: the one that started the run
    (absent if that record was lost), then each resume."""
    first = {k: v for k, v in env.items() if k != RESUMES}
    return ([first] if first else []) + list(env.get(RESUMES, []))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``history.jsonl`` (losses, learning rate, seconds; a stopped run
    ends with its ``stopped`` record), in order."""
    lines = (run_dir / HISTORY).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def list_runs(output: Path, complete: bool | None = None) -> list[Path]:
    """Run folders under ``output`` (sorted by name, i.e. by start time), filtered by completeness."""
    if not output.is_dir():
        return []
    runs = sorted(p for p in output.iterdir() if (p / CONFIG).is_file())
    if complete is None:
        return runs
    return [p for p in runs if (p / METRICS).is_file() == complete]
