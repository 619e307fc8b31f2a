"""The one-command benchmark: ``run_bench`` trains each model once per seed with the same recipe
through ``run_experiment`` (exactly what ``reidbench run`` does), sweeps them all
(``engine.sweep``), and rebuilds the leaderboards, the comparison and ``index.html``
(``reporting.leaderboard_tables.publish``) and the robustness report.

Resumable: a (model, seed) whose run is already recorded under ``<results>/runs`` with the same
resolved config (the output folder aside) is not trained again; an interrupted one with a
checkpoint is resumed from it. Running the same command again after a stop (Ctrl-C, a killed
background job, a reboot) therefore only does what is missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reidbench.config import RunConfig, resolve_config, to_dict
from reidbench.data.perturb import build_perturbation
from reidbench.engine import progress
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.run import run_experiment
from reidbench.engine.sources import source_from_run
from reidbench.engine.sweep import RobustnessResult, check_report_id, sweep_models
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.robustness import SweepSpec
from reidbench.registry import MODELS
from reidbench.reporting.leaderboard import check_outputs, output_paths
from reidbench.reporting.leaderboard_display import Published
from reidbench.reporting.leaderboard_tables import check_tables, publish
from reidbench.reporting.records import CONFIG, METRICS, list_runs, read_run_config

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("ape", "rpe", "irpe", "kprpe")


@dataclass(frozen=True)
class BenchResult:
    run_dirs: list[Path]
    robustness: RobustnessResult
    leaderboard: Path
    seconds: float
    reused: list[Path]  # recorded runs that were not trained again


# settings a recorded run may differ in and still be reused: where it was written, and how fast
REUSE_IGNORES = ("train.threads", "data.num_workers", "data.cache_images")


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    tree = to_dict(cfg)
    tree.pop("output", None)
    for dotted in REUSE_IGNORES:
        section, key = dotted.split(".")
        tree[section].pop(key, None)
    return tree


def recorded_run(runs_dir: Path, cfg: RunConfig) -> tuple[Path | None, bool]:
    """The newest run under ``runs_dir`` recorded with ``cfg`` (same resolved config, output
    folder and ``REUSE_IGNORES`` aside) that a bench can use: (folder, complete). A complete run needs its
    checkpoint (the sweep loads it); an incomplete one is usable when it has a checkpoint to
    resume from. (None, False) when there is none."""
    wanted = _comparable(cfg)
    for path in reversed(list_runs(runs_dir)):
        try:
            saved = read_run_config(path / CONFIG)
        except ReidbenchError:
            continue  # the leaderboard names malformed records
        if _comparable(saved) != wanted:
            continue
        complete, has_weights = (path / METRICS).is_file(), (path / CHECKPOINT).is_file()
        if complete and not has_weights:
            log.warning("run %s has this recipe and seed but no %s (the sweep needs it): "
                        "training it again", path.name, CHECKPOINT)
            continue
        if has_weights:
            return path, complete
    return None, False


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; ConfigError for anything else (duplicates, negatives, words)."""
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r}: expected distinct integers >= 0, e.g. 0,1,2")
    return seeds


def run_bench(
    dataset: str, models: list[str], spec: SweepSpec, results_dir: Path, *,
    config_file: Path | None = None, flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None, report_id: str | None = None, command: str = "",
    seeds: list[int] | None = None, reference: str = "ape",
) -> BenchResult:
    """Train every model on ``dataset`` once per seed of ``seeds`` (default: the seed of the
    config) with the same recipe (presets + ``config_file`` + ``flags`` + ``overrides``),
    records in ``results_dir/runs``, reusing recorded runs (module docstring); sweep them all;
    rebuild ``results_dir/leaderboard*.{csv,md}``, ``results_dir/index.html`` and
    ``results_dir/robustness/<report_id>.*``."""
    start = time.perf_counter()
    runs_dir = results_dir / "runs"
    flags = {**(flags or {}), "output": str(runs_dir)}
    base = [resolve_config(dataset, m, config_file, flags, overrides) for m in models]
    configs = [replace(cfg, train=replace(cfg.train, seed=seed))
               for seed in (seeds if seeds is not None else [base[0].train.seed]) for cfg in base]
    for cfg in base:  # fail before training anything
        MODELS.get(cfg.model.name)
    if report_id is not None:
        check_report_id(report_id)
    for name in spec.perturbations:
        build_perturbation(name)
    leaderboard = results_dir / "leaderboard.csv"
    check_outputs(output_paths(leaderboard))  # never train for hours, then refuse to write
    check_tables(leaderboard)
    stages = progress.bar(total=len(configs) + 1, desc=f"bench {dataset}", unit="step")
    run_dirs, reused = [], []
    for i, cfg in enumerate(configs):
        what = f"{cfg.model.name} seed {cfg.train.seed}"
        stages.set_postfix_str(f"training {what}")
        found, complete = recorded_run(runs_dir, cfg)
        if complete and found is not None:
            log.info("[%d/%d] %s on %s: recorded in %s, not trained again", i + 1, len(configs),
                     what, cfg.data.name, found.name)
            run_dir = found
            reused.append(found)
        elif found is not None:
            log.info("[%d/%d] resuming %s on %s from %s", i + 1, len(configs), what,
                     cfg.data.name, found.name)
            run_dir, _ = run_experiment(replace(cfg, output=str(found.parent)), found, resume=True)
        else:
            log.info("[%d/%d] training %s on %s (%d epochs)", i + 1, len(configs), what,
                     cfg.data.name, cfg.train.epochs)
            run_dir, _ = run_experiment(cfg)
        run_dirs.append(run_dir)
        stages.update()
    stages.set_postfix_str("robustness")
    log.info("[%d/%d] robustness sweep of %d runs", len(configs) + 1, len(configs) + 1, len(configs))
    sources = [source_from_run(d) for d in run_dirs]
    robustness = sweep_models(  # bench regenerates its own report: it replaces <id>.* there
        sources, spec, results_dir / "robustness", report_id=report_id,
        device=configs[0].train.device, command=command, overwrite=True,
    )
    stages.update()
    stages.close()
    published: Published = publish(runs_dir, leaderboard, results_dir / "robustness",
                                   reference=reference)
    log.info("rebuilt %s and %s (%d runs, %d skipped)", leaderboard,
             ", ".join(p.name for p in published.paths), len(published.rows), len(published.skipped))
    seconds = time.perf_counter() - start
    log.info("bench %s done in %.1f min", dataset, seconds / 60)
    return BenchResult(run_dirs, robustness, leaderboard, seconds, reused)
