"""Records and splits every dataset adapter returns (see DESIGN.md, "Data contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

JUNK_PID = -1  # Market-1501 junk images: dropped everywhere (torchreid semantics)
DISTRACTOR_PID = 0  # Market-1501 background / distractor images: kept in the gallery


@dataclass(frozen=True)
class KeypointSchema:
    """Names of the K keypoints and the left/right pairs a horizontal flip swaps."""

    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def flip_permutation(self) -> np.ndarray:
        """Index array p such that flipped_keypoints = keypoints[p] after mirroring x."""
        perm = np.arange(len(self.names))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


# 10 body keypoints, written by the synthetic re-ID generator; left/right from the person's view.
BODY_KEYPOINTS = KeypointSchema(
    names=(
        "head",
        "neck",
        "right_shoulder",
        "left_shoulder",
        "right_hand",
        "left_hand",
        "right_hip",
        "left_hip",
        "right_ankle",
        "left_ankle",
    ),
    flip_pairs=((2, 3), (4, 5), (6, 7), (8, 9)),
)

# The 5 ArcFace landmarks, in insightface's order.
FACE_KEYPOINTS = KeypointSchema(
    names=("left_eye", "right_eye", "nose", "left_mouth", "right_mouth"),
    flip_pairs=((0, 1), (3, 4)),
)


@dataclass(frozen=True)
class FaceAlign:
    """How a face is cut from its stored image before the model sees it
    (``reidbench.datasets.alignment``).

    With landmarks (``landmarks_px`` here, else the record's 5 keypoints) the face is mapped by
    the least-squares similarity onto insightface's ArcFace ``size`` x ``size`` template; without
    them the centre square of side ``center_fraction`` x min(height, width) is resized to
    ``size`` x ``size``.
    """

    size: int = 112  # output side, pixels (the ArcFace template is defined for 112)
    center_fraction: float = 1.0  # fallback crop: fraction of the shorter image side kept
    # (5, 2) landmarks in pixel-index coordinates of the stored image (IJB's meta files give
    # them so); None: take the record's normalised keypoints
    landmarks_px: np.ndarray | None = field(default=None, compare=False, repr=False)


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


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path, identity, camera and optional (K, 2) keypoints in [0, 1].

    ``pid`` is the dataset's identity (relabelled to 0..P-1 in a train split); ``camid`` is
    0-indexed. ``keypoints`` are (x, y) normalised to the image as stored on disk. ``align``,
    when set, says how a face is aligned at load time (``alignment.load_aligned``); keypoints
    stay in the stored image's frame and are moved with the image.
    """

    path: str
    pid: int
    camid: int
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)
    align: FaceAlign | None = field(default=None, compare=False, repr=False)


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

    def summary(self) -> dict[str, dict[str, int]]:
        """Per split: number of images, identities and cameras."""
        out = {}
        for split in ("train", "query", "gallery"):
            records: list[ImageRecord] = getattr(self, split)
            out[split] = {
                "images": len(records),
                "ids": len({r.pid for r in records}),
                "cams": len({r.camid for r in records}),
            }
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
