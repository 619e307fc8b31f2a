"""One benchmark run: build data -> train -> evaluate -> write the run record."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from reidbench.config import RunConfig, from_dict, load_yaml, save_config
from reidbench.data.loader import ImageDataset
from reidbench.datasets.base import FaceSplit, ReidSplit, TemplateSet, VerificationSet
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.trainer import eval_transform, keypoint_count, select_device, train
from reidbench.errors import ReidbenchError
from reidbench.evaluation.reid import evaluate_reid, extract_features
from reidbench.evaluation.verification import evaluate_verification
from reidbench.reporting.io import atomic_write_json
from reidbench.reporting.records import (
    CONFIG,
    ENVIRONMENT,
    METRICS,
    TIMINGS,
    environment,
    list_runs,
    new_run_id,
    unique_run_dir,
)

log = logging.getLogger(__name__)

# settings a resumed run may change; anything else comes from the interrupted run's record
RESUMABLE = {"train": {"epochs", "device", "threads"}, "data": {"num_workers"}}


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
        saved = load_yaml(path / CONFIG)
        saved_key = (saved["model"]["name"], saved["data"]["name"], saved["train"]["seed"])
        if (path / CHECKPOINT).is_file() and saved_key == key:
            candidates.append(path)
    if not candidates:
        raise ReidbenchError(
            f"--resume: no interrupted {cfg.model.name} run on {cfg.data.name} (seed "
            f"{cfg.train.seed}) with a checkpoint under {output}"
        )
    return candidates[-1]


def resume_config(run_dir: Path, explicit: dict[str, Any]) -> RunConfig:
    """The interrupted run's config, with the explicitly given resumable settings applied.

    ``explicit`` is the nested dict of settings the user gave on this command line; giving a
    setting that is not resumable and differs from the record is an error.
    """
    saved = load_yaml(run_dir / CONFIG)
    merged = dict(saved)
    for section, values in explicit.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key in RESUMABLE.get(section, set()):
                merged[section] = {**merged[section], key: value}
            elif saved.get(section, {}).get(key) != value:
                raise ReidbenchError(
                    f"cannot change {section}.{key} when resuming {run_dir.name} (it ran with "
                    f"{saved.get(section, {}).get(key)!r}); only "
                    + ", ".join(f"{s}.{k}" for s, ks in RESUMABLE.items() for k in sorted(ks))
                    + " may change"
                )
    return from_dict(RunConfig, merged)


def run_experiment(
    cfg: RunConfig, run_dir: Path | None = None, resume: bool = False, progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Train and evaluate; returns the run folder and its metrics.

    With ``resume`` the run continues in ``run_dir`` from its checkpoint (``cfg`` should come
    from ``resume_config``); otherwise a new folder under ``cfg.output`` is made.
    """
    start = time.perf_counter()
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run folder")
        if (run_dir / METRICS).is_file():
            raise ReidbenchError(f"run {run_dir} is already complete (metrics.json exists)")
    elif run_dir is None:
        run_dir = unique_run_dir(Path(cfg.output), new_run_id(cfg))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    split = build_dataset(cfg.data)
    if not isinstance(split, (ReidSplit, FaceSplit)):
        raise ReidbenchError(
            f"dataset {cfg.data.name!r} has pairs to verify but no training identities; "
            "`reidbench run` needs a re-ID split or a face set with a train/ part"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG)
    atomic_write_json(run_dir / ENVIRONMENT, environment(device))
    log.info("run %s: %s on %s (%d train ids, %d train images) on %s", run_dir.name,
             cfg.model.name, cfg.data.name, split.num_train_pids, len(split.train), device)

    state = train(cfg, split, run_dir, device, resume=resume, progress=progress)
    metrics, eval_seconds = evaluate_state(cfg, split, state.model, device, progress)
    params = sum(p.numel() for p in state.model.parameters())
    metrics.update({"params": params, "epochs": state.epoch})
    timings = {
        "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "wall_seconds_this_invocation": round(time.perf_counter() - start, 3),
        "train_images_per_second": round(
            state.step * cfg.train.batch_size / max(state.train_seconds, 1e-9), 2),
    }
    atomic_write_json(run_dir / TIMINGS, timings)
    atomic_write_json(run_dir / METRICS, metrics)  # last: marks the run complete
    return run_dir, metrics


