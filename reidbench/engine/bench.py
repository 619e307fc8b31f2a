"""Robustness of trained models, and the one-command benchmark.

``sweep_models`` evaluates several trained models on one dataset under every perturbation and
severity (``evaluation/robustness.py``) and writes the report (``reporting/robustness.py``).
Models come from run records (``results/runs/<run-id>/config.yaml`` + ``checkpoint.pt``) or a
checkpoint file. ``run_bench`` trains each model with the same recipe through ``run_experiment``
(exactly what ``reidbench run`` does), sweeps them, and rebuilds the leaderboard and the report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from reidbench.config import DataConfig, RunConfig, resolve_config, split_size_suffix
from reidbench.data.perturb import build_perturbation
from reidbench.datasets.base import ReidSplit
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.checkpoint import CHECKPOINT, error_summary, model_weights, read_checkpoint
from reidbench.engine.run import run_experiment
from reidbench.engine.trainer import eval_transform, select_device
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.robustness import (
    Extractor,
    SweepData,
    SweepSpec,
    applicable,
    example_images,
    sweep,
)
from reidbench.models import build_model
from reidbench.registry import MODELS
from reidbench.reporting.leaderboard import check_outputs, output_paths, rebuild_leaderboard
from reidbench.reporting.records import CONFIG, TIMINGS, git_commit, list_runs, read_run_config
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

DEFAULT_MODELS = ("ape", "rpe", "irpe", "kprpe")
# the data settings that decide which images are evaluated: every swept model must share them
DATA_IDENTITY = ("name", "root", "keypoints", "synth_ids", "synth_seed", "synth_train_ids")


@dataclass(frozen=True)
class ModelSource:
    """A trained model to sweep: the config it was trained with and its weights."""

    cfg: RunConfig
    checkpoint: Path
    run_id: str  # the run folder's name, or the checkpoint path
    train_seconds: float | None = None


def source_from_run(run_dir: Path) -> ModelSource:
    """The model recorded in ``run_dir`` (config.yaml, read strictly, + checkpoint.pt)."""
    cfg = read_run_config(run_dir / CONFIG)
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        raise ReidbenchError(
            f"run {run_dir.name} has no {CHECKPOINT} (weights are not committed): retrain it with "
            f"`reidbench run --model {cfg.model.name} --dataset {cfg.data.name}` or pass --checkpoint"
        )
    return ModelSource(cfg, ckpt, run_dir.name, _train_seconds(run_dir / TIMINGS))


def _train_seconds(path: Path) -> float | None:
    """``train_seconds`` of a run's timings.json (metadata only: None if absent or unreadable)."""
    if not path.is_file():
        return None
    try:
        seconds = json.loads(path.read_text(encoding="utf-8")).get("train_seconds")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        log.warning("ignored %s: %s", path, exc)
        return None
    return seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def find_run(runs_dir: Path, target: str) -> Path:
    """A run folder given as a path or as an id under ``runs_dir``."""
    path = Path(target) if Path(target).is_dir() else runs_dir / target
    if not (path / CONFIG).is_file():
        raise ReidbenchError(f"--run {target}: no run record (config.yaml) at {path}")
    return path


def _matches(cfg: RunConfig, model: str) -> bool:
    name, size = split_size_suffix(model)
    return cfg.model.name == name and (size is None or cfg.model.size == size)


def latest_run(runs_dir: Path, model: str, dataset: str) -> Path:
    """The newest complete run of ``model`` on ``dataset`` under ``runs_dir`` trained without the
    misalignment augmentation (``data.aug_affine`` 0) and with its checkpoint."""
    without_weights = []
    for run_dir in reversed(list_runs(runs_dir, complete=True)):
        try:
            cfg = read_run_config(run_dir / CONFIG)
        except ReidbenchError:
            continue
        if not _matches(cfg, model) or cfg.data.name != dataset or cfg.data.aug_affine:
            continue
        if (run_dir / CHECKPOINT).is_file():
            return run_dir
        without_weights.append(run_dir.name)
    hint = f" ({', '.join(without_weights)} lack {CHECKPOINT})" if without_weights else ""
    raise ReidbenchError(
        f"no complete {model} run on {dataset} with weights under {runs_dir}{hint}; train one with "
        f"`reidbench run --model {model} --dataset {dataset}`, or pass --run / --checkpoint"
    )


