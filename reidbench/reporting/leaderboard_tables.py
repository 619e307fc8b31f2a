"""Write the leaderboards: ``reidbench leaderboard`` and ``reidbench bench`` call ``publish``.

Beside ``--out`` (``results/leaderboard.csv``, one row per run, as before) it writes, from the
same run records and the robustness reports in ``--robustness`` (default: ``robustness/``
beside the runs folder):

- ``<stem>-reid.csv`` / ``.md`` and ``<stem>-verification.csv`` / ``.md``: one row per
  (dataset, model, recipe) of each task present (``reporting.aggregate.task_leaderboard``); the
  table of a task with no run is not written, or emptied if an older one is there;
- ``<stem>-comparison.csv`` / ``.md``: every model against the reference model, per
  perturbation (``reporting.aggregate.comparison``);
- ``index.html`` in the same folder: all of it in one self-contained page
  (``reporting.html_report``).

CSV numbers have 6 decimals, empty cells are missing values (a standard deviation of one seed,
an interval without per-sample values). A file there that reidbench did not write is never
replaced: the command stops before writing anything.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import pandas as pd

from reidbench.errors import ConfigError, ReidbenchError
from reidbench.fileio import atomic_write_text
from reidbench.reporting.aggregate import REFERENCE, comparison, curves, task_leaderboard
from reidbench.reporting.leaderboard import _first_line, output_paths, rebuild_leaderboard
from reidbench.reporting.leaderboard_display import (
    TASKS,
    Published,
    display,
    display_comparison,
    markdown,
    verdicts,
)
from reidbench.reporting.tidy import Robustness, robustness_frame, runs_frame

log = logging.getLogger(__name__)

HTML_MARK = '<meta name="generator" content="reidbench leaderboard">'
STD_NOTE = ("mean ± sample standard deviation over seeds (ddof=1; no ± with one seed); n = seeds. "
            "Robustness: mean over severities > 0 of perturbed / clean {metric} (1 = no "
            "degradation), with its 95 % hierarchical bootstrap interval (seeds resampled, then "
            "the evaluation samples within each seed; {resamples} replicates, seeded).")


def table_paths(out_csv: Path) -> dict[str, Path]:
    stem = out_csv.with_suffix("")
    paths = {f"{name}_{ext}": Path(f"{stem}-{name}.{ext}")
             for name in [*TASKS, "comparison"] for ext in ("csv", "md")}
    return paths | {"html": out_csv.parent / "index.html"}


def is_ours(path: Path) -> bool:
    """Whether ``path`` is absent, empty, or a file this module writes."""
    if not path.exists():
        return True
    if path.is_dir():
        return False
    if path.stat().st_size == 0:
        return True
    line = _first_line(path)
    if path.suffix == ".html":
        return line.startswith("<!DOCTYPE html>") and HTML_MARK in path.read_text(encoding="utf-8",
                                                                                  errors="replace")
    if path.suffix == ".md":
        return line.startswith("# reidbench ")
    return line.startswith("dataset,")


def check_tables(out_csv: Path) -> None:
    """ConfigError if a file ``publish`` would write exists and is not one it wrote."""
    for path in table_paths(output_paths(out_csv)[0]).values():
        if not is_ours(path):
            raise ConfigError(f"{path} exists and was not written by reidbench leaderboard; "
                              "nothing was written: choose another --out or move that file away")


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def task_markdown(board: pd.DataFrame, task: str, command: str, resamples: int) -> str:
    from reidbench.reporting.robustness_scores import HEADLINE

    lines = [f"# reidbench leaderboard: {TASKS[task]}", "",
             "One row per (dataset, model, recipe); rows never merge runs that differ in data "
             "(full / subset / synthetic), epochs, pretrained weights, keypoint source, "
             "augmentation or any other recipe setting (`recipe` hash). "
             + STD_NOTE.format(metric=HEADLINE[task], resamples=resamples), "",
             f"Regenerate: `{command}`", "", markdown(display(board, task))]
    return "\n".join(lines)


def comparison_markdown(table: pd.DataFrame, reference: str, command: str) -> str:
    lines = [f"# reidbench comparison: each model minus {reference}", "",
             "Robustness score (and, row `clean`, the clean metric) of each model minus that of "
             f"{reference} trained with the same recipe, averaged over the seeds both have, "
             "paired by seed and by evaluation sample. The interval is the 95 % hierarchical "
             "paired bootstrap (seeds, then samples; the same draws for both models). `beyond "
             "noise` means the interval excludes 0; `within noise` means this benchmark cannot "
             "tell the two apart.", "", f"Regenerate: `{command}`", ""]
    if table.empty:
        lines.append(f"No model shares a recipe and a swept seed with {reference}.\n")
    else:
        lines += [f"- {line}" for line in verdicts(table)] + ["", markdown(display_comparison(table))]
    return "\n".join(lines)


def leaderboard_command(runs_dir: Path, out_csv: Path, robustness_dir: Path | None = None,
                        reference: str = REFERENCE) -> str:
    """The ``reidbench leaderboard`` command that rebuilds these files, defaults left out."""
    args = ["reidbench", "leaderboard"]
    if runs_dir != Path("results/runs"):
        args += ["--runs", str(runs_dir)]
    if out_csv != Path("results/leaderboard.csv"):
        args += ["--out", str(out_csv)]
    if robustness_dir is not None and robustness_dir != runs_dir.parent / "robustness":
        args += ["--robustness", str(robustness_dir)]
    if reference != REFERENCE:
        args += ["--reference", reference]
    return shlex.join(args)


def publish(runs_dir: Path, out_csv: Path, robustness_dir: Path | None = None,
            reference: str = REFERENCE, resamples: int | None = None, seed: int = 0,
            command: str | None = None) -> Published:
    """Rebuild the per-run leaderboard (``reporting.leaderboard.rebuild_leaderboard``), then the
    task leaderboards, the comparison and ``index.html`` beside it. ``command`` is the command
    line the pages quote as the one that regenerates them (default: the explicit
    ``reidbench leaderboard`` command for these folders)."""
    from reidbench.reporting.bootstrap import RESAMPLES
    from reidbench.reporting.html_report import html_page

    resamples = resamples or RESAMPLES
    check_tables(out_csv)
    rows, skipped = rebuild_leaderboard(runs_dir, out_csv)
    if robustness_dir is None:
        robustness_dir = runs_dir.parent / "robustness"
    runs, _ = runs_frame(runs_dir)
    if runs.empty:
        raise ReidbenchError(f"--runs {runs_dir}: no readable run; nothing more was written")
    rob = robustness_frame(robustness_dir, set(runs["run_id"]))
    if rob.frame.empty:
        log.warning("no robustness report about these runs in %s: the leaderboards have no "
                    "robustness columns (sweep them with `reidbench robustness`)", robustness_dir)
    command = command or leaderboard_command(runs_dir, out_csv, robustness_dir, reference)
    result = Published(rows, skipped)
    paths = table_paths(out_csv)
    for task in TASKS:
        board = task_leaderboard(runs, rob, task, resamples, seed)
        if board.empty:  # an older table of this task is emptied, never left stale
            if paths[f"{task}_csv"].exists() or paths[f"{task}_md"].exists():
                _write(paths[f"{task}_csv"], "dataset\n", result)
                _write(paths[f"{task}_md"], f"# reidbench leaderboard: {TASKS[task]}\n\nNo "
                       f"{TASKS[task]} run under {runs_dir}.\n", result)
            continue
        result.boards[task] = board
        result.comparisons[task] = comparison(board, runs, rob, task, reference, resamples, seed)
        result.curves[task] = curves(board, rob, task, resamples, seed)
        _write(paths[f"{task}_csv"], csv_text(board), result)
        _write(paths[f"{task}_md"], task_markdown(board, task, command, resamples), result)
    frames = [c for c in result.comparisons.values() if not c.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    _write(paths["comparison_csv"], csv_text(table) if not table.empty else "dataset\n", result)
    _write(paths["comparison_md"], comparison_markdown(table, reference, command), result)
    _write(paths["html"], html_page(result, rob, command, resamples, reference), result)
    return result


def _write(path: Path, text: str, result: Published) -> None:
    atomic_write_text(path, text)
    result.paths.append(path)


__all__ = ["Published", "Robustness", "check_tables", "publish", "table_paths"]
