"""Robustness sweeps: one model's metrics under every perturbation x severity.

``sweep`` asks the task (``reidbench.evaluation.tasks``) for its cell evaluator. Re-ID: the
clean query and gallery features are extracted once; each (perturbation, severity) re-extracts
only the perturbed side: the queries (``side="query"``, the gallery stays clean) or queries and
gallery (``side="both"``). Verification: the clean features of every paired image are extracted
once; each cell re-extracts the second image of every pair (``"query"``) and scores it against
the clean first image, or re-extracts every paired image (``"both"``). Severity 0 is the
identity (``perturb.IDENTITY``, tested to give the clean pixels exactly), so its cell is the
clean evaluation.

Each image's misalignment comes from its own seeded generator (``perturb.sample_rng``), so
every model sees the same perturbed images whatever the batch size or order. Standard errors
are approximate, to judge differences by: mAP, the std of per-query AP over sqrt(queries);
rank-1 and TAR, binomial; k-fold accuracy, the std over folds over sqrt(folds); AUC, Hanley &
McNeil (1982).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from reidbench.data.loader import ImageDataset, load_sample, sample_dict
from reidbench.data.perturb import IDENTITY, Misalignment, Perturbation, build_perturbation, sample_rng
from reidbench.data.records import ImageRecord
from reidbench.data.transforms import Transform
from reidbench.datasets.checks import extract_command
from reidbench.errors import ConfigError
from reidbench.evaluation.reid import Features, extract_features
from reidbench.metrics.validate import check_metrics

log = logging.getLogger(__name__)

SIDES = ("query", "both")


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep: perturbation names, severities (0 = clean), perturbed side, seed."""

    perturbations: tuple[str, ...]
    severities: tuple[int, ...]
    side: str = "query"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ConfigError(f"unknown side {self.side!r}; expected one of: {', '.join(SIDES)}")


@dataclass(frozen=True)
class Cell:
    """The metrics of one (perturbation, severity); ``perturbation`` is "clean" for the reference."""

    perturbation: str
    severity: int
    values: dict[str, float | None]  # metric -> value, fractions in [0, 1]
    stderr: dict[str, float | None]  # metric -> approximate standard error
    num_samples: int  # valid queries (re-ID) or pairs (verification)
    seconds: float = 0.0  # feature extraction and scoring of this cell
    per_sample: np.ndarray | None = field(default=None, repr=False, compare=False)  # for paired
    #   comparisons: re-ID, the AP of each valid query; verification, 1/0 whether each pair is
    #   classified right at its fold's k-fold threshold (their mean is the k-fold accuracy when
    #   the folds have equal size)

    def __post_init__(self) -> None:  # no cell, hence no robustness row, holds an impossible value
        check_metrics({"values": self.values, "stderr": self.stderr, "num_samples": self.num_samples,
                       "seconds": self.seconds},
                      f"robustness cell {self.perturbation} severity {self.severity}")


class ImageStore:
    """The images and keypoints of a record list as the loader gives them before the transform
    (decoded, faces aligned: ``loader.load_sample``), read once and shared by every model and
    perturbation."""

    def __init__(self, records: list[ImageRecord]) -> None:
        self.records = records
        self._samples: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        if index not in self._samples:
            self._samples[index] = load_sample(self.records[index])
        return self._samples[index]


class PerturbedDataset(ImageDataset):
    """An evaluation ``ImageDataset`` whose sample i is misaligned by ``perturbation`` at
    ``severity``, drawn from ``sample_rng(seed, name, stream, source index)``.

    ``indices`` restricts it to some records of ``store`` (item i is record ``indices[i]``; the
    seed follows the record, not the position). Without a perturbation it is the clean
    evaluation dataset.
    """

    def __init__(
        self, store: ImageStore, transform: Transform, num_keypoints: int,
        perturbation: Perturbation | None = None, severity: int = 0, seed: int = 0,
        stream: str = "query", indices: np.ndarray | None = None,
    ) -> None:
        super().__init__(store.records, transform, num_keypoints)
        self.store, self.perturbation, self.severity = store, perturbation, severity
        self.seed, self.stream = seed, stream
        self.indices = np.arange(len(store)) if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.store.sample(index)

    def image(self, index: int) -> np.ndarray:
        return self.store.sample(index)[0]

    def misalignment(self, index: int) -> Misalignment:
        """The misalignment of source record ``index``."""
        if self.perturbation is None or self.severity == 0:
            return IDENTITY
        rng = sample_rng(self.seed, self.perturbation.name, self.stream, index)
        hw = (self.transform.height, self.transform.width)
        return self.perturbation.draw(self.severity, rng, hw, self.num_keypoints)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        position = item[0] if isinstance(item, tuple) else item
        index = int(self.indices[position])
        record = self.records[index]
        mis = self.misalignment(index)
        image, kps_in = self.sample(index)
        extra = None if mis is IDENTITY else mis.matrix
        image, kps = self.transform(image, kps_in if self.num_keypoints else None, None, extra=extra)
        if kps is not None and mis.keypoint_noise is not None:
            kps = kps + mis.keypoint_noise
        return sample_dict(record, index, image, kps, self.num_keypoints)


