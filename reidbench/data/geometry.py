"""One affine matrix moves an image and its keypoints together.

Matrices are 3x3, act on column vectors (x, y, 1) and map *source* to *destination* coordinates
in the continuous pixel frame: the image spans [0, W] x [0, H] and pixel (i, j) covers
[j, j+1] x [i, i+1]. Normalised keypoints are this frame divided by (W, H). OpenCV samples at
pixel centres (integer coordinates), so `warp_image` shifts by half a pixel on each side; with
this convention a horizontal flip is exactly x -> W - x, and a keypoint drawn at pixel (x, y)
lands where `transform_points` says.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def identity() -> np.ndarray:
    return np.eye(3)


def translation(tx: float, ty: float) -> np.ndarray:
    m = np.eye(3)
    m[0, 2], m[1, 2] = tx, ty
    return m


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.diag([sx, sx if sy is None else sy, 1.0])


def rotation(degrees: float) -> np.ndarray:
    """Counter-clockwise on screen (y points down), about the origin."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def about(center: tuple[float, float], m: np.ndarray) -> np.ndarray:
    """Apply ``m`` about ``center`` instead of the origin."""
    cx, cy = center
    return translation(cx, cy) @ m @ translation(-cx, -cy)


def similarity(
    center: tuple[float, float], degrees: float = 0.0, scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Rotate and scale about ``center``, then translate by ``shift`` (pixels)."""
    return translation(*shift) @ about(center, rotation(degrees) @ scaling(scale))


def random_similarity(
    rng: np.random.Generator, hw: tuple[int, int], max_degrees: float, max_scale: float,
    max_shift: float,
) -> np.ndarray:
    """A random similarity about the centre of an ``hw`` image: rotation uniform in
    [-max_degrees, max_degrees], scale uniform in [1 - max_scale, 1 + max_scale], then a shift
    uniform in [-max_shift, max_shift] times (W, H) on each axis.

    Always draws four uniforms from ``rng`` (also for zero ranges), so the same generator state
    gives the same direction of misalignment at every range.
    """
    h, w = hw
    u = rng.uniform(-1.0, 1.0, size=4)
    return similarity(
        (w / 2.0, h / 2.0), degrees=float(u[0] * max_degrees), scale=float(1.0 + u[1] * max_scale),
        shift=(float(u[2] * max_shift * w), float(u[3] * max_shift * h)),
    )


def hflip(width: float) -> np.ndarray:
    """Mirror x in an image of the given width: x -> width - x."""
    return np.array([[-1.0, 0.0, width], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def resize(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    return scaling(dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0])


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map (K, 2) pixel points through the 3x3 matrix ``m``."""
    pts = np.asarray(points, dtype=np.float64)
    homo = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)
    return (homo @ m.T)[:, :2]


def transform_keypoints(
    keypoints: np.ndarray, m: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> np.ndarray:
    """Map (K, 2) keypoints normalised to the source image into the destination's [0, 1] frame."""
    scale_src = np.array([src_hw[1], src_hw[0]], dtype=np.float64)
    scale_dst = np.array([dst_hw[1], dst_hw[0]], dtype=np.float64)
    return (transform_points(keypoints * scale_src, m) / scale_dst).astype(np.float32)


def warp_image(
    image: np.ndarray, m: np.ndarray, dst_hw: tuple[int, int],
    border: str = "constant", fill: tuple[int, ...] | int = 0,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp an (H, W[, C]) uint8 image by ``m`` (continuous frame) into a ``dst_hw`` canvas.

    ``border`` is "constant" (filled with ``fill``) or "replicate".
    """
    centre = translation(-0.5, -0.5) @ m @ translation(0.5, 0.5)
    mode = cv2.BORDER_CONSTANT if border == "constant" else cv2.BORDER_REPLICATE
    return cv2.warpAffine(
        np.ascontiguousarray(image), centre[:2], (dst_hw[1], dst_hw[0]),
        flags=interpolation, borderMode=mode, borderValue=fill,
    )
