"""Extend a recorded robustness report with what it lacks: ``extend_sweep`` evaluates only the
(model, perturbation) blocks missing from ``<out>/<report_id>.csv`` (a model not in it, or a
perturbation a recorded model was not swept under) and rewrites the report with the recorded
rows kept as they are and the new ones merged in.

A study that adds a model or a perturbation to a finished sweep so pays for the new cells only.
The merge is refused (``ReidbenchError``, nothing written) when the record cannot be extended
honestly: other severities, side, perturbation seed or dataset, or a recorded model whose clean
metrics the new evaluation does not reproduce (its weights or its data changed since).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from reidbench.data.perturb import ORDER
from reidbench.engine.sources import ModelSource
from reidbench.engine.sweep import (
    RobustnessResult,
    describe_levels,
    examples_bytes,
    provenance,
    report_id_for,
    sweep_dataset,
    sweep_source,
    sweep_split,
)
from reidbench.engine.trainer import select_device
from reidbench.errors import ReidbenchError
from reidbench.evaluation.robustness import SweepSpec, applicable
from reidbench.evaluation.tasks import task_for
from reidbench.reporting.robustness import (
    PerSample,
    Row,
    read_csv,
    read_per_sample,
    report_paths,
    write_report,
)

log = logging.getLogger(__name__)

CLEAN_TOLERANCE = 1e-6  # a recorded clean metric the new evaluation must reproduce


def missing_blocks(rows: list[Row], run_ids: list[str], perturbations: tuple[str, ...],
                   ) -> dict[str, tuple[str, ...]]:
    """{run id: perturbations of ``perturbations`` it has no rows for}, for every run id of
    ``run_ids`` that lacks any (a model not in ``rows`` lacks them all)."""
    have: dict[str, set[str]] = {}
    for r in rows:
        have.setdefault(str(r["run_id"]), set()).add(str(r["perturbation"]))
    out = {}
    for run_id in run_ids:
        lacking = tuple(p for p in perturbations if p not in have.get(run_id, set()))
        if lacking:
            out[run_id] = lacking
    return out


def _check_compatible(meta: dict[str, Any], rows: list[Row], spec: SweepSpec, dataset: str,
                      path: Path) -> None:
    first = rows[0]
    recorded = {"severities": sorted({int(r["severity"]) for r in rows}), "side": str(first["side"]),
                "seed": int(first["seed"]), "dataset": str(first["dataset"])}
    wanted = {"severities": sorted(spec.severities), "side": spec.side, "seed": spec.seed,
              "dataset": dataset}
    for key, value in wanted.items():
        if recorded[key] != value:
            raise ReidbenchError(f"{path} was swept with {key} {recorded[key]!r}, not {value!r}: it "
                                 "cannot be extended (sweep into a new report id)")
    if meta and meta.get("severities") not in (None, wanted["severities"]):
        raise ReidbenchError(f"{path.with_suffix('.json')} names severities {meta.get('severities')}, "
                             f"its CSV {recorded['severities']}: the record is inconsistent")


def _check_clean(recorded: list[Row], new: list[Row], run_id: str) -> None:
    """The new sweep's clean (severity 0) values of ``run_id`` must equal the recorded ones."""
    old = {str(r["metric"]): r["value"] for r in recorded
           if r["run_id"] == run_id and r["severity"] == 0}
    for r in new:
        if r["severity"] != 0 or str(r["metric"]) not in old:
            continue
        a, b = old[str(r["metric"])], r["value"]
        differs = a is not None and b is not None and abs(a - b) > CLEAN_TOLERANCE
        if (a is None) != (b is None) or differs:
            raise ReidbenchError(f"{run_id}: clean {r['metric']} is {b} now and {a} in the record; its "
                                 "weights or data changed since, so the record is not extended")


