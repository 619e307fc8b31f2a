"""One benchmark run: build data -> train -> evaluate -> write the run record.

Run folders (``reporting/records.py``): a new run creates its folder atomically and
exclusively and holds the folder's lock while it writes; a resumed run takes the same lock, so
two processes never write one run. A run folder is complete (``metrics.json``), resumable
(``checkpoint.pt``) or a recorded stop (``history.jsonl`` ending with ``stopped``), never
half-made: when a new run ends before its first checkpoint exists (Ctrl-C, an error), the files
it wrote and its folder are removed. A resumed run continues the recorded config; only the
``RESUMABLE`` settings may change, and each change is recorded with the attempt in
``environment.json``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from reidbench.config import (
    RunConfig,
    deep_merge,
    from_dict,
    load_yaml,
    parse_override,
    split_size_suffix,
    to_dict,
)
from reidbench.data.loader import ImageDataset
from reidbench.data.records import ImageRecord
from reidbench.datasets.base import FaceSplit, ReidSplit, Split
from reidbench.datasets.catalog import build_dataset
from reidbench.engine import progress
from reidbench.engine.checkpoint import CHECKPOINT, load_checkpoint
from reidbench.engine.sources import load_model, source_from_run
from reidbench.engine.trainer import NonFiniteTraining, eval_transform, select_device, train
from reidbench.errors import ReidbenchError
from reidbench.evaluation.reid import Features, extract_features
from reidbench.evaluation.tasks import task_for
from reidbench.fileio import atomic_write_json
from reidbench.metrics.validate import check_metrics
from reidbench.reporting.records import (
    CONFIG,
    ENVIRONMENT,
    METRICS,
    TIMINGS,
    append_environment,
    create_run_dir,
    environment,
    list_runs,
    new_run_id,
    read_run_config,
    run_lock,
    write_environment,
    write_run_config,
)

log = logging.getLogger(__name__)

# settings a resumed run may change; anything else comes from the interrupted run's record
RESUMABLE = ("train.epochs", "train.device", "train.threads", "data.num_workers")
# where runs are written, not how this one ran: never compared, the record keeps its own
LOCATION = ("output",)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run. ``resumable``: its checkpoint exists and ``--resume`` continues it;
    otherwise ``removed`` says whether the folder this new run had made was removed."""

    def __init__(self, run_dir: Path, resumable: bool, removed: bool) -> None:
        super().__init__(str(run_dir))
        self.run_dir, self.resumable, self.removed = run_dir, resumable, removed


def find_resume_dir(cfg: RunConfig, target: str | None) -> Path:
    """The run to resume: ``target`` (a run folder or id under ``cfg.output``), else the newest
    incomplete run with a checkpoint and the same model, dataset and seed as ``cfg``."""
    output = Path(cfg.output)
    if target:
        path = Path(target) if Path(target).is_dir() else output / target
        if not (path / CONFIG).is_file():
            raise ReidbenchError(f"--resume {target}: no run record (config.yaml) at {path}")
        return path
    key = (cfg.model.name, cfg.data.name, cfg.train.seed)
    candidates = []
    for path in list_runs(output, complete=False):
        if not (path / CHECKPOINT).is_file():
            continue
        try:
            saved = read_run_config(path / CONFIG)
        except ReidbenchError as exc:
            log.warning("--resume: skipped %s: %s", path.name, exc)
            continue
        if (saved.model.name, saved.data.name, saved.train.seed) == key:
            candidates.append(path)
    if not candidates:
        raise ReidbenchError(
            f"--resume: no interrupted {cfg.model.name} run on {cfg.data.name} (seed "
            f"{cfg.train.seed}) with a checkpoint under {output}"
        )
    return candidates[-1]


def resume_request(
    model: str | None, dataset: str | None, config_file: Path | None, flags: dict[str, Any],
    overrides: list[str],
) -> dict[str, Any]:
    """The settings a ``run --resume`` command line gives explicitly, as one nested dict (later
    wins): the ``--config`` file, ``--model`` / ``--dataset``, the flags, each ``--set``."""
    explicit = load_yaml(config_file) if config_file else {}
    names: dict[str, Any] = {}
    if dataset:
        names["data"] = {"name": dataset}
    if model:
        names["model"] = {"name": model}
    explicit = deep_merge(deep_merge(explicit, names), flags)
    for text in overrides:
        explicit = deep_merge(explicit, parse_override(text))
    section = explicit.get("model")
    if isinstance(section, dict) and isinstance(section.get("name"), str):
        name, size = split_size_suffix(section["name"])  # kprpe_small = kprpe of size small
        explicit["model"] = {**section, "name": name,
                             **({"size": size} if size and "size" not in section else {})}
    return explicit


