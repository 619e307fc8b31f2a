"""Face alignment: the similarity estimate, the ArcFace template, the centre crop, the hook."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from reidbench.data.alignment import (
    ARCFACE_TEMPLATE,
    align_face,
    arcface_matrix,
    center_crop_matrix,
    load_aligned,
    similarity_transform,
    to_normalised,
    to_pixels,
)
from reidbench.datasets.base import FaceAlign, ImageRecord


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    angle, scale = rng.uniform(-math.pi, math.pi), rng.uniform(0.3, 3.0)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, rng.uniform(-50, 50)], [s, c, rng.uniform(-50, 50)], [0, 0, 1.0]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:2, :2].T + m[:2, 2]


def lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: x' = a x - b y + tx, y' = b x + a y + ty solved as linear least
    squares in (a, b, tx, ty)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]])


@pytest.mark.parametrize("seed", range(5))
def test_exact_similarity_is_recovered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = random_similarity(rng)
    src = rng.uniform(0, 100, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, apply(m, src)), m, atol=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_points_match_linear_least_squares(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 100, (5, 2))
    dst = apply(random_similarity(rng), src) + rng.normal(0, 3.0, (5, 2))
    np.testing.assert_allclose(similarity_transform(src, dst), lstsq_similarity(src, dst), atol=1e-8)


def test_mirrored_points_give_a_rotation_not_a_reflection() -> None:
    src = ARCFACE_TEMPLATE.copy()
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:2, :2]) > 0


def test_degenerate_points_are_refused() -> None:
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        arcface_matrix(np.zeros((4, 2)))


@pytest.mark.parametrize("seed", range(3))
def test_landmarks_land_on_the_arcface_template(seed: int) -> None:
    """A face whose landmarks are a similarity image of the template is mapped back exactly:
    landmarks and the pixels drawn at them land on the template."""
    rng = np.random.default_rng(seed)
    m = random_similarity(rng)
    m[:2, :2] *= 1.6 / np.sqrt(abs(np.linalg.det(m[:2, :2])))  # a 1.6x larger face
    m[:2, 2] = 125 - apply(m, ARCFACE_TEMPLATE.mean(0, keepdims=True))[0] + m[:2, 2]
    lm = apply(m, ARCFACE_TEMPLATE)  # pixel-index coordinates in a 250x250 image
    image = np.zeros((250, 250, 3), np.uint8)
    for x, y in lm:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    spec = FaceAlign(size=112)
    aligned, kps = align_face(image, spec, to_normalised(lm, (250, 250)))
    assert aligned.shape == (112, 112, 3) and kps is not None
    np.testing.assert_allclose(to_pixels(kps, (112, 112)), ARCFACE_TEMPLATE, atol=1e-3)
    for x, y in ARCFACE_TEMPLATE:
        assert aligned[round(y), round(x)].min() > 100  # the dot is there
    # the same from pixel landmarks (the IJB path): identical image and keypoints
    aligned_px, kps_px = align_face(image, FaceAlign(112, 1.0, lm))
    np.testing.assert_array_equal(aligned_px, aligned)
    np.testing.assert_allclose(kps_px, kps, atol=1e-6)


def test_warp_is_insightface_norm_crop() -> None:
    """With pixel landmarks the output is cv2.warpAffine(img, M, (112, 112)), black borders,
    the M estimated from landmarks to the template (insightface's norm_crop)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (180, 160, 3), dtype=np.uint8)
    lm = ARCFACE_TEMPLATE * 1.2 + np.array([10.0, 5.0]) + rng.normal(0, 2, (5, 2))
    out, _ = align_face(image, FaceAlign(112, 1.0, lm))
    want = cv2.warpAffine(image, lstsq_similarity(lm, ARCFACE_TEMPLATE)[:2], (112, 112), borderValue=0.0)
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 1


def test_center_crop_keeps_the_documented_square() -> None:
    image = np.zeros((250, 250, 3), np.uint8)
    image[50:200, 50:200] = 255  # the central 150 x 150 square (fraction 0.6)
    out, kps = align_face(image, FaceAlign(112, 0.6))
    assert kps is None and out.shape == (112, 112, 3)
    assert out[2:-2, 2:-2].min() == 255  # the square fills the output
    identity = center_crop_matrix((112, 112), 112, 1.0)
    np.testing.assert_allclose(identity, np.eye(3), atol=1e-12)
    wide = center_crop_matrix((100, 200), 50, 1.0)  # a 100x100 square from x = 50
    np.testing.assert_allclose(
        apply(wide, np.array([[49.5, -0.5], [149.5, 99.5]])), [[-0.5, -0.5], [49.5, 49.5]], atol=1e-12
    )


def test_center_crop_moves_keypoints_with_the_image() -> None:
    image = np.zeros((200, 100, 3), np.uint8)
    # the centre, and a point a quarter down: the top edge of the central 100 x 100 square
    kps = np.array([[0.5, 0.5], [0.25, 0.25]], np.float32)
    _, moved = align_face(image, FaceAlign(50, 1.0), kps)
    np.testing.assert_allclose(moved, [[0.5, 0.5], [0.25, 0.0]], atol=1e-6)


def test_load_aligned_hook() -> None:
    image = np.full((250, 250, 3), 7, np.uint8)
    plain = ImageRecord("x.jpg", 0, 0, np.array([[0.5, 0.5]], np.float32))
    out, kps = load_aligned(plain, image)
    assert out is image and kps is plain.keypoints
    face = ImageRecord("x.jpg", 0, 0, None, FaceAlign(112, 0.6))
    out, kps = load_aligned(face, image)
    assert out.shape == (112, 112, 3) and kps is None and out[56, 56, 0] == 7