def evaluate_state(
    cfg: RunConfig, split: ReidSplit | FaceSplit | VerificationSet | TemplateSet,
    model: torch.nn.Module, device: torch.device, progress: bool = True,
) -> tuple[dict[str, Any], float]:
    """Re-ID metrics (query vs gallery), verification metrics (pairs) or IJB template metrics,
    and the seconds taken."""
    start = time.perf_counter()
    k = keypoint_count(split)
    tf = eval_transform(cfg)
    perm = tuple(split.keypoint_schema.flip_permutation()) if split.keypoint_schema else None
    flip = {"flip": cfg.eval.flip, "flip_perm": perm}
    if isinstance(split, TemplateSet):
        from reidbench.datasets.ijb import evaluate_templates

        feats = extract_features(model, ImageDataset(split.images, tf, k), cfg.eval.batch_size,
                                 device, "template image features", progress, **flip)
        metrics = {"task": "templates", **evaluate_templates(split, feats.feats)}
        log.info("templates: %d pairs of %d templates, AUC %.4f", metrics["num_pairs"],
                 metrics["num_templates"], metrics["auc"])
        return metrics, time.perf_counter() - start
    if isinstance(split, FaceSplit | VerificationSet):
        vs = split.verification if isinstance(split, FaceSplit) else split
        feats = extract_features(model, ImageDataset(vs.images, tf, k), cfg.eval.batch_size,
                                 device, "pair image features", progress, **flip)
        metrics = {"task": "verification", **evaluate_verification(vs, feats)}
        log.info("verification: %d pairs, %d-fold accuracy %.4f +- %.4f, AUC %.4f",
                 metrics["num_pairs"], metrics["num_folds"], metrics["accuracy"],
                 metrics["accuracy_std"], metrics["auc"])
        return metrics, time.perf_counter() - start
    query = extract_features(model, ImageDataset(split.query, tf, k), cfg.eval.batch_size,
                             device, "query features", progress, **flip)
    gallery = extract_features(model, ImageDataset(split.gallery, tf, k), cfg.eval.batch_size,
                               device, "gallery features", progress, **flip)
    from reidbench.retrieval.rerank import RerankParams  # loads FAISS

    rerank = (RerankParams(cfg.eval.rerank_k1, cfg.eval.rerank_k2, cfg.eval.rerank_lambda)
              if cfg.eval.rerank else None)
    result = evaluate_reid(query, gallery, cfg.eval.metric, cfg.eval.max_rank, rerank=rerank)
    metrics = {"task": "reid", **result.as_dict()}
    metrics.update({"metric": cfg.eval.metric, "num_query": len(split.query),
                    "num_gallery": len(split.gallery)})
    return metrics, time.perf_counter() - start


def evaluate_run(
    run_dir: Path, dataset: str | None = None, data_root: str | None = None,
    device_name: str | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the model recorded in ``run_dir`` on the test side of ``dataset`` (default: the
    dataset it was trained on), e.g. a test-only set such as IJB-B/C or LFW. The input size,
    normalisation and evaluation settings are the run's."""
    from dataclasses import replace

    from reidbench.engine.bench import load_model, source_from_run

    source = source_from_run(run_dir)
    cfg = source.cfg
    data = replace(cfg.data, name=dataset or cfg.data.name,
                   root=data_root if data_root is not None else cfg.data.root)
    if dataset is not None and dataset != source.cfg.data.name:
        data = replace(data, keypoints=None)  # the trained set's sidecar does not apply
    cfg = replace(cfg, data=data)
    device = select_device(device_name or cfg.train.device)
    split = build_dataset(cfg.data)
    model = load_model(source, keypoint_count(split), device)
    metrics, seconds = evaluate_state(cfg, split, model, device, progress)
    return {"run_id": source.run_id, "model": cfg.model.name, "dataset": cfg.data.name,
            **metrics, "eval_seconds": round(seconds, 3)}
