"""Robustness of trained models: ``sweep_models`` evaluates several trained models on one
dataset under every perturbation and severity (``evaluation/robustness.py``, through the
dataset's task) and writes the report (``reporting/robustness.py``). Models come from run
records or checkpoint files (``engine.sources``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from reidbench.config import DataConfig
from reidbench.data.perturb import build_perturbation
from reidbench.datasets.base import Split
from reidbench.datasets.catalog import build_dataset
from reidbench.engine import progress
from reidbench.engine.sources import ModelSource, load_model
from reidbench.engine.trainer import eval_transform, select_device
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.robustness import (
    Extractor,
    SweepSpec,
    applicable,
    example_images,
    skipped_perturbations,
    sweep,
)
from reidbench.evaluation.tasks import task_for
from reidbench.reporting.records import git_commit
from reidbench.reporting.robustness import (
    PerSample,
    Row,
    cell_rows,
    examples_png,
    per_sample_arrays,
    report_paths,
    write_report,
)

log = logging.getLogger(__name__)

# the data settings that decide which images are evaluated: every swept model must share them
DATA_IDENTITY = ("name", "root", "keypoints", "synth_ids", "synth_seed", "synth_train_ids")


def shared_data_config(sources: list[ModelSource], data_root: str | None = None) -> DataConfig:
    """The data config every source evaluates on (root replaced by ``data_root`` if given).

    The settings in DATA_IDENTITY must agree; an unset ``synth_*`` setting (None: whatever set
    is there) agrees with any value, and the most specific one is used.
    """
    shared = replace(sources[0].cfg.data, root=data_root or sources[0].cfg.data.root)
    for src in sources[1:]:
        cfg = replace(src.cfg.data, root=data_root or src.cfg.data.root)
        for key in DATA_IDENTITY:
            mine, theirs = getattr(cfg, key), getattr(shared, key)
            if key.startswith("synth_") and (mine is None or theirs is None):
                shared = replace(shared, **{key: theirs if mine is None else mine})
            elif mine != theirs:
                raise ConfigError(
                    f"{src.run_id} was evaluated with data.{key}={mine!r}, another model with "
                    f"{theirs!r}: models compared in one report must see the same images"
                )
    return shared


@dataclass(frozen=True)
class RobustnessResult:
    rows: list[Row]
    paths: dict[str, Path]
    seconds: dict[str, float]  # run id -> seconds of its sweep (model loading included)


def report_id_for(dataset: str, side: str) -> str:
    """The default report name, ``<dataset>-<side>`` (path-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)
    return f"{safe}-{side}"


def check_report_id(report_id: str) -> str:
    """``report_id`` if it is a plain file name stem (letters, digits, ``-``, ``_``, ``.``; no
    folder), else a ConfigError: a report id never points outside the report folder."""
    if not report_id or report_id.startswith(".") or any(
            not (c.isalnum() or c in "-_.") for c in report_id):
        raise ConfigError(f"--id {report_id!r}: a report id is a plain name (letters, digits, "
                          "'-', '_', '.'; not starting with '.'), e.g. market1501-query-mine; "
                          "the folder is --out")
    return report_id


def check_report_free(out_dir: Path, report_id: str) -> None:
    """ReidbenchError if any file of report ``report_id`` exists in ``out_dir``: a sweep never
    replaces a report (e.g. a committed one) unless asked to (``overwrite``)."""
    existing = [p for p in report_paths(out_dir, report_id).values() if p.exists()]
    if not existing:
        return
    made_by = ""
    meta = report_paths(out_dir, report_id)["meta"]
    try:
        command = json.loads(meta.read_text(encoding="utf-8")).get("command") if meta.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        command = None
    if isinstance(command, str) and command:
        made_by = f" (made by `{command}`)"
    raise ReidbenchError(
        f"robustness report {out_dir / report_id}.* already exists{made_by}; nothing was "
        f"evaluated: give --id NAME for a new report (or another --out), or --overwrite to "
        f"replace it"
    )


def sweep_models(
    sources: list[ModelSource], spec: SweepSpec, out_dir: Path, *, report_id: str | None = None,
    data_root: str | None = None, device: str = "auto", batch_size: int | None = None,
    command: str = "", overwrite: bool = False,
) -> RobustnessResult:
    """Sweep every source on the shared dataset and write ``out_dir/<report_id>.{csv,md,png,json}``.

    An existing report of that id is an error checked before anything is evaluated, unless
    ``overwrite`` (``reidbench bench`` regenerates its own report; ``robustness --overwrite``).
    """
    data_cfg, split = sweep_dataset(sources, report_id, data_root)
    return sweep_split(sources, spec, out_dir, data_cfg, split, report_id=report_id, device=device,
                       batch_size=batch_size, command=command, overwrite=overwrite)


def sweep_dataset(sources: list[ModelSource], report_id: str | None = None,
                  data_root: str | None = None) -> tuple[DataConfig, Split]:
    """The checks every sweep starts with (some model, a valid ``report_id``) and the dataset
    all ``sources`` are evaluated on, built once (``sweep_models``, ``extend_sweep``)."""
    if not sources:
        raise ConfigError("no models to evaluate")
    if report_id is not None:
        check_report_id(report_id)
    data_cfg = shared_data_config(sources, data_root)
    return data_cfg, build_dataset(data_cfg)