def resolve_sources(
    models: list[str], dataset: str | None, *, runs: list[str] | None = None,
    checkpoints: list[str] | None = None, runs_dir: Path = Path("results/runs"),
    config_file: Path | None = None, overrides: list[str] | None = None,
) -> list[ModelSource]:
    """The models to sweep, in the order given.

    ``runs``: run ids or folders (``models``, if given, must name the same models). ``checkpoints``:
    one file per model; its config is the ``config.yaml`` beside it, else the presets of
    ``dataset`` and the model (+ ``config_file``, ``overrides``). Neither: the latest clean run
    of each model on ``dataset`` (``latest_run``).
    """
    if runs and checkpoints:
        raise ConfigError("give --run or --checkpoint, not both")
    if runs:
        if models and len(models) != len(runs):
            raise ConfigError(f"{len(models)} models but {len(runs)} runs: give one --run per --model")
        sources = [source_from_run(find_run(runs_dir, r)) for r in runs]
        for model, src in zip(models, sources):
            if not _matches(src.cfg, model):
                raise ConfigError(f"run {src.run_id} is a {src.cfg.model.name} model, not {model}")
    elif checkpoints:
        if len(models) != len(checkpoints):
            raise ConfigError(f"{len(models)} models but {len(checkpoints)} checkpoints: give one "
                              "--checkpoint per --model")
        sources = []
        for model, ckpt in zip(models, checkpoints):
            path = Path(ckpt)
            if not path.is_file():
                raise ReidbenchError(f"--checkpoint {ckpt}: no such file")
            if (path.parent / CONFIG).is_file():
                cfg = read_run_config(path.parent / CONFIG)
                if not _matches(cfg, model):
                    raise ConfigError(f"{path.parent / CONFIG} describes a {cfg.model.name} model, "
                                      f"not {model}")
            else:
                cfg = resolve_config(dataset, model, config_file, None, overrides)
            sources.append(ModelSource(cfg, path, str(path)))
    else:
        if not models:
            raise ConfigError("give --model (one or more, comma-separated) or --run")
        if not dataset:
            raise ConfigError("--dataset is needed to find each model's latest run")
        sources = [source_from_run(latest_run(runs_dir, m, dataset)) for m in models]
    for src in sources:
        MODELS.get(src.cfg.model.name)
        if dataset and src.cfg.data.name != dataset:
            raise ConfigError(f"{src.run_id} was trained on {src.cfg.data.name}, not {dataset}")
    return sources


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


