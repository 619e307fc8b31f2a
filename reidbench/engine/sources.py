"""Trained models to evaluate again: from run records (``<run>/config.yaml`` + ``checkpoint.pt``)
or checkpoint files, and the rebuilt model with its weights.

Used by robustness sweeps (``engine.sweep``) and ``reidbench evaluate --run`` (``engine.run``).
Checkpoints are read safely (``engine.checkpoint``: tensors and plain values only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reidbench.config import RunConfig, resolve_config, split_size_suffix
from reidbench.engine.checkpoint import CHECKPOINT, error_summary, model_weights, read_checkpoint
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.models import build_model
from reidbench.registry import MODELS
from reidbench.reporting.records import CONFIG, TIMINGS, list_runs, read_run_config

log = logging.getLogger(__name__)


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
    """The newest complete run of ``model`` on ``dataset`` under ``runs_dir`` with its checkpoint,
    trained with the default protocol: no geometric augmentation (``data.aug_affine`` 0,
    ``data.augment`` none) and, for ViTs, the CLS head. Runs of other protocols (the misalignment
    study's) are only swept when named with ``--run``."""
    without_weights, other_protocol = [], []
    for run_dir in reversed(list_runs(runs_dir, complete=True)):
        try:
            cfg = read_run_config(run_dir / CONFIG)
        except ReidbenchError:
            continue
        if not _matches(cfg, model) or cfg.data.name != dataset:
            continue
        if cfg.data.aug_affine or cfg.data.augment != "none" or cfg.model.head != "cls":
            other_protocol.append(run_dir.name)
            continue
        if (run_dir / CHECKPOINT).is_file():
            return run_dir
        without_weights.append(run_dir.name)
    hint = f" ({', '.join(without_weights)} lack {CHECKPOINT})" if without_weights else ""
    if other_protocol:
        hint += (f" ({', '.join(other_protocol)} use another training protocol; name one with "
                 "--run)")
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