def sweep_split(
    sources: list[ModelSource], spec: SweepSpec, out_dir: Path, data_cfg: DataConfig, split: Split, *,
    report_id: str | None = None, device: str = "auto", batch_size: int | None = None, command: str = "",
    overwrite: bool = False,
) -> RobustnessResult:
    """``sweep_models`` on the dataset ``sweep_dataset`` built (``data_cfg``, ``split``)."""
    task = task_for(split)
    perturbations = applicable(spec.perturbations, task.num_keypoints)
    skipped = skipped_perturbations(spec.perturbations, task.num_keypoints, data_cfg.name, data_cfg.root)
    for name, why in skipped.items():
        log.warning("robustness: %s skipped: %s", name, why)
    if not perturbations:
        raise ConfigError(f"none of {', '.join(spec.perturbations)} applies to {split.name} "
                          "(it has no keypoints)")
    spec = replace(spec, perturbations=perturbations)
    dev = select_device(device)
    report_id = report_id or report_id_for(split.name, spec.side)
    if not overwrite:
        check_report_free(out_dir, report_id)
    per_model = 1 + len(perturbations) * len(spec.severities)
    log.info("robustness on %s (%s, perturbed side: %s): %d models x %d perturbations x "
             "severities %s", split.name, task.kind, spec.side, len(sources), len(perturbations),
             ",".join(map(str, spec.severities)))
    bar = progress.bar(total=len(sources) * per_model, desc="robustness", unit="cell")
    rows: list[Row] = []
    per_sample: PerSample = {}
    seconds: dict[str, float] = {}
    models_meta: list[dict[str, Any]] = []
    start_all = time.perf_counter()
    for src in sources:
        bar.set_postfix_str(src.cfg.model.name)
        part = sweep_source(src, task, spec, dev, split.name, batch_size, on_cell=lambda: bar.update())
        rows += part.rows
        per_sample.update(part.per_sample)
        seconds[src.run_id] = part.meta["robustness_seconds"]
        models_meta.append(part.meta)
    bar.close()
    meta = {
        "command": command, "dataset": split.name, "task": task.kind, "side": spec.side,
        "seed": spec.seed, "severities": list(spec.severities),
        "perturbations": describe_levels(perturbations, spec.severities),
        "skipped": skipped,
        "models": models_meta, **provenance(dev),
        "robustness_seconds": round(time.perf_counter() - start_all, 2),
    }
    paths = write_report(rows, out_dir, report_id, meta, examples_bytes(task, sources[0], spec, split.name),
                         per_sample)
    log.info("wrote %s (%d rows), %s, %s", paths["csv"], len(rows), paths["markdown"], paths["plot"])
    return RobustnessResult(rows, paths, seconds)


@dataclass(frozen=True)
class SourceSweep:
    """One model's sweep: its CSV rows, per-sample values and its entry of the report's meta."""

    rows: list[Row]
    per_sample: PerSample
    meta: dict[str, Any]


def sweep_source(src: ModelSource, task: Any, spec: SweepSpec, dev: torch.device, dataset: str,
                 batch_size: int | None = None, on_cell: Callable[[], object] | None = None,
                 ) -> SourceSweep:
    """Evaluate one model clean and under ``spec`` (its perturbations must apply to ``task``)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model = load_model(src, task.num_keypoints, dev)
    extractor = Extractor(model, eval_transform(src.cfg), dev, batch_size or src.cfg.eval.batch_size,
                          src.cfg.eval.flip)
    clean, cells = sweep(extractor, task, spec, metric=src.cfg.eval.metric, max_rank=src.cfg.eval.max_rank,
                         on_cell=lambda _: on_cell() if on_cell else None)
    seconds = time.perf_counter() - start
    rows = cell_rows(clean, cells, dataset=dataset, task=task.kind, model=src.cfg.model.name,
                     run_id=src.run_id, side=spec.side, seed=spec.seed,
                     describe=lambda name, s: build_perturbation(name).describe(s))
    log.info("%s (%s): clean %s; %d cells in %.1fs", src.cfg.model.name, src.run_id,
             ", ".join(f"{k} {v:.4f}" for k, v in clean.values.items() if v is not None), len(cells), seconds)
    meta = {
        "model": src.cfg.model.name, "size": src.cfg.model.size, "run_id": src.run_id,
        "checkpoint": str(src.checkpoint), "train_seconds": src.train_seconds,
        "robustness_seconds": round(seconds, 2),
        "robustness_cpu_seconds": round(time.process_time() - cpu_start, 2), "clean": clean.values,
    }
    return SourceSweep(rows, per_sample_arrays(src.run_id, clean, cells), meta)


def describe_levels(perturbations: tuple[str, ...], severities: tuple[int, ...]) -> dict[str, dict[str, str]]:
    """The report meta's ``perturbations``: each level's parameters in words."""
    return {p: {str(s): build_perturbation(p).describe(s) for s in severities} for p in perturbations}


def provenance(dev: torch.device) -> dict[str, Any]:
    """Where and when a sweep ran (the report meta's device, versions, commit and time)."""
    return {"device": str(dev), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "git": git_commit(), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def examples_bytes(task: Any, src: ModelSource, spec: SweepSpec, dataset: str) -> bytes:
    """The report's example grid: the first query (or the second image of pair 0) under every
    perturbation of ``spec`` at every severity, as ``src``'s model sees it."""
    store, stream, index = task.example()
    examples = example_images(store, eval_transform(src.cfg), task.num_keypoints, index,
                              spec.perturbations, spec.severities, spec.seed, stream)
    return examples_png(examples, f"{dataset}: what the models see")