def resume_config(run_dir: Path, explicit: dict[str, Any]) -> RunConfig:
    """The interrupted run's config (read strictly), with the explicitly given resumable
    settings applied.

    ``explicit`` is the nested dict of settings the user gave on this command line
    (``resume_request``); one that is not resumable and differs from the record (the model, the
    dataset, a value of the ``--config`` file, a flag, a ``--set``) is an error.
    """
    saved = read_run_config(run_dir / CONFIG)
    asked = from_dict(RunConfig, deep_merge(to_dict(saved), explicit))
    check_resume(saved, asked, run_dir)
    return replace(asked, output=saved.output)


def check_resume(saved: RunConfig, cfg: RunConfig, run_dir: Path) -> dict[str, list[Any]]:
    """The resumable settings ``cfg`` changes from the record ``saved`` (``{"train.epochs":
    [4, 8]}``); any other difference is a ReidbenchError naming every changed key."""
    before, after = _flat(to_dict(saved)), _flat(to_dict(cfg))
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    fixed = {k: v for k, v in changed.items() if k not in RESUMABLE + LOCATION}
    if fixed:
        raise ReidbenchError(
            "cannot change " + ", ".join(f"{k} (it ran with {a!r}, this command gives {b!r})"
                                         for k, (a, b) in fixed.items())
            + f" when resuming {run_dir.name}; only {', '.join(RESUMABLE)} may change: drop "
            "the other settings from the command, or start a new run"
        )
    return {k: v for k, v in changed.items() if k in RESUMABLE}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def run_experiment(
    cfg: RunConfig, run_dir: Path | None = None, resume: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Train and evaluate; returns the run folder and its metrics.

    With ``resume`` the run continues in ``run_dir`` from its checkpoint (``cfg`` should come
    from ``resume_config``; settings outside ``RESUMABLE`` must match the record). Otherwise a
    new folder is created: ``run_dir`` if given (it must not exist), else a fresh one under
    ``cfg.output``. Ctrl-C raises ``RunInterrupted``.
    """
    start = time.perf_counter()
    if resume and run_dir is None:
        raise ValueError("resume needs the run folder")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    split = build_dataset(cfg.data)
    if task_for(split).train is None:
        raise ReidbenchError(
            f"dataset {cfg.data.name!r} has pairs to verify but no training identities; "
            "`reidbench run` needs a re-ID split or a face set with a train/ part"
        )
    if resume:
        assert run_dir is not None
        try:
            with run_lock(run_dir):
                return _execute(cfg, split, run_dir, device, True, start)
        except KeyboardInterrupt:
            raise RunInterrupted(run_dir, resumable=True, removed=False) from None
    run_dir = (create_run_dir(Path(cfg.output), new_run_id(cfg)) if run_dir is None
               else create_run_dir(run_dir.parent, run_dir.name, exact=True))
    try:
        with run_lock(run_dir):
            return _execute(cfg, split, run_dir, device, False, start)
    except NonFiniteTraining:
        raise  # history.jsonl records the stop
    except BaseException as exc:
        resumable = (run_dir / CHECKPOINT).is_file()
        removed = not resumable and _remove_unfinished(run_dir)
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(run_dir, resumable, removed) from None
        raise


def _execute(
    cfg: RunConfig, split: ReidSplit | FaceSplit, run_dir: Path, device: torch.device,
    resume: bool, start: float,
) -> tuple[Path, dict[str, Any]]:
    """Write the records, train, evaluate (the caller holds the run's lock)."""
    attempt = environment(device)
    if resume:
        if (run_dir / METRICS).is_file():
            raise ReidbenchError(f"run {run_dir} is already complete (metrics.json exists)")
        saved = read_run_config(run_dir / CONFIG)
        changed = check_resume(saved, cfg, run_dir)
        cfg = replace(cfg, output=saved.output)
        after = load_checkpoint(run_dir)["epoch"]  # checked before anything is written
        append_environment(run_dir, {**attempt, "resumed_after_epoch": after, "changed": changed})
        if changed:
            write_run_config(cfg, run_dir / CONFIG)
    else:
        write_run_config(cfg, run_dir / CONFIG)
        write_environment(run_dir, attempt)
    log.info("run %s: %s on %s (%d train ids, %d train images) on %s", run_dir.name,
             cfg.model.name, cfg.data.name, split.num_train_pids, len(split.train), device)

    state = train(cfg, split, run_dir, device, resume=resume)
    metrics, eval_seconds = evaluate_state(cfg, split, state.model, device)
    params = sum(p.numel() for p in state.model.parameters())
    metrics.update({"params": params, "epochs": state.epoch})
    timings = {
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds_this_invocation": round(time.perf_counter() - start, 3),
        "train_images_per_second": round(
            state.step * cfg.train.batch_size / max(state.train_seconds, 1e-9), 2),
    }
    check_metrics(metrics, f"metrics of run {run_dir.name}")  # impossible values never recorded
    atomic_write_json(run_dir / TIMINGS, timings)
    atomic_write_json(run_dir / METRICS, metrics)  # last: marks the run complete
    return run_dir, metrics


def _remove_unfinished(run_dir: Path) -> bool:
    """Remove what a new run wrote before its first checkpoint, and its folder; True if the
    folder is gone. Files this run did not write keep the folder (and are never touched)."""
    for name in (CONFIG, ENVIRONMENT):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        log.warning("kept %s: it holds files this run did not write", run_dir)
        return False
    return True


def evaluate_state(
    cfg: RunConfig, split: Split, model: torch.nn.Module, device: torch.device,
) -> tuple[dict[str, Any], float]:
    """The metrics of ``split``'s task (``evaluation.tasks``: re-ID ranking, pair verification
    or IJB template verification) for ``model`` with the run's evaluation settings, and the
    seconds taken."""
    start = time.perf_counter()
    task = task_for(split)
    tf = eval_transform(cfg)

    def extract(records: list[ImageRecord], desc: str) -> Features:
        dataset = ImageDataset(records, tf, task.num_keypoints)
        with progress.ticks(math.ceil(len(dataset) / cfg.eval.batch_size), desc) as tick:
            return extract_features(model, dataset, cfg.eval.batch_size, device, desc,
                                    flip=cfg.eval.flip, flip_perm=task.flip_perm, on_batch=tick)

    rerank = None
    if cfg.eval.rerank:
        from reidbench.retrieval.rerank import RerankParams  # loads FAISS

        rerank = RerankParams(cfg.eval.rerank_k1, cfg.eval.rerank_k2, cfg.eval.rerank_lambda)
    metrics = task.evaluate(extract, metric=cfg.eval.metric, max_rank=cfg.eval.max_rank,
                            rerank=rerank)
    return metrics, time.perf_counter() - start


def evaluate_run(
    run_dir: Path, dataset: str | None = None, data_root: str | None = None,
    device_name: str | None = None,
) -> dict[str, Any]:
    """Evaluate the model recorded in ``run_dir`` on the test side of ``dataset`` (default: the
    dataset it was trained on), e.g. a test-only set such as IJB-B/C or LFW. The input size,
    normalisation and evaluation settings are the run's."""
    source = source_from_run(run_dir)
    cfg = source.cfg
    data = replace(cfg.data, name=dataset or cfg.data.name,
                   root=data_root if data_root is not None else cfg.data.root)
    if dataset is not None and dataset != source.cfg.data.name:
        data = replace(data, keypoints=None)  # the trained set's sidecar does not apply
    cfg = replace(cfg, data=data)
    device = select_device(device_name or cfg.train.device)
    split = build_dataset(cfg.data)
    model = load_model(source, task_for(split).num_keypoints, device)
    metrics, seconds = evaluate_state(cfg, split, model, device)
    return {"run_id": source.run_id, "model": cfg.model.name, "dataset": cfg.data.name,
            **metrics, "eval_seconds": round(seconds, 3)}
