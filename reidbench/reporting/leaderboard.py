"""Rebuild the leaderboard from run records only: no number is typed by hand.

Safety: a rebuild never makes things worse. The runs folder must exist and hold at least one
complete, sound run record, else nothing is written. The output is a ``.csv`` with its markdown
copy beside it (same name, ``.md``); an existing file there that is not a leaderboard is never
replaced. A malformed record (unreadable file, missing key, a metric that is not a number in
its range) is skipped with a warning naming the run and the problem, and counted.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from reidbench.errors import ConfigError, ReidbenchError
from reidbench.fileio import atomic_write_text
from reidbench.reporting.io import csv_text
from reidbench.reporting.records import (
    CONFIG,
    ENVIRONMENT,
    METRICS,
    TIMINGS,
    list_runs,
    read_run_config,
)

log = logging.getLogger(__name__)

# column -> where it comes from; documented in results/README.md
COLUMNS = [
    "dataset", "task", "model", "size",
    "mAP", "mINP", "rank1", "rank5", "rank10", "num_valid_queries",  # re-ID rows
    "accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-2", "num_pairs",  # verification rows
    "params", "epochs", "seed", "train_seconds", "eval_seconds", "device", "git_commit", "run_id",
]
REID_FRACTIONS = ("mAP", "mINP", "rank1", "rank5", "rank10")
VERIFICATION_FRACTIONS = ("accuracy", "accuracy_std", "auc", "eer")
REID = (*REID_FRACTIONS, "num_valid_queries")
VERIFICATION = (*VERIFICATION_FRACTIONS, "num_pairs")


class RecordError(ReidbenchError):
    """A run record that cannot be listed; the message says which file and what is wrong."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
        raise RecordError(f"{path.name}: cannot read ({reason})") from None