def merge_rows(recorded: list[Row], new: list[Row]) -> list[Row]:
    """Recorded rows, then each model's new rows, grouped by model (recorded order first) and
    ordered by perturbation within a model (report order; recorded rows keep their order)."""
    models = list(dict.fromkeys([str(r["run_id"]) for r in recorded] + [str(r["run_id"]) for r in new]))
    rank = {p: i for i, p in enumerate(ORDER)}
    out: list[Row] = []
    for run_id in models:
        mine = [r for r in recorded if r["run_id"] == run_id] + [r for r in new if r["run_id"] == run_id]
        perts = list(dict.fromkeys(str(r["perturbation"]) for r in mine))
        order = {p: (rank.get(p, len(rank)), i) for i, p in enumerate(perts)}
        out += sorted(mine, key=lambda r: order[str(r["perturbation"])])  # stable: severities stay
    return out


def extend_sweep(
    sources: list[ModelSource], spec: SweepSpec, out_dir: Path, *, report_id: str | None = None,
    data_root: str | None = None, device: str = "auto", batch_size: int | None = None, command: str = "",
) -> RobustnessResult:
    """Make ``out_dir/<report_id>`` cover every source under every perturbation of ``spec``:
    a new report if there is none, else the recorded one extended (module docstring). The
    default ``report_id`` is ``sweep_models``' (``<dataset>-<side>``)."""
    data_cfg, split = sweep_dataset(sources, report_id, data_root)
    report_id = report_id or report_id_for(split.name, spec.side)
    paths = report_paths(out_dir, report_id)
    if not paths["csv"].is_file():
        return sweep_split(sources, spec, out_dir, data_cfg, split, report_id=report_id, device=device,
                           batch_size=batch_size, command=command)
    recorded = read_csv(paths["csv"])
    if not recorded:
        raise ReidbenchError(f"{paths['csv']} has no rows")
    meta: dict[str, Any] = json.loads(paths["meta"].read_text()) if paths["meta"].is_file() else {}
    task = task_for(split)
    spec = replace(spec, perturbations=applicable(spec.perturbations, task.num_keypoints))
    _check_compatible(meta, recorded, spec, split.name, paths["csv"])
    todo = missing_blocks(recorded, [src.run_id for src in sources], spec.perturbations)
    if not todo:
        return RobustnessResult(recorded, paths, {})
    dev = select_device(device)
    new: list[Row] = []
    # a record without per-sample values stays without them (a partial file would mislead)
    per_sample: PerSample | None = (read_per_sample(paths["per_sample"]) if paths["per_sample"].is_file()
                                    else None)
    models_meta = list(meta.get("models", []))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for src in sources:
        if src.run_id not in todo:
            continue
        log.info("robustness %s: adding %s under %s", report_id, src.run_id, ", ".join(todo[src.run_id]))
        part = sweep_source(src, task, replace(spec, perturbations=todo[src.run_id]), dev, split.name,
                            batch_size)
        _check_clean(recorded, part.rows, src.run_id)
        new += part.rows
        if per_sample is not None:
            per_sample.update({k: v for k, v in part.per_sample.items() if k not in per_sample})
        seconds[src.run_id] = part.meta["robustness_seconds"]
        if src.run_id not in {m.get("run_id") for m in models_meta}:
            models_meta.append(part.meta)
    rows = merge_rows(recorded, new)
    perturbations = tuple(dict.fromkeys(str(r["perturbation"]) for r in rows))
    meta.update({
        "perturbations": {**meta.get("perturbations", {}), **describe_levels(perturbations, spec.severities)},
        "models": models_meta,
        "extended": [*meta.get("extended", []), {
            "command": command, "added": {k: list(v) for k, v in todo.items()}, **provenance(dev),
            "robustness_seconds": round(time.perf_counter() - start, 2)}],
    })
    examples = examples_bytes(task, sources[0], replace(spec, perturbations=perturbations), split.name)
    written = write_report(rows, out_dir, report_id, meta, examples, per_sample)
    log.info("extended %s: %d rows added (%d in all)", written["csv"], len(new), len(rows))
    return RobustnessResult(read_csv(written["csv"]), written, seconds)  # as recorded (6 decimals)
