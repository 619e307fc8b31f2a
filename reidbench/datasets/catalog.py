"""Registered datasets: how a name and a data root become a split.

Data root resolution: ``data.root`` (``--data-root``) > ``$REIDBENCH_DATA`` > ``./datasets``.
Real datasets are read from there and never downloaded. The synthetic sets are the embedded
default: when absent they are generated into ``<data root>/<name>/`` (a local computation from
a seed, not a download) and reused afterwards.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidbench.config import DataConfig
from reidbench.datasets.base import FACE_KEYPOINTS, FaceSplit, ReidSplit, VerificationSet
from reidbench.datasets.folder import read_identity_folders
from reidbench.datasets.keypoints import read_keypoints_csv
from reidbench.datasets.market1501 import MARKET1501, LayoutSpec, read_market_layout
from reidbench.errors import DatasetError
from reidbench.registry import DATASETS

log = logging.getLogger(__name__)

ENV_VAR = "REIDBENCH_DATA"
SYNTHETIC_REID = LayoutSpec(
    name="synthetic-reid", folder_names=("synthetic-reid",), num_cams=6, max_pid=9999,
    url="reidbench data synth synthetic-reid --root DIR",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What `reidbench data list` shows about a registered dataset."""

    name: str
    kind: str  # "reid" (query/gallery) or "face" (training identities + verification pairs)
    tree: str  # the expected on-disk layout
    source: str  # where it comes from
    num_keypoints: int = 0  # keypoints its own sidecar provides (0: none unless the user adds one)


INFOS: dict[str, DatasetInfo] = {}


def data_root(root: str | None) -> Path:
    """The data root in effect (see the module docstring)."""
    if root:
        return Path(root).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path("datasets")


def register(info: DatasetInfo) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    INFOS[info.name] = info
    return DATASETS.register(info.name)


def build_dataset(cfg: DataConfig) -> ReidSplit | FaceSplit | VerificationSet:
    return DATASETS.get(cfg.name)(cfg)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_synthetic(
    name: str, cfg: DataConfig, generate: Callable[..., dict[str, Any]], version: int,
    sizes: dict[str, int | None] | None = None,
) -> Path:
    """The synthetic set's folder, generated first if missing or made with other settings.

    ``--data-root`` may point at the set itself or at a data root holding ``<name>/``. A set
    made with an explicitly different seed or size is regenerated; unspecified settings accept
    whatever set is there. ``sizes`` are further generator arguments, recorded in the manifest
    under ``counts`` (e.g. ``{"num_train_ids": cfg.synth_train_ids}``).
    """
    root = data_root(cfg.root)
    folder = root if _read_manifest(root) else root / name
    manifest = _read_manifest(folder)
    if manifest is not None and manifest.get("generator") != name:
        raise DatasetError(
            f"{folder} holds a {manifest.get('generator')!r} set, not {name!r}; "
            f"point --data-root at a {name} folder or an empty directory"
        )
    wanted = {"seed": cfg.synth_seed, "num_ids": cfg.synth_ids, **(sizes or {})}
    recorded = {**(manifest or {}), **{k: v for k, v in (manifest or {}).get("counts", {}).items()
                                       if k.startswith("num_")}}
    stale = manifest is None or manifest.get("version") != version or any(
        value is not None and recorded.get(key) != value for key, value in wanted.items()
    )
    if stale:  # the generators refuse to overwrite anything they did not write themselves
        kwargs = {k: v for k, v in wanted.items() if v is not None}
        log.info("generating %s into %s (%s)", name, folder, kwargs or "defaults")
        generate(folder, **kwargs)
    return folder


@register(DatasetInfo(
    "market1501", "reid", MARKET1501.expected_tree(), MARKET1501.url,
))
def _market1501(cfg: DataConfig) -> ReidSplit:
    return read_market_layout(
        data_root(cfg.root), MARKET1501, Path(cfg.keypoints) if cfg.keypoints else None
    )


@register(DatasetInfo(
    "synthetic-reid", "reid",
    "<root>/synthetic-reid/{bounding_box_train,bounding_box_test,query}/PPPP_cCsS_FFFFFF_BB.jpg "
    "+ keypoints.csv + manifest.json",
    "generated locally (reidbench data synth synthetic-reid)", num_keypoints=10,
))
def _synthetic_reid(cfg: DataConfig) -> ReidSplit:
    from reidbench.datasets.synthetic_reid import SYNTHETIC_REID_VERSION, generate_synthetic_reid

    folder = ensure_synthetic("synthetic-reid", cfg, generate_synthetic_reid, SYNTHETIC_REID_VERSION)
    return read_market_layout(folder, SYNTHETIC_REID, Path(cfg.keypoints) if cfg.keypoints else None)


@register(DatasetInfo(
    "synthetic-faces", "face",
    "<root>/synthetic-faces/{lfw/<Name>/<Name>_0001.jpg, pairs.txt, train/<Name>/<Name>_0001.jpg, "
    "landmarks.csv}",
    "generated locally (reidbench data synth synthetic-faces)", num_keypoints=5,
))
def _synthetic_faces(cfg: DataConfig) -> FaceSplit:
    from reidbench.datasets.lfw import read_lfw
    from reidbench.datasets.synthetic_faces import (
        SYNTHETIC_FACES_VERSION,
        generate_synthetic_faces,
    )

    folder = ensure_synthetic(
        "synthetic-faces", cfg, generate_synthetic_faces, SYNTHETIC_FACES_VERSION,
        {"num_train_ids": cfg.synth_train_ids},
    )
    landmarks = Path(cfg.keypoints) if cfg.keypoints else folder / "landmarks.csv"
    verification = read_lfw(folder, landmarks)
    keypoints = read_keypoints_csv(landmarks) if landmarks.is_file() else {}
    train = read_identity_folders(folder / "train", folder, keypoints)
    return FaceSplit(
        "synthetic-faces", folder, train, verification,
        FACE_KEYPOINTS if keypoints else None,
    )
