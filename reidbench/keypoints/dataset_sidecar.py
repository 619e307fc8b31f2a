"""Where a dataset's detector sidecar goes, which detector it needs, and the command that makes it.

The adapters read a sidecar from a fixed name in the dataset folder (``split.root``):
``landmarks.csv`` for LFW, ``keypoints.csv`` for every other set (``reidbench.datasets``), so
``reidbench data keypoints NAME`` writes there by default and the next ``run`` picks it up
with no option. Elsewhere (``--out``, for a read-only dataset) it is passed as
``--set data.keypoints=FILE``.

Face sets (``kind`` "face", "templates") get the face detector (5 ArcFace landmarks), every
other set the body detector (COCO-17); ``--detector`` overrides it (e.g. ``facemesh`` for a
``folder:`` collection of faces).

``coverage`` is the share of a split's images that reach the model with keypoints; the run's
start warning and its record use it (``KEYPOINT_MODELS`` are the models that need keypoints).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidbench.datasets.base import Split
from reidbench.datasets.catalog import dataset_info
from reidbench.datasets.checks import extract_command, has_keypoints
from reidbench.datasets.keypoints import KEYPOINTS_FILE
from reidbench.datasets.lfw import LANDMARKS_FILE
from reidbench.errors import ReidbenchError
from reidbench.keypoints.detector import default_detector
from reidbench.keypoints.sidecar import read_provenance

KEYPOINT_MODELS = ("kprpe", "poster")  # models whose keypoint path is what they are about
LOW_COVERAGE = 0.9  # a run on a split with less warns at start
SIDECAR_NAMES = {"lfw": LANDMARKS_FILE}  # dataset name -> sidecar file name (else KEYPOINTS_FILE)
FACE_KINDS = ("face", "templates")


def sidecar_name(dataset: str) -> str:
    """The file name the adapter of ``dataset`` reads its sidecar from (in ``split.root``)."""
    return SIDECAR_NAMES.get(dataset, KEYPOINTS_FILE)


def default_sidecar(dataset: str, split: Split) -> Path:
    """Where ``reidbench data keypoints`` writes without ``--out``: where the adapter reads."""
    return Path(split.root) / sidecar_name(dataset)


def dataset_detector(dataset: str) -> str:
    """The default detector of ``dataset``: face landmarks for face sets, else body keypoints."""
    info = dataset_info(dataset)
    return default_detector("face" if info is not None and info.kind in FACE_KINDS else "body")


@dataclass(frozen=True)
class Coverage:
    """Images of one part of a split, and how many of them have keypoints."""

    part: str
    images: int
    with_keypoints: int

    @property
    def fraction(self) -> float:
        return self.with_keypoints / self.images if self.images else 0.0

    def text(self) -> str:
        return f"{self.part} {self.with_keypoints}/{self.images} ({100 * self.fraction:.1f}%)"


def coverage(split: Split) -> tuple[Coverage, ...]:
    """Per part of ``split`` (``split.parts()``): images and images with keypoints."""
    return tuple(Coverage(part, len(records), sum(has_keypoints(r) for r in records))
                 for part, records in split.parts().items())


def keypoint_block(split: Split, sidecar: str | Path | None = None) -> dict[str, Any]:
    """What a run records about its keypoints: ``{"name", "source", "detector", "coverage"}``.

    ``source`` is the sidecar read (None without one; ``"dataset"`` when the keypoints come
    from the dataset's own landmarks, as IJB's), ``detector`` the one that wrote it (from its
    provenance record, None when unknown), ``coverage`` per part the fraction of images with
    keypoints. ``name`` is the leaderboard's short label (``reporting.recipe.describe_source``):
    ``dataset`` for the dataset's own sidecar or landmarks, the file name of a ``sidecar`` given
    with ``data.keypoints``, ``none`` without keypoints; followed by the coverage of the first
    part (train) when it is not complete, e.g. ``dataset (train 93.8%)``."""
    report = split.keypoint_report
    parts = coverage(split)
    if report is not None:
        source: str | None = report.sidecar
    else:
        source = "dataset" if any(c.with_keypoints for c in parts) else None
    detector = None
    if report is not None:
        try:
            provenance = read_provenance(Path(report.sidecar))
        except ReidbenchError:
            provenance = None
        if provenance is not None and isinstance(provenance.get("detector"), str):
            detector = provenance["detector"]
    if source is None:
        name = "none"
    else:
        name = Path(sidecar).name if sidecar is not None else "dataset"
        if parts and parts[0].fraction < 1.0:
            name += f" ({parts[0].part} {100 * parts[0].fraction:.1f}%)"
    return {"name": name, "source": source, "detector": detector,
            "coverage": {c.part: round(c.fraction, 6) for c in parts}}


def keypoint_warning(model: str, dataset: str, data_root: str | Path | None, split: Split,
                     sidecar: str | Path | None = None) -> str | None:
    """The warning a run of ``model`` on ``split`` starts with when the model needs keypoints
    and some part has fewer than ``LOW_COVERAGE`` of its images with them (None otherwise):
    the coverage per part, what the samples without keypoints run, and the command that
    makes the sidecar (with ``--out`` when the run reads ``sidecar`` from elsewhere)."""
    if model not in KEYPOINT_MODELS:
        return None
    parts = coverage(split)
    if parts and min(c.fraction for c in parts) >= LOW_COVERAGE:
        return None
    fallback = ("KP-RPE's static bias (an iRPE product bias, not KP-RPE)" if model == "kprpe"
                else "POSTER's learned default keypoints (no per-image landmarks)")
    command = extract_command(dataset, data_root)
    if sidecar is not None:
        command += f" --out {shlex.quote(str(sidecar))}"
    coverage_text = ", ".join(c.text() for c in parts)
    return (f"{model} on {dataset}: keypoints for {coverage_text}; every image without them "
            f"runs {fallback}. Make them (needs pip install 'reidbench[keypoints]'): {command}")
