"""The sample record every adapter returns and the loader reads (DESIGN.md, "Data contracts"):
an image path, identity, camera, optional keypoints, and how a face is aligned at load time;
plus the keypoint schemas (names and the left/right pairs a flip swaps).

Splits (query/gallery, pairs, templates) are dataset-level and live in
``reidbench.datasets.base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    (``reidbench.data.alignment``).

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
