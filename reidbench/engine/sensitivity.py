"""Keypoint sensitivity of trained models (``evaluation.kp_sensitivity``) for several run records
or checkpoints on one dataset, written as ``<out>/<id>.json`` and ``<id>.md``
(``reidbench robustness --kp-sensitivity``)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from reidbench.datasets.catalog import build_dataset
from reidbench.engine.sources import ModelSource, load_model
from reidbench.engine.sweep import check_report_id, shared_data_config
from reidbench.engine.trainer import eval_transform, select_device
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.kp_sensitivity import kp_sensitivity
from reidbench.evaluation.robustness import Extractor
from reidbench.evaluation.tasks import task_for
from reidbench.fileio import atomic_write_json, atomic_write_text
from reidbench.reporting.records import git_commit

log = logging.getLogger(__name__)


def sensitivity_rows(
    sources: list[ModelSource], severities: tuple[int, ...], *, seed: int = 0,
    data_root: str | None = None, device: str = "auto", batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (model, severity): embedding change and the headline metric (the task's
    first: mAP for re-ID, 10-fold accuracy for pairs) clean and under keypoint noise."""
    if not sources:
        raise ConfigError("no models to evaluate")
    if not any(s > 0 for s in severities):
        raise ConfigError(f"keypoint sensitivity needs a severity above 0, got {list(severities)}")
    data_cfg = shared_data_config(sources, data_root)
    split = build_dataset(data_cfg)
    task = task_for(split)
    dev = select_device(device)
    rows: list[dict[str, Any]] = []
    for src in sources:
        model = load_model(src, task.num_keypoints, dev)
        extractor = Extractor(model, eval_transform(src.cfg), dev,
                              batch_size or src.cfg.eval.batch_size, src.cfg.eval.flip)
        for row in kp_sensitivity(extractor, task, severities, seed=seed, metric=src.cfg.eval.metric,
                                  max_rank=src.cfg.eval.max_rank):
            metric = next(iter(row.clean))
            clean, noisy = row.clean[metric], row.noisy[metric]
            rows.append({
                "dataset": split.name, "model": src.cfg.model.name, "run_id": src.run_id,
                "seed": src.cfg.train.seed, "head": src.cfg.model.head, "augment": src.cfg.data.augment,
                **{k: v for k, v in row.as_dict().items() if k not in ("clean", "noisy")},
                "metric": metric, "clean_value": clean, "noisy_value": noisy,
                "change": None if clean is None or noisy is None else noisy - clean,
                "clean_metrics": row.clean, "noisy_metrics": row.noisy,
            })
    return rows


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = ["| model | run | severity | kp noise sigma | mean 1-cos | max 1-cos | metric | clean | "
             "noisy | change |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['run_id']} | {r['severity']} | {r['sigma']:.2f} | "
              f"{r['embedding_change']:.3g} | {r['embedding_change_max']:.3g} | {r['metric']} | "
              f"{_fmt(r['clean_value'])} | {_fmt(r['noisy_value'])} | {_fmt(r['change'], '+.4f')} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def write_sensitivity(
    rows: list[dict[str, Any]], out_dir: Path, report_id: str, *, command: str = "",
    overwrite: bool = False, extends: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``<out_dir>/<report_id>.json`` (rows + provenance) and ``.md``; an existing report is an
    error unless ``overwrite``. ``extends``: the meta of the record these rows extend (more
    models): it is kept, and this write's provenance appended to its ``extended`` list."""
    check_report_id(report_id)
    paths = {"json": out_dir / f"{report_id}.json", "markdown": out_dir / f"{report_id}.md"}
    if not overwrite and any(p.exists() for p in paths.values()):
        raise ReidbenchError(f"keypoint-sensitivity report {out_dir / report_id}.* already exists; "
                             "give --id NAME or --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "git": git_commit(), "torch": torch.__version__,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if extends is not None:
        meta = {**extends, "extended": [*extends.get("extended", []), meta]}
    atomic_write_json(paths["json"], {"meta": meta, "rows": rows})
    atomic_write_text(paths["markdown"], markdown(rows))
    return paths
