"""The robustness report: CSV (one row per model x perturbation x severity x metric), a PNG plot
(metric vs severity, one panel per perturbation, one line per model), an example grid of what
the models see, and a markdown report with the tables and each model's robustness score.

The markdown (``robustness_markdown``, with the scores and bootstrap intervals of
``robustness_scores``) and the plots (``robustness_plots``) are built from the CSV rows alone
(``rebuild_report`` re-renders them from the file), so no number in the report is typed by
hand. This module holds the rows, the files and their reading and writing. Columns are
documented in ``results/robustness/README.md``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.errors import ReidbenchError
from reidbench.evaluation.robustness import Cell
from reidbench.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from reidbench.reporting.io import csv_text
from reidbench.reporting.robustness_markdown import to_markdown
from reidbench.reporting.robustness_plots import examples_png, plot_png
from reidbench.reporting.robustness_scores import (
    HEADLINE,
    PerSample,
    Row,
    bootstrap_differences,
    robustness_scores,
)

__all__ = [  # the report's parts, built in robustness_{scores,markdown,plots}
    "COLUMNS", "HEADLINE", "PerSample", "Row", "bootstrap_differences", "cell_rows", "examples_png",
    "per_sample_arrays", "per_sample_bytes", "plot_png", "read_csv", "read_per_sample",
    "rebuild_report", "report_paths", "robustness_scores", "to_csv", "to_markdown", "write_report",
]

COLUMNS = [
    "dataset", "task", "model", "run_id", "side", "seed", "perturbation", "severity", "parameters",
    "metric", "value", "stderr", "clean", "ratio", "num_samples",
]
def cell_rows(
    clean: Cell, cells: Iterable[Cell], *, dataset: str, task: str, model: str, run_id: str,
    side: str, seed: int, describe: Callable[[str, int], str],
) -> list[Row]:
    """CSV rows of one model's sweep; ``describe(perturbation, severity)`` names the parameters."""
    rows = []
    for cell in cells:
        for metric, value in cell.values.items():
            ref = clean.values.get(metric)
            ratio = value / ref if value is not None and ref else None
            rows.append({
                "dataset": dataset, "task": task, "model": model, "run_id": run_id, "side": side,
                "seed": seed, "perturbation": cell.perturbation, "severity": cell.severity,
                "parameters": describe(cell.perturbation, cell.severity), "metric": metric,
                "value": value, "stderr": cell.stderr.get(metric), "clean": ref, "ratio": ratio,
                "num_samples": cell.num_samples,
            })
    return rows


def per_sample_arrays(run_id: str, clean: Cell, cells: Iterable[Cell]) -> PerSample:
    """Per-sample values of one model's sweep, keyed by (run id, perturbation, severity); the
    clean cell is ``(run_id, "clean", 0)``."""
    return {(run_id, c.perturbation, c.severity): c.per_sample for c in [clean, *cells]
            if c.per_sample is not None}


def per_sample_bytes(arrays: PerSample) -> bytes:
    """``.npz`` of the per-sample values (float32): ``keys`` (tab-joined run, perturbation,
    severity) and ``ap_<i>`` for the i-th key."""
    keys = list(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, keys=np.array(["\t".join(map(str, k)) for k in keys]),
                        **{f"ap_{i}": np.asarray(arrays[k], np.float32) for i, k in enumerate(keys)})
    return buf.getvalue()


def read_per_sample(path: Path) -> PerSample:
    with np.load(path) as data:
        out = {}
        for i, key in enumerate(data["keys"]):
            run, pert, sev = str(key).split("\t")
            out[(run, pert, int(sev))] = data[f"ap_{i}"]
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def to_csv(rows: list[Row]) -> str:
    return csv_text(rows, COLUMNS, _fmt)


def read_csv(path: Path) -> list[Row]:
    """Rows of a robustness CSV with numbers parsed (empty cells -> None)."""
    if not path.is_file():
        raise ReidbenchError(f"robustness CSV {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise ReidbenchError(f"{path} is not a robustness CSV: columns {reader.fieldnames}, "
                                 f"expected {COLUMNS}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            try:
                row: Row = dict(raw)
                for key in ("seed", "severity", "num_samples"):
                    row[key] = int(raw[key])
                for key in ("value", "stderr", "clean", "ratio"):
                    row[key] = float(raw[key]) if raw[key] else None
            except (TypeError, ValueError) as exc:
                raise ReidbenchError(f"{path}:{lineno}: malformed row ({exc})") from None
            rows.append(row)
    return rows


def report_paths(out_dir: Path, report_id: str) -> dict[str, Path]:
    return {
        "csv": out_dir / f"{report_id}.csv", "markdown": out_dir / f"{report_id}.md",
        "plot": out_dir / f"{report_id}.png", "examples": out_dir / f"{report_id}-examples.png",
        "meta": out_dir / f"{report_id}.json", "per_sample": out_dir / f"{report_id}-per-sample.npz",
    }


def write_report(
    rows: list[Row], out_dir: Path, report_id: str, meta: dict[str, Any] | None = None,
    examples: bytes | None = None, per_sample: PerSample | None = None,
) -> dict[str, Path]:
    """Write ``<id>.csv``, ``<id>.json`` (meta), ``<id>-examples.png`` and
    ``<id>-per-sample.npz`` (if given), then the plot and the markdown rendered from them."""
    paths = report_paths(out_dir, report_id)
    atomic_write_text(paths["csv"], to_csv(rows))
    if per_sample:
        atomic_write_bytes(paths["per_sample"], per_sample_bytes(per_sample))
    else:
        paths["per_sample"].unlink(missing_ok=True)  # never pair a new CSV with an old sidecar
    if meta is not None:
        atomic_write_json(paths["meta"], meta)
    if examples is not None:
        atomic_write_bytes(paths["examples"], examples)
    rebuild_report(paths["csv"])
    return paths


def rebuild_report(csv_path: Path) -> tuple[Path, Path]:
    """Re-render ``<id>.md`` and ``<id>.png`` beside ``csv_path`` from the CSV (and its
    ``<id>.json`` meta, ``<id>-per-sample.npz`` and ``<id>-examples.png`` when present)."""
    rows = read_csv(csv_path)
    if not rows:
        raise ReidbenchError(f"{csv_path} has no rows")
    paths = report_paths(csv_path.parent, csv_path.stem)
    meta = json.loads(paths["meta"].read_text()) if paths["meta"].is_file() else {}
    title = f"{rows[0]['dataset']}: perturbed {rows[0]['side']}"
    atomic_write_bytes(paths["plot"], plot_png(rows, title))
    per_sample = read_per_sample(paths["per_sample"]) if paths["per_sample"].is_file() else None
    text = to_markdown(rows, meta, paths["csv"].name, paths["plot"].name,
                       paths["examples"].name if paths["examples"].is_file() else "", per_sample)
    atomic_write_text(paths["markdown"], text)
    return paths["markdown"], paths["plot"]
