"""Tidy tables of the records: one row per run (``runs_frame``) and one row per run x
perturbation x severity x metric of the robustness reports (``robustness_frame``), plus the
per-sample values the intervals resample. Every summary of the leaderboard is a group-by of
these frames (``reporting.aggregate``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reidbench.errors import ReidbenchError
from reidbench.reporting.leaderboard import collect_rows
from reidbench.reporting.recipe import recipe_columns
from reidbench.reporting.records import CONFIG, METRICS, read_run_config
from reidbench.reporting.robustness import PerSample, read_csv, read_per_sample, report_paths

log = logging.getLogger(__name__)


def runs_frame(runs_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per complete, sound run (the per-run leaderboard columns plus the recipe key
    columns of ``reporting.recipe``); and the skipped runs (``"<run>: <problem>"``)."""
    rows, skipped = collect_rows(runs_dir)
    out = []
    for row in rows:
        run_dir = runs_dir / row["run_id"]
        try:
            cfg = read_run_config(run_dir / CONFIG)
            metrics = json.loads((run_dir / METRICS).read_text(encoding="utf-8"))
            out.append(row | recipe_columns(cfg, row["task"], metrics))
        except (ReidbenchError, OSError, ValueError) as exc:  # read a moment ago: a race
            skipped.append(f"{row['run_id']}: {exc}")
    frame = pd.DataFrame(out)
    if not frame.empty:
        frame = frame.sort_values("run_id", kind="stable").reset_index(drop=True)
    return frame, skipped


@dataclass
class Robustness:
    """The robustness reports found for the runs: ``frame`` has the robustness CSV columns plus
    ``report`` (the report id); ``per_sample`` the per-sample values by (run id, perturbation,
    severity); ``reports`` the report ids read, with their meta (command, ...)."""

    frame: pd.DataFrame
    per_sample: PerSample = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    examples: dict[str, Path] = field(default_factory=dict)  # report id -> example grid PNG


def robustness_frame(robustness_dir: Path | None, run_ids: set[str], side: str = "query") -> Robustness:
    """Rows of every robustness report in ``robustness_dir`` (``<id>.csv``) about ``run_ids``
    with perturbed side ``side``. A run found in two reports is taken from the first by name,
    with a warning naming both; an unreadable report is skipped with a warning."""
    empty = Robustness(pd.DataFrame(columns=["report", "run_id"]))
    if robustness_dir is None or not robustness_dir.is_dir():
        return empty
    frames, per_sample, reports, examples = [], {}, {}, {}
    taken: dict[str, str] = {}
    for csv_path in sorted(robustness_dir.glob("*.csv")):
        report = csv_path.stem
        try:
            rows = read_csv(csv_path)
        except ReidbenchError as exc:
            log.warning("skipped robustness report %s: %s", csv_path, exc)
            continue
        rows = [r for r in rows if r["run_id"] in run_ids and r["side"] == side]
        mine = sorted({r["run_id"] for r in rows})
        for run in [r for r in mine if r in taken]:
            log.warning("run %s is in robustness reports %s and %s: the leaderboard uses %s",
                        run, taken[run], report, taken[run])
        rows = [r for r in rows if r["run_id"] not in taken]
        if not rows:
            continue
        for run in {r["run_id"] for r in rows}:
            taken[run] = report
        frames.append(pd.DataFrame(rows).assign(report=report))
        paths = report_paths(robustness_dir, report)
        try:
            meta = json.loads(paths["meta"].read_text(encoding="utf-8")) if paths["meta"].is_file() else {}
        except (OSError, UnicodeDecodeError, ValueError):
            meta = {}
        reports[report] = meta if isinstance(meta, dict) else {}
        if paths["examples"].is_file():
            examples[report] = paths["examples"]
        if paths["per_sample"].is_file():
            wanted = {r["run_id"] for r in rows}
            try:
                per_sample.update({k: np.asarray(v) for k, v in read_per_sample(paths["per_sample"]).items()
                                   if k[0] in wanted})
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignored %s (%s): no intervals for its runs", paths["per_sample"], exc)
    if not frames:
        return empty
    return Robustness(pd.concat(frames, ignore_index=True), per_sample, reports, examples)

