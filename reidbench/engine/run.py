"""One benchmark run: build data -> train -> evaluate -> write the run record.

Run folders (``reporting/records.py``): a new run creates its folder atomically and
exclusively and holds the folder's lock while it writes; a resumed run takes the same lock, so
two processes never write one run. A run folder is complete (``metrics.json``), resumable
(``checkpoint.pt``) or a recorded stop (``history.jsonl`` ending with ``stopped``), never
half-made: when a new run ends before its first checkpoint exists (Ctrl-C, an error), the files
it wrote and its folder are removed. A resumed run continues the recorded config; only the
``RESUMABLE`` settings may change, and each change is recorded with the attempt in
``environment.json``.

Starting weights: a run with ``model.pretrained`` writes what was loaded, resampled, missing or
unexpected to ``pretrained.json`` (the full report of ``models.pretrained``) when it loads them,
and ``metrics.json`` names them under the record key ``pretrained`` (path, sha256 and the count of
each kind of tensor), which the leaderboard shows.

Under ``torchrun`` (``engine.distributed``) every rank runs this; rank 0 alone creates and locks
the run folder and writes every record, the ranks' final weights are compared (a mismatch is an
error, never a record) and ``metrics.json`` gains ``distributed`` (world size, backend, each
rank's weights digest). Feature extraction is sharded over the ranks and gathered in order.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from reidbench.config import (
    RunConfig,
    deep_merge,
    flat_settings,
    from_dict,
    load_yaml,
    parse_override,
    split_size_suffix,
    to_dict,
)
from reidbench.config_rules import CNN_MODELS
from reidbench.data.loader import ImageDataset
from reidbench.data.records import ImageRecord
from reidbench.datasets.base import FaceSplit, ReidSplit, Split
from reidbench.datasets.catalog import build_dataset, data_root
from reidbench.engine import distributed, progress
from reidbench.engine.checkpoint import CHECKPOINT, load_checkpoint
from reidbench.engine.distributed import World
from reidbench.engine.sources import load_model, source_from_run
from reidbench.engine.tensorboard import write_evaluation
from reidbench.engine.trainer import NonFiniteTraining, eval_transform, select_device, train
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.reid import Features, extract_features
from reidbench.evaluation.tasks import task_for
from reidbench.fileio import atomic_write_json
from reidbench.keypoints.dataset_sidecar import keypoint_block, keypoint_warning
from reidbench.metrics.validate import check_metrics
from reidbench.models.pretrained import SUFFIXES, PretrainedReport
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
PRETRAINED = "pretrained.json"  # what model.pretrained loaded (models.pretrained's report)


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
    before, after = flat_settings(to_dict(saved)), flat_settings(to_dict(cfg))
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
    if not resume:
        check_pretrained(cfg)
    with distributed.session(cfg.train.device) as (world, rank_device):
        device = rank_device or select_device(cfg.train.device)
        split = _build_split(cfg, world)
        if task_for(split).train is None:
            raise ReidbenchError(
                f"dataset {cfg.data.name!r} has pairs to verify but no training identities; "
                "`reidbench run` needs a re-ID split or a face set with a train/ part"
            )
        if resume:
            assert run_dir is not None
            try:
                with _lock(run_dir, world):
                    return _execute(cfg, split, run_dir, device, True, start, world)
            except KeyboardInterrupt:
                raise RunInterrupted(run_dir, resumable=True, removed=False) from None
        target = run_dir
        run_dir = distributed.on_main(
            lambda: (create_run_dir(Path(cfg.output), new_run_id(cfg)) if target is None
                     else create_run_dir(target.parent, target.name, exact=True)),
            world, "create the run folder")
        try:
            with _lock(run_dir, world):
                return _execute(cfg, split, run_dir, device, False, start, world)
        except NonFiniteTraining:
            raise  # history.jsonl records the stop
        except BaseException as exc:
            resumable = (run_dir / CHECKPOINT).is_file()
            removed = not resumable and world.main and remove_unfinished(run_dir)
            if isinstance(exc, KeyboardInterrupt):
                raise RunInterrupted(run_dir, resumable, removed) from None
            raise


def check_pretrained(cfg: RunConfig) -> None:
    """Refuse ``model.pretrained`` before anything is written: a CNN (the weights are a ViT's),
    an unknown file type or a missing file, one line each."""
    path = cfg.model.pretrained
    if path is None:
        return
    if cfg.model.name in CNN_MODELS:
        raise ConfigError(f"model.pretrained loads ViT weights into ape, rpe, irpe, kprpe or poster; "
                          f"{cfg.model.name} is a CNN (torchreid loads its own weights)")
    if Path(path).suffix not in SUFFIXES:
        raise ConfigError(f"model.pretrained={path}: unknown file type {Path(path).suffix!r}; "
                          f"expected one of {', '.join(SUFFIXES)}")
    if not Path(path).is_file():
        raise ReidbenchError(f"model.pretrained={path}: no such file (weights are never "
                             "downloaded: give the path of a local checkpoint)")


def _build_split(cfg: RunConfig, world: World) -> ReidSplit | FaceSplit:
    """The dataset, read by every rank: rank 0 first, so that a synthetic set is generated once."""
    if world.main:
        split = build_dataset(cfg.data)
        distributed.barrier(world)
        return split  # type: ignore[return-value]
    distributed.barrier(world)
    return build_dataset(cfg.data)  # type: ignore[return-value]


def _lock(run_dir: Path, world: World) -> Any:
    """The run folder's lock, held by the rank that writes (rank 0)."""
    return run_lock(run_dir) if world.main else nullcontext()


def _execute(
    cfg: RunConfig, split: ReidSplit | FaceSplit, run_dir: Path, device: torch.device,
    resume: bool, start: float, world: World | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the records, train, evaluate (the caller holds the run's lock; under torchrun,
    rank 0 writes and every rank trains and extracts its share of the features)."""
    world = world or World()
    attempt = environment(device)
    if world.size > 1:
        attempt["distributed"] = world.to_dict()
    if resume:
        if (run_dir / METRICS).is_file():
            raise ReidbenchError(f"run {run_dir} is already complete (metrics.json exists)")
        saved = read_run_config(run_dir / CONFIG)
        changed = check_resume(saved, cfg, run_dir)
        cfg = replace(cfg, output=saved.output)
        after = load_checkpoint(run_dir)["epoch"]  # checked before anything is written
        if world.main:
            append_environment(run_dir, {**attempt, "resumed_after_epoch": after,
                                         "changed": changed})
            if changed:
                write_run_config(cfg, run_dir / CONFIG)
    elif world.main:
        write_run_config(cfg, run_dir / CONFIG)
        write_environment(run_dir, attempt)
    log.info("run %s: %s on %s (%d train ids, %d train images) on %s", run_dir.name,
             cfg.model.name, cfg.data.name, split.num_train_pids, len(split.train), device)
    warning = keypoint_warning(cfg.model.name, cfg.data.name, data_root(cfg.data.root), split,
                               cfg.data.keypoints)
    if warning is not None and world.main:
        log.warning("%s", warning)  # never silent (issue 16): the fallback is not the model

    def record_pretrained(report: PretrainedReport) -> None:
        if world.main:
            atomic_write_json(run_dir / PRETRAINED, report.to_dict())

    state = train(cfg, split, run_dir, device, resume=resume, world=world,
                  on_pretrained=record_pretrained)
    digests = distributed.check_in_sync(state.model, world)
    metrics, eval_seconds = evaluate_state(cfg, split, state.model, device, world)
    params = sum(p.numel() for p in state.model.parameters())
    metrics.update({"params": params, "epochs": state.epoch,
                    "keypoints": keypoint_block(split, cfg.data.keypoints)})  # source, coverage
    pretrained = pretrained_block(run_dir)
    if pretrained is not None:
        metrics["pretrained"] = pretrained
    if world.size > 1:
        metrics["distributed"] = {**world.to_dict(), "weights_sha256_by_rank": digests}
    timings = {
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds_this_invocation": round(time.perf_counter() - start, 3),
        "train_images_per_second": round(
            state.step * cfg.train.batch_size * world.size / max(state.train_seconds, 1e-9), 2),
    }
    check_metrics(metrics, f"metrics of run {run_dir.name}")  # impossible values never recorded
    if world.main:
        write_evaluation(run_dir, state.epoch, metrics)  # TensorBoard eval/ curves
        atomic_write_json(run_dir / TIMINGS, timings)
        atomic_write_json(run_dir / METRICS, metrics)  # last: marks the run complete
    distributed.barrier(world)  # the record is complete when any rank returns
    return run_dir, metrics


def pretrained_block(run_dir: Path) -> dict[str, Any] | None:
    """The ``pretrained`` entry of ``metrics.json``: the weights a run started from (path,
    sha256, target module) and how many tensors were loaded, resampled, folded, left missing,
    kept initialised, ignored or unexpected, from the run's ``pretrained.json``; None without
    one (random initialisation)."""
    path = run_dir / PRETRAINED
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        block = {k: report[k] for k in ("path", "sha256", "target")}
        block.update({k: len(report[k]) for k in ("loaded", "resampled", "folded", "missing",
                                                  "initialised", "ignored", "unexpected")})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ReidbenchError(f"cannot read {path} ({type(exc).__name__}: {exc}); it records the "
                             "weights this run started from: restore it") from None
    return block


def remove_unfinished(run_dir: Path) -> bool:
    """Remove what a new run wrote before its first checkpoint, and its folder; True if the
    folder is gone. Files this run did not write keep the folder (and are never touched)."""
    for name in (CONFIG, ENVIRONMENT, PRETRAINED):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        log.warning("kept %s: it holds files this run did not write", run_dir)
        return False
    return True


def evaluate_state(
    cfg: RunConfig, split: Split, model: torch.nn.Module, device: torch.device,
    world: World | None = None,
) -> tuple[dict[str, Any], float]:
    """The metrics of ``split``'s task (``evaluation.tasks``: re-ID ranking, pair verification
    or IJB template verification) for ``model`` with the run's evaluation settings, and the
    seconds taken. Under torchrun (``world``) each rank extracts its batches and every rank
    gets all the features, in order (``distributed.batch_shard``)."""
    start = time.perf_counter()
    task = task_for(split)
    tf = eval_transform(cfg)
    world = world or World()

    def extract_all(records: list[ImageRecord], desc: str) -> Features:
        dataset = ImageDataset(records, tf, task.num_keypoints)
        with progress.ticks(math.ceil(len(dataset) / cfg.eval.batch_size), desc) as tick:
            return extract_features(model, dataset, cfg.eval.batch_size, device, desc,
                                    flip=cfg.eval.flip, flip_perm=task.flip_perm, on_batch=tick)

    def extract(records: list[ImageRecord], desc: str) -> Features:
        if world.size == 1:
            return extract_all(records, desc)
        shard = distributed.batch_shard(records, cfg.eval.batch_size, world)
        parts = distributed.gather(extract_all(shard, desc) if shard else None, world)
        size = cfg.eval.batch_size

        def rows(field: str) -> Any:
            return distributed.unshard_rows(
                [None if p is None else getattr(p, field) for p in parts], len(records), size)

        return Features(rows("feats"), rows("pids"), rows("camids"))

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
