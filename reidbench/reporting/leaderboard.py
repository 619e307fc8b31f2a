"""Rebuild the leaderboard from run records only: no number is typed by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from reidbench.reporting.io import atomic_write_text, csv_text
from reidbench.reporting.records import CONFIG, ENVIRONMENT, METRICS, TIMINGS, list_runs

log = logging.getLogger(__name__)

# column -> where it comes from; documented in results/README.md
COLUMNS = [
    "dataset", "task", "model", "size",
    "mAP", "mINP", "rank1", "rank5", "rank10", "num_valid_queries",  # re-ID rows
    "accuracy", "accuracy_std", "auc", "eer", "tar_at_far_1e-2", "num_pairs",  # verification rows
    "params", "epochs", "seed", "train_seconds", "eval_seconds", "device", "git_commit", "run_id",
]
REID = ("mAP", "mINP", "rank1", "rank5", "rank10", "num_valid_queries")
VERIFICATION = ("accuracy", "accuracy_std", "auc", "eer", "num_pairs")


def run_row(run_dir: Path) -> dict[str, Any]:
    """One leaderboard row from a complete run folder."""
    cfg = yaml.safe_load((run_dir / CONFIG).read_text())
    metrics = json.loads((run_dir / METRICS).read_text())
    timings = json.loads((run_dir / TIMINGS).read_text()) if (run_dir / TIMINGS).is_file() else {}
    env = json.loads((run_dir / ENVIRONMENT).read_text()) if (run_dir / ENVIRONMENT).is_file() else {}
    commit = (env.get("git") or {}).get("commit") or ""
    task = metrics.get("task", "reid")
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    if task == "verification":
        row.update({k: metrics[k] for k in VERIFICATION})
        tar = metrics.get("tar_at_far", {}).get("0.01")
        row["tar_at_far_1e-2"] = "" if tar is None else tar
    else:
        row.update({k: metrics[k] for k in REID})
    return row | {
        "dataset": cfg["data"]["name"],
        "task": task,
        "model": cfg["model"]["name"],
        "size": cfg["model"]["size"],
        "params": metrics.get("params", ""),
        "epochs": metrics.get("epochs", cfg["train"]["epochs"]),
        "seed": cfg["train"]["seed"],
        "train_seconds": timings.get("train_seconds", ""),
        "eval_seconds": timings.get("eval_seconds", ""),
        "device": env.get("device_name", env.get("device", "")),
        "git_commit": commit[:12] + ("+dirty" if (env.get("git") or {}).get("dirty") else ""),
        "run_id": run_dir.name,
    }


def collect_rows(runs_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every complete run, best first within each dataset (mAP for re-ID, accuracy for
    verification); and the skipped runs."""
    rows, skipped = [], []
    for run_dir in list_runs(runs_dir, complete=True):
        try:
            rows.append(run_row(run_dir))
        except (KeyError, ValueError, OSError, yaml.YAMLError) as exc:
            skipped.append(f"{run_dir.name}: unreadable record ({exc.__class__.__name__}: {exc})")
    rows.sort(key=lambda r: (r["dataset"], -float(r["mAP"] if r["task"] == "reid" else r["accuracy"]),
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


def rebuild_leaderboard(runs_dir: Path, out_csv: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Write ``out_csv`` and its markdown copy (same name, .md) from ``runs_dir``."""
    rows, skipped = collect_rows(runs_dir)
    for reason in skipped:
        log.warning("skipped run %s", reason)
    atomic_write_text(out_csv, to_csv(rows))
    atomic_write_text(out_csv.with_suffix(".md"), to_markdown(rows))
    return rows, skipped
