"""Face alignment: 5 landmarks onto insightface's ArcFace 112x112 template, else a centre crop.

With landmarks, the similarity (rotation, uniform scale, translation) that maps them onto the
template in the least-squares sense (Umeyama's closed form, which is what insightface's
``face_align.norm_crop`` estimates through scikit-image) warps the image with bilinear
sampling and black borders, exactly as ``cv2.warpAffine`` does there. Landmark coordinates are
pixel-index coordinates (pixel (i, j) is centred on x = j, y = i), the convention of the
template and of insightface's detectors; a record's normalised keypoints (the continuous frame
of ``reidbench.data.geometry``) are converted with ``x * W - 0.5``.

Without landmarks the centre square of side ``center_fraction * min(H, W)`` is resized to the
output size (``FaceAlign`` documents the choice per dataset). Keypoints of the record, if any,
are moved by the same matrix, so the model always receives keypoints in the image it sees.
"""

from __future__ import annotations

import cv2
import numpy as np

from reidbench.data.records import FaceAlign, ImageRecord

# insightface's ArcFace template for 112x112 crops (left eye, right eye, nose tip, left and right
# mouth corners; "left" is the image's left), pixel-index coordinates.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 similarity M minimising sum ||dst_i - M src_i||^2 (Umeyama 1991, with scale).

    Args:
        src, dst: (K, 2) corresponding points, K >= 2, src not all equal.
    Returns:
        (3, 3) float64 matrix acting on column vectors (x, y, 1); a proper rotation (no mirror).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (K, 2) arrays with K >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the source points coincide: no similarity is defined")
    cov = d_c.T @ s_c / len(src)  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = mu_d - scale * rot @ mu_s
    return m


def arcface_matrix(landmarks_px: np.ndarray, size: int = TEMPLATE_SIZE) -> np.ndarray:
    """3x3 similarity from (5, 2) pixel-index landmarks to the ArcFace template scaled to
    ``size`` (the template is defined for 112; other sizes scale it, as insightface does for
    its other templates)."""
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.shape != (5, 2) or not np.isfinite(lm).all():
        raise ValueError(f"expected (5, 2) finite landmarks, got shape {lm.shape}")
    return similarity_transform(lm, ARCFACE_TEMPLATE * (size / TEMPLATE_SIZE))


def center_crop_matrix(src_hw: tuple[int, int], size: int, fraction: float) -> np.ndarray:
    """3x3 pixel-index matrix taking the centre square of side ``fraction * min(H, W)`` to a
    ``size`` x ``size`` image (the square's edges land on the output's edges)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"center_fraction must be in (0, 1], got {fraction}")
    h, w = src_hw
    side = fraction * min(h, w)
    s = size / side
    x0, y0 = (w - side) / 2.0, (h - side) / 2.0
    # continuous frame: x_out = s * (x - x0); pixel-index coordinates are continuous - 0.5
    m = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return np.linalg.inv(shift) @ m @ shift


def to_pixels(keypoints: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Normalised keypoints (continuous frame) -> pixel-index coordinates."""
    h, w = hw
    return np.asarray(keypoints, dtype=np.float64) * np.array([w, h]) - 0.5


def to_normalised(points_px: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Pixel-index coordinates -> normalised keypoints (continuous frame), float32."""
    h, w = hw
    return ((np.asarray(points_px, dtype=np.float64) + 0.5) / np.array([w, h])).astype(np.float32)


def alignment_matrix(
    spec: FaceAlign,
    hw: tuple[int, int],
    keypoints: np.ndarray | None,
) -> np.ndarray:
    """The 3x3 pixel-index matrix ``spec`` asks for on an image of size ``hw``."""
    if spec.landmarks_px is not None:
        return arcface_matrix(spec.landmarks_px, spec.size)
    if keypoints is not None and len(keypoints) == 5:
        return arcface_matrix(to_pixels(keypoints, hw), spec.size)
    return center_crop_matrix(hw, spec.size, spec.center_fraction)


def align_face(
    image: np.ndarray,
    spec: FaceAlign,
    keypoints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Warp a decoded (H, W, C) image as ``spec`` says.

    Returns the (size, size, C) image and the keypoints moved into it (normalised; None when
    neither ``keypoints`` nor ``spec.landmarks_px`` were given).
    """
    hw = image.shape[:2]
    m = alignment_matrix(spec, hw, keypoints)
    out = cv2.warpAffine(
        image,
        m[:2],
        (spec.size, spec.size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if out.ndim == 2:  # cv2 drops a single channel axis
        out = out[:, :, None]
    if keypoints is not None:
        src = to_pixels(keypoints, hw)
    elif spec.landmarks_px is not None:
        src = np.asarray(spec.landmarks_px, dtype=np.float64)
    else:
        return out, None
    moved = src @ m[:2, :2].T + m[:2, 2]
    return out, to_normalised(moved, (spec.size, spec.size))


def load_aligned(record: ImageRecord, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The image and keypoints the model should see for ``record``, given its decoded image:
    aligned when ``record.align`` is set, unchanged otherwise. This is the hook the data loader
    calls after decoding."""
    if record.align is None:
        return image, record.keypoints
    return align_face(image, record.align, record.keypoints)
