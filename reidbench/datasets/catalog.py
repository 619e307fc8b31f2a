"""Registered datasets: how a name and a data root become a split.

Each adapter module registers its datasets with ``register_dataset`` (one ``DatasetEntry`` per
name in ``registry.DATASETS``: the info `reidbench data list` and `reidbench data check` show,
and the builder); ``build_dataset`` loads the built-in ones (``registry.load_builtins``) and
builds a name. ``folder:<path>`` names build the registered ``folder`` dataset at that path.

Data root resolution: ``data.root`` (``--data-root``) > ``$REIDBENCH_DATA`` > ``./datasets``.
Real datasets are read from there and never downloaded. The synthetic sets are the embedded
default: when absent they are generated into ``<data root>/<name>/`` (a local computation from
a seed, not a download) and reused afterwards (``reidbench.synthetic.sets``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reidbench.config import DataConfig
from reidbench.datasets.base import Split
from reidbench.datasets.textio import os_errors
from reidbench.errors import DataNotFound, DatasetError
from reidbench.registry import BUILTIN_MODULES, DATASETS, load_builtins

ENV_VAR = "REIDBENCH_DATA"
FOLDER_PREFIX = "folder:"
Builder = TypeVar("Builder", bound=Callable[..., Any])


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


@dataclass(frozen=True)
class DatasetEntry:
    """One registered dataset: its info and its builder ``build(cfg: DataConfig) -> Split``."""

    info: DatasetInfo
    build: Callable[..., Split]


def register_dataset(info: DatasetInfo) -> Callable[[Builder], Builder]:
    """Decorator registering ``build`` under ``info.name`` (``registry.DATASETS``)."""

    def decorator(build: Builder) -> Builder:
        DATASETS.register(info.name)(DatasetEntry(info, build))
        return build

    return decorator


def data_root(root: str | None) -> Path:
    """The data root in effect (see the module docstring)."""
    if root:
        return Path(root).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path("datasets")


def keypoints_path(cfg: DataConfig) -> Path | None:
    """The keypoint sidecar replacing the dataset's own (``data.keypoints``), if any."""
    return Path(cfg.keypoints) if cfg.keypoints else None


def build_dataset(cfg: DataConfig) -> Split:
    """Read (or, for a synthetic set, generate) the dataset ``cfg.name``. An OSError while
    listing or reading the tree (a folder or file without permission, an I/O error) is a
    DatasetError naming the path."""
    builder = dataset_builder(cfg.name)
    try:
        with os_errors(cfg.name):
            return builder(cfg)
    except DataNotFound as exc:
        if cfg.name.startswith(FOLDER_PREFIX):  # an explicit path: no data root involved
            raise
        raise DataNotFound(f"{exc} {data_root_hint(cfg.root)}") from None


def data_root_hint(root: str | None) -> str:
    """How to point reidbench at the data, and which data root was in effect and why."""
    if root:
        source = "--data-root (data.root)"
    elif os.environ.get(ENV_VAR):
        source = f"${ENV_VAR}"
    else:
        source = f"the default; neither --data-root nor ${ENV_VAR} is set"
    return (f"Point reidbench at the folder holding the dataset with --data-root DIR or "
            f"${ENV_VAR}=DIR (data root in effect: {data_root(root)}, from {source}).")


def dataset_builder(name: str) -> Callable[[DataConfig], Split]:
    """The builder of a registered name, or of ``folder:<path>`` (the path is read as given,
    relative to the working directory); unknown names raise the registry's one-line error."""
    load_builtins()
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise DatasetError("folder: needs a path, e.g. --dataset folder:../shared/data/orl_faces")
        build = DATASETS.get("folder").build
        return lambda cfg: build(cfg, path)
    entry: DatasetEntry = DATASETS.get(name)
    return entry.build


def dataset_info(name: str) -> DatasetInfo | None:
    """The info of a registered name; None for ``folder:<path>`` and unknown names."""
    load_builtins()
    return DATASETS.get(name).info if name in DATASETS else None


def dataset_infos() -> list[DatasetInfo]:
    """Every registered dataset's info: the built-in ones in the order of their modules in
    ``registry.BUILTIN_MODULES`` (then others as registered)."""
    load_builtins()
    entries: list[DatasetEntry] = [entry for _, entry in DATASETS.items()]

    def rank(entry: DatasetEntry) -> int:
        module = entry.build.__module__
        return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)

    return [entry.info for entry in sorted(entries, key=rank)]  # stable: registration order within
