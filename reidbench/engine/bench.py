"""The one-command benchmark: ``run_bench`` trains each model with the same recipe through
``run_experiment`` (exactly what ``reidbench run`` does), sweeps them (``engine.sweep``), and
rebuilds the leaderboard and the robustness report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidbench.config import resolve_config
from reidbench.data.perturb import build_perturbation
from reidbench.engine import progress
from reidbench.engine.run import run_experiment
from reidbench.engine.sources import source_from_run
from reidbench.engine.sweep import RobustnessResult, check_report_id, sweep_models
from reidbench.evaluation.robustness import SweepSpec
from reidbench.registry import MODELS
from reidbench.reporting.leaderboard import check_outputs, output_paths, rebuild_leaderboard

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("ape", "rpe", "irpe", "kprpe")


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
    stages = progress.bar(total=len(configs) + 1, desc=f"bench {dataset}", unit="step")
    run_dirs = []
    for i, cfg in enumerate(configs):
        stages.set_postfix_str(f"training {cfg.model.name}")
        log.info("[%d/%d] training %s on %s (%d epochs)", i + 1, len(configs), cfg.model.name,
                 cfg.data.name, cfg.train.epochs)
        run_dir, _ = run_experiment(cfg)
        run_dirs.append(run_dir)
        stages.update()
    stages.set_postfix_str("robustness")
    log.info("[%d/%d] robustness sweep of %d models", len(configs) + 1, len(configs) + 1, len(configs))
    sources = [source_from_run(d) for d in run_dirs]
    robustness = sweep_models(  # bench regenerates its own report: it replaces <id>.* there
        sources, spec, results_dir / "robustness", report_id=report_id,
        device=configs[0].train.device, command=command, overwrite=True,
    )
    stages.update()
    stages.close()
    rows, skipped = rebuild_leaderboard(runs_dir, leaderboard)
    log.info("rebuilt %s (%d runs, %d skipped)", leaderboard, len(rows), len(skipped))
    seconds = time.perf_counter() - start
    log.info("bench %s done in %.1f min", dataset, seconds / 60)
    return BenchResult(run_dirs, robustness, leaderboard, seconds)