def load_model(source: ModelSource, num_keypoints: int, device: torch.device) -> nn.Module:
    """Rebuild the model from its config and load its weights (the global RNG is untouched).

    The checkpoint is read safely (``engine/checkpoint.py``: tensors and plain values only)."""
    cfg = source.cfg
    weights = model_weights(read_checkpoint(source.checkpoint), source.checkpoint)
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg.model, (cfg.data.height, cfg.data.width), num_keypoints)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ReidbenchError(f"checkpoint {source.checkpoint} does not fit a {cfg.model.name} "
                             f"{cfg.model.size} model: {error_summary(exc)}") from None
    return model.to(device).eval()


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
    command: str = "", progress: bool = True, overwrite: bool = False,
) -> RobustnessResult:
    """Sweep every source on the shared dataset and write ``out_dir/<report_id>.{csv,md,png,json}``.

    An existing report of that id is an error checked before anything is evaluated, unless
    ``overwrite`` (``reidbench bench`` regenerates its own report; ``robustness --overwrite``).
    """
    if not sources:
        raise ConfigError("no models to evaluate")
    if report_id is not None:
        check_report_id(report_id)
    data_cfg = shared_data_config(sources, data_root)
    split = build_dataset(data_cfg)
    data = SweepData.from_split(split)
    perturbations = applicable(spec.perturbations, data.num_keypoints)
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
             "severities %s", split.name, data.task, spec.side, len(sources), len(perturbations),
             ",".join(map(str, spec.severities)))
    bar = tqdm(total=len(sources) * per_model, desc="robustness", unit="cell", disable=not progress)
    rows: list[Row] = []
    per_sample: PerSample = {}
    seconds: dict[str, float] = {}
    models_meta: list[dict[str, Any]] = []
    start_all = time.perf_counter()
    for src in sources:
        start, cpu_start = time.perf_counter(), time.process_time()
        bar.set_postfix_str(src.cfg.model.name)
        model = load_model(src, data.num_keypoints, dev)
        extractor = Extractor(model, eval_transform(src.cfg), dev,
                              batch_size or src.cfg.eval.batch_size, src.cfg.eval.flip)
        clean, cells = sweep(extractor, data, spec, metric=src.cfg.eval.metric,
                             max_rank=src.cfg.eval.max_rank, on_cell=lambda _: bar.update())
        seconds[src.run_id] = time.perf_counter() - start
        rows += cell_rows(
            clean, cells, dataset=split.name, task=data.task, model=src.cfg.model.name,
            run_id=src.run_id, side=spec.side, seed=spec.seed,
            describe=lambda name, s: build_perturbation(name).describe(s),
        )
        per_sample.update(per_sample_arrays(src.run_id, clean, cells))
        log.info("%s (%s): clean %s; %d cells in %.1fs", src.cfg.model.name, src.run_id,
                 ", ".join(f"{k} {v:.4f}" for k, v in clean.values.items() if v is not None),
                 len(cells), seconds[src.run_id])
        models_meta.append({
            "model": src.cfg.model.name, "size": src.cfg.model.size, "run_id": src.run_id,
            "checkpoint": str(src.checkpoint), "train_seconds": src.train_seconds,
            "robustness_seconds": round(seconds[src.run_id], 2),
            "robustness_cpu_seconds": round(time.process_time() - cpu_start, 2), "clean": clean.values,
        })
    bar.close()
    if isinstance(split, ReidSplit):  # the first query, or the second image of the first pair
        store, stream, index = data.stores["query"], "query", 0
    else:
        store, stream, index = data.stores["images"], "pairs", int(data.verification.pairs[0, 1])
    examples = example_images(store, eval_transform(sources[0].cfg), data.num_keypoints, index,
                              perturbations, spec.severities, spec.seed, stream)
    meta = {
        "command": command, "dataset": split.name, "task": data.task, "side": spec.side,
        "seed": spec.seed, "severities": list(spec.severities),
        "perturbations": {p: {str(s): build_perturbation(p).describe(s) for s in spec.severities}
                          for p in perturbations},
        "models": models_meta, "device": str(dev), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "git": git_commit(),
        "robustness_seconds": round(time.perf_counter() - start_all, 2),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    paths = write_report(rows, out_dir, report_id, meta,
                         examples_png(examples, f"{split.name}: what the models see"), per_sample)
    log.info("wrote %s (%d rows), %s, %s", paths["csv"], len(rows), paths["markdown"], paths["plot"])
    return RobustnessResult(rows, paths, seconds)


@dataclass(frozen=True)
class BenchResult:
    run_dirs: list[Path]
    robustness: RobustnessResult
    leaderboard: Path
    seconds: float


def run_bench(
    dataset: str, models: list[str], spec: SweepSpec, results_dir: Path, *,
    config_file: Path | None = None, flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None, report_id: str | None = None, command: str = "",
    progress: bool = True,
) -> BenchResult:
    """Train every model on ``dataset`` with the same recipe (presets + ``config_file`` +
    ``flags`` + ``overrides``), records in ``results_dir/runs``; sweep them; rebuild
    ``results_dir/leaderboard.csv`` and ``results_dir/robustness/<report_id>.*``."""
    start = time.perf_counter()
    runs_dir = results_dir / "runs"
    flags = {**(flags or {}), "output": str(runs_dir)}
    configs = [resolve_config(dataset, m, config_file, flags, overrides) for m in models]
    for cfg in configs:  # fail before training anything
        MODELS.get(cfg.model.name)
    if report_id is not None:
        check_report_id(report_id)
    for name in spec.perturbations:
        build_perturbation(name)
    leaderboard = results_dir / "leaderboard.csv"
    check_outputs(output_paths(leaderboard))  # never train for hours, then refuse to write
    stages = tqdm(total=len(configs) + 1, desc=f"bench {dataset}", unit="step", disable=not progress)
    run_dirs = []
    for i, cfg in enumerate(configs):
        stages.set_postfix_str(f"training {cfg.model.name}")
        log.info("[%d/%d] training %s on %s (%d epochs)", i + 1, len(configs), cfg.model.name,
                 cfg.data.name, cfg.train.epochs)
        run_dir, _ = run_experiment(cfg, progress=progress)
        run_dirs.append(run_dir)
        stages.update()
    stages.set_postfix_str("robustness")
    log.info("[%d/%d] robustness sweep of %d models", len(configs) + 1, len(configs) + 1, len(configs))
    sources = [source_from_run(d) for d in run_dirs]
    robustness = sweep_models(  # bench regenerates its own report: it replaces <id>.* there
        sources, spec, results_dir / "robustness", report_id=report_id,
        device=configs[0].train.device, command=command, progress=progress, overwrite=True,
    )
    stages.update()
    stages.close()
    rows, skipped = rebuild_leaderboard(runs_dir, leaderboard)
    log.info("rebuilt %s (%d runs, %d skipped)", leaderboard, len(rows), len(skipped))
    seconds = time.perf_counter() - start
    log.info("bench %s done in %.1f min", dataset, seconds / 60)
    return BenchResult(run_dirs, robustness, leaderboard, seconds)
