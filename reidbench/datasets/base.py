"""The splits every dataset adapter returns (see DESIGN.md, "Data contracts"): re-ID query /
gallery, face training identities + verification pairs, IJB templates.

The records they hold (``ImageRecord``, ``FaceAlign``, ``KeypointSchema`` and the body / face
schemas) are the data layer's (``reidbench.data.records``) and are re-exported here, so an
adapter imports everything it returns from one module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np

from reidbench.data.records import (
    BODY_KEYPOINTS,
    FACE_KEYPOINTS,
    FaceAlign,
    ImageRecord,
    KeypointSchema,
)

__all__ = [
    "BODY_KEYPOINTS", "DISTRACTOR_PID", "FACE_KEYPOINTS", "JUNK_PID", "FaceAlign", "FaceSplit",
    "ImageRecord", "KeypointReport", "KeypointSchema", "ReidSplit", "Split", "TemplateSet",
    "VerificationSet",
]

JUNK_PID = -1  # Market-1501 junk images: dropped everywhere (torchreid semantics)
DISTRACTOR_PID = 0  # Market-1501 background / distractor images: kept in the gallery

Counts = dict[str, int | None]  # what `reidbench data check` counts in one part of a split


def record_counts(records: list[ImageRecord]) -> Counts:
    """Images, distinct identities and distinct cameras of ``records``."""
    return {
        "images": len(records),
        "ids": len({r.pid for r in records}),
        "cams": len({r.camid for r in records}),
    }


@dataclass(frozen=True)
class KeypointReport:
    """What an adapter made of a keypoint sidecar (``reidbench.datasets.keypoints``).

    Image paths are the records' ``path``; sidecar paths are as written in the file. A record
    without keypoints is in ``invalid`` (its row was dropped), in ``explicit`` (its row says it
    has none) or has no row at all.
    """

    sidecar: str  # the CSV read
    num_keypoints: int  # K of its rows (0: no row has coordinates)
    rows: int  # data rows in the file
    invalid: dict[str, str] = field(default_factory=dict)  # image path -> "line N: reason"
    explicit: frozenset[str] = frozenset()  # image paths whose row has empty coordinates
    unknown: tuple[str, ...] = ()  # sidecar paths naming no image file under the root
    unused: int = 0  # rows naming files the dataset does not read (e.g. Market junk)
    # image path -> (K,) per-point confidence of its keypoints (sidecars with <name>_c columns)
    confidence: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ReidSplit:
    """A re-ID dataset: a train split with relabelled pids, and query/gallery with raw pids."""

    name: str
    root: Path
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    keypoint_schema: KeypointSchema | None = None
    # pairs of the test images for 1:1 verification, where the dataset defines them (folder:)
    verification: VerificationSet | None = None
    # what became of the keypoint sidecar's rows (None: no sidecar)
    keypoint_report: KeypointReport | None = field(default=None, compare=False, repr=False)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def parts(self) -> dict[str, list[ImageRecord]]:
        """The records of each part: train, query, gallery (and the verification images as
        ``pairs`` where the dataset defines pairs)."""
        out = {"train": self.train, "query": self.query, "gallery": self.gallery}
        if self.verification is not None:
            out["pairs"] = self.verification.images
        return out

    def counts(self) -> dict[str, Counts]:
        """Per part (keyed as ``parts``): images, identities, cameras (pairs and folds)."""
        out = {part: record_counts(getattr(self, part)) for part in ("train", "query", "gallery")}
        if self.verification is not None:
            out["pairs"] = self.verification.pair_counts()
        return out


@dataclass(frozen=True)
class VerificationSet:
    """A face verification set: images plus pairs of image indices with same/different labels.

    ``pairs`` is (P, 2) int64 indices into ``images``; ``labels`` is (P,) with 1 = same identity,
    0 = different; ``folds`` is (P,) the 0-indexed fold of each pair (LFW: 10 folds).
    ``images[i].pid`` indexes the identity in sorted-name order; ``identities[pid]`` is its name.
    """

    name: str
    root: Path
    images: list[ImageRecord]
    identities: list[str]
    pairs: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    keypoint_schema: KeypointSchema | None = None
    # what became of the keypoint sidecar's rows (None: no sidecar)
    keypoint_report: KeypointReport | None = field(default=None, compare=False, repr=False)

    @property
    def num_folds(self) -> int:
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def pair_counts(self) -> Counts:
        """Images, identities, cameras, pairs and folds."""
        return {**record_counts(self.images), "pairs": int(len(self.pairs)), "folds": self.num_folds}

    def parts(self) -> dict[str, list[ImageRecord]]:
        return {"test": self.images}

    def counts(self) -> dict[str, Counts]:
        return {"test": self.pair_counts()}


@dataclass(frozen=True)
class FaceSplit:
    """A face benchmark: training identities (pids relabelled 0..P-1) and a verification set
    of other people, evaluated pair by pair."""

    name: str
    root: Path
    train: list[ImageRecord]
    verification: VerificationSet
    keypoint_schema: KeypointSchema | None = None
    # what became of the keypoint sidecar's rows (None: no sidecar)
    keypoint_report: KeypointReport | None = field(default=None, compare=False, repr=False)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def parts(self) -> dict[str, list[ImageRecord]]:
        return {"train": self.train, "test": self.verification.images}

    def counts(self) -> dict[str, Counts]:
        return {"train": record_counts(self.train), "test": self.verification.pair_counts()}


@dataclass(frozen=True)
class TemplateSet:
    """A template-based 1:1 verification set (IJB-B / IJB-C): images grouped into media and
    templates, and pairs of templates with same/different labels.

    ``template_ids``, ``media_ids`` and ``detector_scores`` are (N,) aligned with ``images``;
    ``template_pairs`` is (P, 2) template ids and ``labels`` (P,) 1 = same subject. Arrays use
    compact dtypes (int32 ids, int8 labels): IJB-C has 15.7 million pairs.
    """

    name: str
    root: Path
    images: list[ImageRecord]
    template_ids: np.ndarray
    media_ids: np.ndarray
    detector_scores: np.ndarray
    template_pairs: np.ndarray
    labels: np.ndarray
    keypoint_schema: KeypointSchema | None = None
    # what became of the keypoint sidecar's rows (None: no sidecar)
    keypoint_report: KeypointReport | None = field(default=None, compare=False, repr=False)

    @property
    def num_templates(self) -> int:
        return len(np.unique(self.template_ids))

    def parts(self) -> dict[str, list[ImageRecord]]:
        return {"test": self.images}

    def counts(self) -> dict[str, Counts]:
        """IJB's 1:1 files name no subjects or cameras: ``ids`` and ``cams`` are None."""
        media = np.unique(np.stack([self.template_ids, self.media_ids], 1), axis=0)
        return {
            "test": {
                "images": len(self.images),
                "ids": None,
                "cams": None,
                "templates": self.num_templates,
                "media": int(len(media)),
                "pairs": int(len(self.labels)),
                "genuine": int(self.labels.sum()),
            }
        }


# anything ``reidbench.datasets.catalog.build_dataset`` returns
Split: TypeAlias = ReidSplit | FaceSplit | VerificationSet | TemplateSet
