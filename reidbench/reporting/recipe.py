"""The recipe of a run: what must be equal for two runs to be seeds of one leaderboard row.

A leaderboard row is one (dataset, model, recipe); its seeds are averaged. Runs that differ in
anything that can change the result never share a row. The readable columns name what a
reader asks about first:

- ``data``: ``full`` (the evaluation set has the published size of the dataset), ``subset``
  (it does not: a few images of a real dataset, e.g. a smoke test), ``synthetic`` (generated;
  its identities and generator seed are in ``recipe``) or ``unpublished`` (a folder dataset
  with no published size); ``eval_set`` gives the counts (queries / gallery, or pairs);
- ``epochs``: epochs actually trained;
- ``pretrained``: the starting weights (record key ``pretrained`` of ``metrics.json``, else
  ``model.pretrained`` of the config; ``none`` when neither exists: random initialisation);
- ``keypoints``: the keypoint source (record key ``keypoints`` of ``metrics.json``, else the
  ``data.keypoints`` sidecar of the config; ``dataset`` = the dataset's own sidecar, if any);
- ``augmentation``: horizontal flip, pad-and-crop, random erasing, random similarity.

Two hashes make the key complete: ``recipe`` covers every setting of the data, loss, training
and evaluation sections except those that cannot change a result (seed, device, threads, data
root, workers, image cache, output folder, extraction batch size), ``arch`` every setting of
the model section except its name. Runs with the same readable columns but another hash stay
apart, and the hash tells them apart. A hash covers the settings whose value differs from the
``RunConfig`` default (``default`` when none does), so adding a config key with a default
that reproduces older runs leaves every recorded hash as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Any

from reidbench.config import RunConfig, flat_settings, to_dict
from reidbench.datasets.catalog import dataset_info

# settings that do not change what a run computes: never part of the recipe hash
NOT_RECIPE = ("train.seed", "train.device", "train.threads", "data.root", "data.num_workers",
              "data.cache_images", "eval.batch_size", "output")
KEY = ["dataset", "task", "model", "size", "data", "eval_set", "epochs", "pretrained", "keypoints",
       "augmentation", "recipe", "arch"]


def _digest(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:8]


def changed_settings(cfg: RunConfig) -> dict[str, Any]:
    """Dotted setting -> value of every setting of ``cfg`` that differs from the default."""
    default = flat_settings(to_dict(RunConfig()))
    return {k: v for k, v in flat_settings(to_dict(cfg)).items() if default.get(k, object()) != v}


def _hash(settings: dict[str, Any]) -> str:
    return _digest(settings) if settings else "default"


def recipe_hash(cfg: RunConfig) -> str:
    """8 hex digits of the changed settings outside the model section that can change a result."""
    return _hash({k: v for k, v in changed_settings(cfg).items()
                  if not k.startswith("model.") and k not in NOT_RECIPE})


def arch_hash(cfg: RunConfig) -> str:
    """8 hex digits of the changed settings of the model section, its name aside."""
    return _hash({k: v for k, v in changed_settings(cfg).items()
                  if k.startswith("model.") and k != "model.name"})


def describe_source(value: Any, default: str) -> str:
    """A short name of a recorded weights or keypoint source: a path becomes its file name; a
    mapping gives its ``name``, ``source``, ``file`` or ``path`` (with ``sha256`` prefix when
    recorded); ``default`` when nothing is recorded."""
    if value is None or value == "" or value is False:
        return default
    if isinstance(value, dict):
        name = next((value[k] for k in ("name", "source", "file", "path") if value.get(k)), None)
        if name is None:
            return default if not value else _digest(value)
        text = describe_source(name, default)
        digest = value.get("sha256")
        return f"{text} ({digest[:8]})" if isinstance(digest, str) and digest else text
    text = str(value)
    return PurePath(text).name if ("/" in text or "\\" in text) else text


def data_kind(cfg: RunConfig, task: str, metrics: dict[str, Any]) -> tuple[str, str]:
    """(``data``, ``eval_set``) of a run: full / subset / synthetic / unpublished, and the
    evaluated counts."""
    if task == "reid":
        counts = (metrics.get("num_query"), metrics.get("num_gallery"))
        eval_set = f"{counts[0]}q/{counts[1]}g" if None not in counts else ""
    else:
        counts = (metrics.get("num_pairs"),)
        eval_set = f"{counts[0]} pairs" if counts[0] is not None else ""
    if cfg.data.name.startswith("synthetic"):
        return "synthetic", eval_set
    info = dataset_info(cfg.data.name)
    published = info.published if info else None
    if not published:
        return "unpublished", eval_set
    if task == "reid":
        full = tuple(published.get(side, {}).get("images") for side in ("query", "gallery"))
    else:
        full = (published.get("test", {}).get("pairs"),)
    if None in counts or None in full:
        return "subset?", eval_set  # cannot tell: never called full
    return ("full" if counts == full else "subset"), eval_set


def augmentation(cfg: RunConfig) -> str:
    d = cfg.data
    recipe = getattr(d, "augment", "none")  # a named recipe (issue 18) replaces the geometry
    parts = [recipe] if recipe not in (None, "none") else []
    parts += [f"flip {d.flip_prob:g}", f"pad {d.pad}", f"erase {d.erase_prob:g}"]
    if d.aug_affine:
        parts.append(f"affine {d.aug_affine}@{d.aug_affine_prob:g}")
    return ", ".join(parts)


def recipe_columns(cfg: RunConfig, task: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The recipe key columns of one run (see the module docstring)."""
    data, eval_set = data_kind(cfg, task, metrics)
    pretrained = metrics.get("pretrained", getattr(cfg.model, "pretrained", None))
    keypoints = metrics.get("keypoints", cfg.data.keypoints)
    return {
        "data": data, "eval_set": eval_set,
        "pretrained": describe_source(pretrained, "none"),
        "keypoints": describe_source(keypoints, "dataset"),
        "augmentation": augmentation(cfg), "recipe": recipe_hash(cfg), "arch": arch_hash(cfg),
    }
