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
from reidbench.datasets import folder, ijb, lfw, msmt17
from reidbench.datasets.base import FaceSplit, ReidSplit, TemplateSet, VerificationSet
from reidbench.datasets.dukemtmc import DUKEMTMC
from reidbench.datasets.ijb import IJBB, IJBC
from reidbench.datasets.market1501 import MARKET1501, LayoutSpec, read_market_layout
from reidbench.datasets.textio import os_errors
from reidbench.errors import DatasetError
from reidbench.registry import DATASETS

log = logging.getLogger(__name__)

ENV_VAR = "REIDBENCH_DATA"
FOLDER_PREFIX = "folder:"
SYNTHETIC_REID = LayoutSpec(
    name="synthetic-reid",
    folder_names=("synthetic-reid",),
    num_cams=6,
    max_pid=9999,
    url="reidbench data synth synthetic-reid --root DIR",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What `reidbench data list` shows about a registered dataset."""

    name: str
    kind: str  # "reid" (query/gallery), "face" (training identities + verification pairs),
    #   "templates" (IJB 1:1 template pairs, test only) or "reid+pairs" (folder: both protocols)
    tree: str  # the expected on-disk layout
    source: str  # where it comes from
    num_keypoints: int = 0  # keypoints its own sidecar provides (0: none unless the user adds one)
    # per split counts of the full dataset ({"train": {"images", "ids", "cams"}, ...}; face sets
    # also "pairs", "folds", "templates"); None: no fixed size (synthetic, folder)
    published: dict[str, dict[str, int]] | None = None


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


def build_dataset(cfg: DataConfig) -> ReidSplit | FaceSplit | VerificationSet | TemplateSet:
    """Read (or, for a synthetic set, generate) the dataset ``cfg.name``. An OSError while
    listing or reading the tree (a folder or file without permission, an I/O error) is a
    DatasetError naming the path."""
    builder = dataset_builder(cfg.name)
    with os_errors(cfg.name):
        return builder(cfg)


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


def _keypoints(cfg: DataConfig) -> Path | None:
    return Path(cfg.keypoints) if cfg.keypoints else None


def _register_market_layout(spec: LayoutSpec) -> None:
    """A dataset in the Market-1501 file layout, described by its ``LayoutSpec``."""

    @register(DatasetInfo(spec.name, "reid", spec.expected_tree(), spec.url, published=spec.published))
    def build(cfg: DataConfig) -> ReidSplit:
        return read_market_layout(data_root(cfg.root), spec, _keypoints(cfg))


for _spec in (MARKET1501, DUKEMTMC):
    _register_market_layout(_spec)


@register(
    DatasetInfo(
        "msmt17",
        "reid",
        msmt17.EXPECTED_TREE,
        msmt17.URL,
        published=msmt17.PUBLISHED_STATS,
    )
)
def _msmt17(cfg: DataConfig) -> ReidSplit:
    return msmt17.read_msmt17(data_root(cfg.root), _keypoints(cfg))


@register(
    DatasetInfo(
        "lfw",
        "face",
        lfw.EXPECTED_TREE,
        lfw.URL,
        published={
            "test": {
                "images": lfw.PUBLISHED_STATS["images"],
                "ids": lfw.PUBLISHED_STATS["identities"],
                "pairs": lfw.PUBLISHED_STATS["pairs"],
                "folds": lfw.PUBLISHED_STATS["folds"],
            }
        },
    )
)
def _lfw(cfg: DataConfig) -> FaceSplit | VerificationSet:
    return lfw.read_lfw_split(data_root(cfg.root), _keypoints(cfg))


def _register_ijb(spec: ijb.IJBSpec) -> None:
    def build(cfg: DataConfig) -> TemplateSet:
        return ijb.read_ijb(data_root(cfg.root), spec, _keypoints(cfg))

    register(
        DatasetInfo(
            spec.name,
            "templates",
            spec.expected_tree(),
            ijb.URL,
            num_keypoints=5,
            published={"test": dict(spec.published)},
        )
    )(build)


_register_ijb(IJBB)
_register_ijb(IJBC)


@register(
    DatasetInfo(
        "folder",
        "reid+pairs",
        folder.EXPECTED_TREE + " (as folder:<path>, or folder with --data-root)",
        "any local collection, e.g. ../shared/data/orl_faces (documented split, datasets/folder/README.md)",
    )
)
def _folder(cfg: DataConfig, path: str | None = None) -> ReidSplit:
    root = Path(path).expanduser() if path else data_root(cfg.root)
    return folder.read_folder_dataset(root, _keypoints(cfg), name=cfg.name)


def dataset_builder(name: str) -> Callable[[DataConfig], Any]:
    """The builder of a registered name, or of ``folder:<path>`` (the path is read as given,
    relative to the working directory); unknown names raise the registry's one-line error."""
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise DatasetError("folder: needs a path, e.g. --dataset folder:../shared/data/orl_faces")
        return lambda cfg: _folder(cfg, path)
    return DATASETS.get(name)


@register(
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
    from reidbench.datasets.synthetic_reid import SYNTHETIC_REID_VERSION, generate_synthetic_reid

    path = ensure_synthetic("synthetic-reid", cfg, generate_synthetic_reid, SYNTHETIC_REID_VERSION)
    return read_market_layout(path, SYNTHETIC_REID, _keypoints(cfg))


@register(
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
    from reidbench.datasets.synthetic_faces import (
        SYNTHETIC_FACES_VERSION,
        generate_synthetic_faces,
    )

    path = ensure_synthetic(
        "synthetic-faces",
        cfg,
        generate_synthetic_faces,
        SYNTHETIC_FACES_VERSION,
        {"num_train_ids": cfg.synth_train_ids},
    )
    # the generated faces are deliberately not aligned (each carries a recorded similarity
    # transform): read as they are; `--dataset lfw --data-root <this root>` aligns them
    return lfw.read_lfw_split(path, _keypoints(cfg), name="synthetic-faces", align=None)