def _mapping(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RecordError(f"{name}: expected a JSON object, got {type(data).__name__}")
    return data


def _fraction(data: dict[str, Any], key: str, name: str) -> float:
    """``data[key]`` as a float in [0, 1]."""
    if key not in data:
        raise RecordError(f"{name}: no {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise RecordError(f"{name}: {key}={value!r} is not a number in [0, 1]")
    return float(value)


def _count(data: dict[str, Any], key: str, name: str, default: Any = None) -> Any:
    """``data[key]`` as a non-negative integer (``default`` when absent and a default is given)."""
    if key not in data and default is not None:
        return default
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{name}: {key}={value!r} is not a count (an integer >= 0)")
    return value


def _seconds(data: dict[str, Any], key: str) -> Any:
    value = data.get(key, "")
    if value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise RecordError(f"{TIMINGS}: {key}={value!r} is not a number of seconds")
    return value


def first_attempt(env: Any) -> dict[str, Any]:
    """The environment of the attempt that started a run, from ``environment.json`` in any of
    its forms: one flat object (older runs), a flat object for the first attempt plus a
    ``"resumes"`` list, or ``{"attempts": [first, ...]}``. Git commit and device come from it."""
    env = _mapping(env, ENVIRONMENT)
    listed = env.get("attempts")
    if listed is not None:
        if not isinstance(listed, list) or not listed or not isinstance(listed[0], dict):
            raise RecordError(f"{ENVIRONMENT}: 'attempts' is not a non-empty list of objects")
        return listed[0]
    first = {k: v for k, v in env.items() if k != "resumes"}
    if not first and isinstance(env.get("resumes"), list) and env["resumes"]:
        first = env["resumes"][0]  # the original record was lost: the earliest one kept
    return _mapping(first, ENVIRONMENT)


def _provenance(env: dict[str, Any]) -> tuple[str, str]:
    """(device, git commit column) of one attempt's environment."""
    git = env.get("git") or {}
    if not isinstance(git, dict):
        raise RecordError(f"{ENVIRONMENT}: 'git' is not an object")
    commit = git.get("commit") or ""
    device = env.get("device_name", env.get("device", ""))
    if not isinstance(commit, str) or not isinstance(device, str):
        raise RecordError(f"{ENVIRONMENT}: git commit or device is not a string")
    return device, commit[:12] + ("+dirty" if git.get("dirty") else "")


def run_row(run_dir: Path) -> dict[str, Any]:
    """One leaderboard row from a complete run folder; RecordError if anything in it is malformed."""
    try:
        cfg = read_run_config(run_dir / CONFIG)
    except ReidbenchError as exc:
        raise RecordError(str(exc)) from None
    metrics = _mapping(_read_json(run_dir / METRICS), METRICS)
    timings = _mapping(_read_json(run_dir / TIMINGS), TIMINGS) if (run_dir / TIMINGS).is_file() else {}
    env = first_attempt(_read_json(run_dir / ENVIRONMENT)) if (run_dir / ENVIRONMENT).is_file() else {}
    device, commit = _provenance(env)
    task = metrics.get("task", "reid")
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    if task == "verification":
        row.update({k: _fraction(metrics, k, METRICS) for k in VERIFICATION_FRACTIONS})
        row["num_pairs"] = _count(metrics, "num_pairs", METRICS)
        tars = metrics.get("tar_at_far", {})
        if not isinstance(tars, dict):
            raise RecordError(f"{METRICS}: tar_at_far is not an object")
        row["tar_at_far_1e-2"] = "" if tars.get("0.01") is None else _fraction(tars, "0.01", METRICS)
    elif task == "reid":
        row.update({k: _fraction(metrics, k, METRICS) for k in REID_FRACTIONS})
        row["num_valid_queries"] = _count(metrics, "num_valid_queries", METRICS)
    else:
        raise RecordError(f"{METRICS}: unknown task {task!r}; expected reid or verification")
    return row | {
        "dataset": cfg.data.name,
        "task": task,
        "model": cfg.model.name,
        "size": cfg.model.size,
        "params": _count(metrics, "params", METRICS, default=""),
        "epochs": _count(metrics, "epochs", METRICS, default=cfg.train.epochs),
        "seed": cfg.train.seed,
        "train_seconds": _seconds(timings, "train_seconds"),
        "eval_seconds": _seconds(timings, "eval_seconds"),
        "device": device,
        "git_commit": commit,
        "run_id": run_dir.name,
    }


def collect_rows(runs_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every complete run, best first within each dataset (mAP for re-ID, accuracy for
    verification); and the skipped runs (``"<run>: <problem>"``)."""
    rows, skipped = [], []
    for run_dir in list_runs(runs_dir, complete=True):
        try:
            rows.append(run_row(run_dir))
        except RecordError as exc:
            skipped.append(f"{run_dir.name}: {exc}")
    rows.sort(key=lambda r: (r["dataset"], -(r["mAP"] if r["task"] == "reid" else r["accuracy"]),
                             r["run_id"]))
    return rows, skipped


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_csv(rows: list[dict[str, Any]]) -> str:
    return csv_text(rows, COLUMNS, _fmt)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def output_paths(out_csv: Path) -> tuple[Path, Path]:
    """(CSV, markdown) of ``--out``: it must name a ``.csv``; the markdown copy sits beside it."""
    if out_csv.suffix.lower() != ".csv":
        raise ConfigError(f"--out {out_csv}: the leaderboard is written as CSV, so its name must end "
                          f"in .csv (e.g. {out_csv.with_suffix('.csv')}); the markdown copy goes "
                          "beside it with .md")
    return out_csv, out_csv.with_suffix(".md")


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline()
    except UnicodeDecodeError:
        return "\0"  # not text: not ours
    except OSError as exc:
        raise ReidbenchError(f"cannot read {path}: {exc.strerror or exc}") from None


def is_leaderboard(path: Path) -> bool:
    """Whether ``path`` (a CSV or its markdown copy) looks like a leaderboard written here (or
    is empty): its header names the dataset first and the run id."""
    line = _first_line(path)
    if not line.strip():
        return path.stat().st_size == 0
    if path.suffix.lower() == ".md":
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
    else:
        cells = next(csv.reader([line]), [])
    return bool(cells) and cells[0] == "dataset" and "run_id" in cells


def check_outputs(paths: tuple[Path, ...]) -> None:
    """Refuse to replace anything that is not a leaderboard (a folder, someone else's file)."""
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"--out: {path} is a directory; give a file name ending in .csv")
        if path.exists() and not is_leaderboard(path):
            raise ConfigError(f"{path} exists and is not a leaderboard (its first line is not the "
                              "leaderboard header); nothing was written: choose another --out or "
                              "move that file away")


def check_runs_dir(runs_dir: Path) -> list[Path]:
    """The run records under ``runs_dir``; ReidbenchError if there is no such folder or no record."""
    if not runs_dir.exists():
        raise ReidbenchError(f"--runs {runs_dir} does not exist; nothing was written (the runs "
                             "folder holds one <run-id>/ per run, default results/runs: run the "
                             "command in the project folder, or give --runs)")
    if not runs_dir.is_dir():
        raise ReidbenchError(f"--runs {runs_dir} is not a folder; nothing was written")
    records = list_runs(runs_dir)
    if not records:
        raise ReidbenchError(f"--runs {runs_dir} holds no run records (<run-id>/config.yaml); "
                             "nothing was written")
    return records


def rebuild_leaderboard(runs_dir: Path, out_csv: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Write ``out_csv`` and its markdown copy (same name, .md) from ``runs_dir``.

    Nothing is written unless the runs folder yields at least one row and both outputs are
    absent or leaderboards. Returns the rows and the skipped runs (each ``"<run>: <problem>"``).
    """
    paths = output_paths(out_csv)
    check_outputs(paths)
    records = check_runs_dir(runs_dir)
    rows, skipped = collect_rows(runs_dir)
    for reason in skipped:
        log.warning("skipped run %s", reason)
    incomplete = [p.name for p in records if not (p / METRICS).is_file()]
    if incomplete:
        log.warning("skipped %d incomplete run(s) (no %s: still training, interrupted or failed; "
                    "`reidbench run --resume RUN` continues one): %s", len(incomplete), METRICS,
                    ", ".join(incomplete))
    if not rows:
        incomplete = len(records) - len(skipped) - len(rows)
        raise ReidbenchError(
            f"--runs {runs_dir}: no complete, readable run among {len(records)} records "
            f"({incomplete} incomplete, {len(skipped)} malformed); nothing was written"
        )
    atomic_write_text(paths[0], to_csv(rows))
    atomic_write_text(paths[1], to_markdown(rows))
    return rows, skipped
