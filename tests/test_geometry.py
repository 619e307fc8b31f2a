"""One matrix moves image and keypoints together."""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.data import geometry as G
from reidbench.data.transforms import Transform
from reidbench.datasets.base import BODY_KEYPOINTS


def dot_image(h: int, w: int, x: int, y: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[y - 1:y + 2, x - 1:x + 2] = 255
    return img


@pytest.mark.parametrize("m", [
    G.hflip(64), G.translation(5, -7), G.resize((128, 64), (256, 128)),
    G.similarity((32, 64), degrees=20, scale=1.1, shift=(3, 4)),
])
def test_drawn_point_lands_where_the_matrix_says(m: np.ndarray) -> None:
    h, w, x, y = 128, 64, 20, 50
    dst = (256, 128) if m[0, 0] == 2 else (128, 64)
    out = G.warp_image(dot_image(h, w, x, y), m, dst)
    ys, xs = np.nonzero(out[..., 0] > 60)
    weights = out[ys, xs, 0].astype(float)
    centroid = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)]) + 0.5
    expected = G.transform_points(np.array([[x + 0.5, y + 0.5]]), m)[0]
    np.testing.assert_allclose(centroid, expected, atol=0.35)


def test_known_points() -> None:
    np.testing.assert_allclose(G.transform_points(np.array([[0.0, 0.0], [10.0, 5.0]]), G.hflip(64)),
                               [[64, 0], [54, 5]])
    r = G.similarity((0, 0), degrees=90)
    np.testing.assert_allclose(G.transform_points(np.array([[1.0, 0.0]]), r), [[0, -1]], atol=1e-12)


def test_flip_transform_swaps_left_and_right() -> None:
    kps = np.array([[0.5, 0.1], [0.5, 0.2], [0.3, 0.3], [0.7, 0.3], [0.2, 0.5], [0.8, 0.5],
                    [0.4, 0.6], [0.6, 0.6], [0.4, 0.9], [0.6, 0.9]], dtype=np.float32)
    tf = Transform(128, 64, (0.5,) * 3, (0.5,) * 3, train=True, flip_prob=1.0,
                   flip_perm=tuple(BODY_KEYPOINTS.flip_permutation()))
    _, out = tf(np.zeros((128, 64, 3), np.uint8), kps, np.random.default_rng(0))
    # right shoulder (index 2) was at x=0.3; after a flip the new right shoulder is the old left one
    np.testing.assert_allclose(out[2], [1 - 0.7, 0.3], atol=1e-6)
    np.testing.assert_allclose(out[3], [1 - 0.3, 0.3], atol=1e-6)
    np.testing.assert_allclose(out[0], [0.5, 0.1], atol=1e-6)


def test_eval_transform_is_deterministic_and_keeps_keypoints() -> None:
    kps = np.array([[0.25, 0.75]], dtype=np.float32)
    tf = Transform(256, 128, (0.0,) * 3, (1.0,) * 3)
    img, out = tf(np.full((128, 64, 3), 255, np.uint8), kps)
    assert img.shape == (3, 256, 128) and float(img.max()) == pytest.approx(1.0)
    np.testing.assert_allclose(out, kps, atol=1e-6)


def test_same_seed_same_augmentation() -> None:
    img = np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)
    tf = Transform(128, 64, (0.5,) * 3, (0.5,) * 3, train=True, pad=8, erase_prob=0.5)
    a, _ = tf(img, None, np.random.default_rng(5))
    b, _ = tf(img, None, np.random.default_rng(5))
    assert (a == b).all()