@dataclass(frozen=True)
class Extractor:
    """How one model turns a dataset into features (explicit evaluation settings)."""

    model: nn.Module
    transform: Transform
    device: torch.device
    batch_size: int = 128
    flip: bool = False  # flip test (mirror keypoints too)

    def __call__(self, dataset: ImageDataset, flip_perm: tuple[int, ...] | None) -> Features:
        desc = "features"  # names the images in a non-finite features error
        if isinstance(dataset, PerturbedDataset):
            pert = dataset.perturbation
            desc = f"{dataset.stream} features" + (
                f" ({pert.name}, severity {dataset.severity})" if pert and dataset.severity else "")
        return extract_features(self.model, dataset, self.batch_size, self.device, desc=desc,
                                flip=self.flip, flip_perm=flip_perm)


def applicable(names: tuple[str, ...], num_keypoints: int) -> tuple[str, ...]:
    """The perturbations of ``names`` that change anything on a dataset with ``num_keypoints``
    keypoints (keypoint noise needs keypoints)."""
    return tuple(n for n in names if num_keypoints or build_perturbation(n).kind != "keypoints")


def skipped_perturbations(names: tuple[str, ...], num_keypoints: int, dataset: str,
                          data_root: str | Path | None = None) -> dict[str, str]:
    """Why each perturbation of ``names`` that ``applicable`` drops is skipped (the robustness
    report states it): keypoint noise on a dataset without keypoints would change nothing."""
    command = extract_command(dataset, data_root)
    return {n: f"{dataset} has no keypoints, so keypoint noise would change nothing (every "
               f"keypoint model runs its no-keypoint fallback); make them with `{command}`"
            for n in names if n not in applicable(names, num_keypoints)}


class SweepTask(Protocol):
    """What ``sweep`` needs of a task (``reidbench.evaluation.tasks``: re-ID ranking and pair
    verification implement it)."""

    name: str
    num_keypoints: int

    def sweep_cells(
        self, extractor: Extractor, spec: SweepSpec, metric: str, max_rank: int,
    ) -> Callable[[Perturbation | None, int], Cell]:
        """The evaluator of one cell: (perturbation or None for clean, severity) -> Cell."""
        ...


def sweep(
    extractor: Extractor, task: SweepTask, spec: SweepSpec, *, metric: str = "cosine",
    max_rank: int = 50, on_cell: Callable[[Cell], None] | None = None,
) -> tuple[Cell, list[Cell]]:
    """The clean cell and one cell per (perturbation, severity) of ``spec``, in that order.

    Keypoint perturbations on a dataset without keypoints are skipped with a warning.
    ``on_cell`` is called after each cell (progress display).
    """
    names = applicable(spec.perturbations, task.num_keypoints)
    for name in sorted(set(spec.perturbations) - set(names)):
        log.warning("%s skipped: %s has no keypoints", name, task.name)
    perturbations = [build_perturbation(name) for name in names]
    evaluate = task.sweep_cells(extractor, spec, metric, max_rank)
    clean = evaluate(None, 0)
    if on_cell:
        on_cell(clean)
    cells = []
    for pert in perturbations:
        for severity in spec.severities:
            cell = (replace(clean, perturbation=pert.name, severity=0, seconds=0.0) if severity == 0
                    else evaluate(pert, severity))
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    return clean, cells


def binomial_se(p: float, n: int) -> float | None:
    """Standard error of a proportion ``p`` over ``n`` samples."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else None


def auc_se(a: float, pos: int, neg: int) -> float | None:
    """Hanley & McNeil (1982) standard error of an AUC from ``pos`` and ``neg`` samples."""
    if pos == 0 or neg == 0:
        return None
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (pos - 1) * (q1 - a * a) + (neg - 1) * (q2 - a * a)) / (pos * neg)
    return math.sqrt(max(var, 0.0))


def example_images(
    store: ImageStore, transform: Transform, num_keypoints: int, index: int,
    perturbations: tuple[str, ...], severities: tuple[int, ...], seed: int = 0, stream: str = "query",
) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]]:
    """What the model sees for record ``index``: ``{(perturbation, severity): ((h, w, 3) uint8
    image, (K, 2) normalised keypoints or None)}``, through the same pipeline as the sweep."""
    mean = torch.tensor(transform.mean).view(3, 1, 1)
    std = torch.tensor(transform.std).view(3, 1, 1)
    out = {}
    for name in perturbations:
        pert = build_perturbation(name)
        for severity in severities:
            item = PerturbedDataset(store, transform, num_keypoints, pert, severity, seed, stream)[index]
            pixels = (item["image"] * std + mean).clamp(0, 1).mul(255).round().byte()
            kps = item["keypoints"].numpy() if item["has_keypoints"] else None
            out[(name, severity)] = (pixels.permute(1, 2, 0).numpy(), kps)
    return out
