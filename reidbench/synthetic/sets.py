"""The synthetic sets as registered datasets: generated into the data root when missing (or
made with other settings), then read by the real layouts' adapters."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reidbench.config import DataConfig
from reidbench.datasets.base import FaceSplit, ReidSplit, VerificationSet
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.lfw import read_lfw_split
from reidbench.datasets.market1501 import LayoutSpec, read_market_layout
from reidbench.errors import DatasetError
from reidbench.synthetic.faces import SYNTHETIC_FACES_VERSION, generate_synthetic_faces
from reidbench.synthetic.reid import SYNTHETIC_REID_VERSION, generate_synthetic_reid

log = logging.getLogger(__name__)

SYNTHETIC_REID = LayoutSpec(
    name="synthetic-reid",
    folder_names=("synthetic-reid",),
    num_cams=6,
    max_pid=9999,
    url="reidbench data synth synthetic-reid --root DIR",
)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: not a generator's
        return None
    return manifest if isinstance(manifest, dict) else None


def ensure_synthetic(
    name: str,
    cfg: DataConfig,
    generate: Callable[..., dict[str, Any]],
    version: int,
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
        who = manifest.get("generator")
        what = f"a {who!r} set" if who else "a manifest.json not written by a reidbench generator"
        raise DatasetError(
            f"{folder} holds {what}, not {name!r}; nothing is generated there: "
            f"point --data-root at a {name} folder or an empty directory"
        )
    wanted = {"seed": cfg.synth_seed, "num_ids": cfg.synth_ids, **(sizes or {})}
    recorded = {
        **(manifest or {}),
        **{k: v for k, v in (manifest or {}).get("counts", {}).items() if k.startswith("num_")},
    }
    stale = (
        manifest is None
        or manifest.get("version") != version
        or any(value is not None and recorded.get(key) != value for key, value in wanted.items())
    )
    if stale:  # the generators refuse to overwrite anything they did not write themselves
        kwargs = {k: v for k, v in wanted.items() if v is not None}
        log.info("generating %s into %s (%s)", name, folder, kwargs or "defaults")
        generate(folder, **kwargs)
    return folder


@register_dataset(
    DatasetInfo(
        "synthetic-reid",
        "reid",
        "<root>/synthetic-reid/{bounding_box_train,bounding_box_test,query}/PPPP_cCsS_FFFFFF_BB.jpg "
        "+ keypoints.csv + manifest.json",
        "generated locally (reidbench data synth synthetic-reid)",
        num_keypoints=10,
    )
)
def _synthetic_reid(cfg: DataConfig) -> ReidSplit:
    path = ensure_synthetic("synthetic-reid", cfg, generate_synthetic_reid, SYNTHETIC_REID_VERSION)
    return read_market_layout(path, SYNTHETIC_REID, keypoints_path(cfg))


@register_dataset(
    DatasetInfo(
        "synthetic-faces",
        "face",
        "<root>/synthetic-faces/{lfw/<Name>/<Name>_0001.jpg, pairs.txt, train/<Name>/<Name>_0001.jpg, "
        "landmarks.csv}",
        "generated locally (reidbench data synth synthetic-faces)",
        num_keypoints=5,
    )
)
def _synthetic_faces(cfg: DataConfig) -> FaceSplit | VerificationSet:
    path = ensure_synthetic(
        "synthetic-faces",
        cfg,
        generate_synthetic_faces,
        SYNTHETIC_FACES_VERSION,
        {"num_train_ids": cfg.synth_train_ids},
    )
    # the generated faces are deliberately not aligned (each carries a recorded similarity
    # transform): read as they are; `--dataset lfw --data-root <this root>` aligns them
    return read_lfw_split(path, keypoints_path(cfg), name="synthetic-faces", align=None)
