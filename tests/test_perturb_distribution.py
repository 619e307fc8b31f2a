"""The distribution of the perturbation draws against what ``reidbench.data.perturb`` documents:
the levels of its docstring table at every severity, both signs of scale and rotation equally
often, translation directions uniform around the full circle, the random similarity's components
uniform and independent within their ranges, Gaussian keypoint noise of the stated std, and the
per-sample seeding formula. Statistical checks use fixed seeds and margins of several standard
errors, so they are deterministic and not fragile."""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
import pytest
from scipy import stats

from reidbench.data import perturb as P

HW = (128, 64)  # (height, width) of a re-ID input
N = 1000  # draws per severity


def documented_levels() -> dict[str, tuple[float, ...]]:
    """The per-severity magnitudes of the module docstring's table (severity 1..5)."""
    doc = P.__doc__ or ""
    rows = {}
    for line in doc.splitlines():
        m = re.match(r"^(\w+)\s.*\s([adst]):\s+((?:[\d.]+\s+){4}[\d.]+)\s*$", line)
        if m:
            rows[m.group(1)] = tuple(float(v) for v in m.group(3).split())
    return rows


LEVELS = documented_levels()


def test_the_docstring_table_is_read() -> None:
    assert set(LEVELS) == {"scale", "rotate", "translate", "kpnoise"}
    assert all(len(v) == 5 for v in LEVELS.values())


def draws(name: str, severity: int, n: int = N, hw: tuple[int, int] = HW, k: int = 5,
          stream: str = "query") -> list[P.Misalignment]:
    pert = P.build_perturbation(name)
    return [pert.draw(severity, P.sample_rng(0, name, stream, i), hw, k) for i in range(n)]


def centre(hw: tuple[int, int] = HW) -> np.ndarray:
    return np.array([hw[1] / 2.0, hw[0] / 2.0])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:2, :2].T + m[:2, 2]


def decompose(ms: np.ndarray | list[P.Misalignment], hw: tuple[int, int] = HW
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(degrees counter-clockwise on screen, isotropic scale, shift of the image centre) of
    (n, 3, 3) similarities (or draws); asserts that they are similarities."""
    if isinstance(ms, list):
        ms = np.stack([m.matrix for m in ms])
    a = ms[:, :2, :2]
    det = np.linalg.det(a)
    assert (det > 0).all()  # no reflection
    scale = np.sqrt(det)
    np.testing.assert_allclose(a @ a.transpose(0, 2, 1), scale[:, None, None] ** 2 * np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(ms[:, 2], np.broadcast_to([0.0, 0.0, 1.0], (len(ms), 3)))
    # y points down: counter-clockwise on screen maps (1, 0) to (cos, -sin)
    degrees = np.degrees(np.arctan2(-a[:, 1, 0], a[:, 0, 0]))
    c = centre(hw)
    return degrees, scale, np.einsum("nij,j->ni", a, c) + ms[:, :2, 2] - c


def assert_balanced(flags: list[bool]) -> None:
    """A fair coin over N draws: within 6 standard errors of one half."""
    frac = float(np.mean(flags))
    assert abs(frac - 0.5) < 6 * math.sqrt(0.25 / len(flags)), frac


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_scale_is_exactly_the_level_up_or_down_equally_often(severity: int) -> None:
    d = LEVELS["scale"][severity - 1]
    mis = draws("scale", severity)
    degrees, scale, shift = decompose(mis)
    assert (degrees == 0.0).all() and np.allclose(shift, 0, atol=1e-12)  # about the centre
    assert (np.isclose(scale, 1 + d, rtol=0, atol=1e-12) | np.isclose(scale, 1 - d, rtol=0, atol=1e-12)).all()
    assert all(m.keypoint_noise is None for m in mis)
    assert_balanced(list(scale > 1))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_rotation_is_exactly_the_level_both_ways_equally_often(severity: int) -> None:
    a = LEVELS["rotate"][severity - 1]
    degrees, scale, shift = decompose(draws("rotate", severity))
    np.testing.assert_allclose(scale, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(shift, 0.0, atol=1e-9)  # about the centre
    np.testing.assert_allclose(np.abs(degrees), a, rtol=0, atol=1e-9)
    assert_balanced(list(degrees > 0))


@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("hw", [HW, (112, 112)])
def test_translation_has_the_level_and_a_uniform_direction(severity: int, hw: tuple[int, int]) -> None:
    """|(dx / w, dy / h)| is exactly t, and the direction is uniform on the full circle: a
    Kolmogorov-Smirnov test against U(-pi, pi) and every octant hit about N / 8 times (a draw
    over half the circle, or a shift along the axes only, fails)."""
    t = LEVELS["translate"][severity - 1]
    ms = np.stack([m.matrix for m in draws("translate", severity, hw=hw)])
    np.testing.assert_array_equal(ms[:, :2, :2], np.broadcast_to(np.eye(2), (N, 2, 2)))  # a pure shift
    dx, dy = ms[:, 0, 2] / hw[1], ms[:, 1, 2] / hw[0]
    np.testing.assert_allclose(np.hypot(dx, dy), t, rtol=0, atol=1e-12)
    angles = np.arctan2(dy, dx)
    assert stats.kstest(angles, stats.uniform(loc=-math.pi, scale=2 * math.pi).cdf).pvalue > 1e-5
    octants = np.bincount(((angles + math.pi) // (math.pi / 4)).astype(int) % 8, minlength=8)
    expected = N / 8
    assert (abs(octants - expected) < 6 * math.sqrt(expected)).all(), octants


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_affine_components_are_uniform_and_independent_within_the_ranges(severity: int) -> None:
    a = LEVELS["rotate"][severity - 1]
    d = LEVELS["scale"][severity - 1]
    t = LEVELS["translate"][severity - 1]
    assert P.affine_range(severity) == pytest.approx((a, d, t))
    degrees, scale, shift = decompose(draws("affine", severity))
    parts = np.column_stack([degrees, scale, shift])
    ranges = [(-a, 2 * a), (1 - d, 2 * d), (-t * HW[1], 2 * t * HW[1]), (-t * HW[0], 2 * t * HW[0])]
    for column, (lo, width) in zip(parts.T, ranges):
        assert (column >= lo - 1e-9).all() and (column <= lo + width + 1e-9).all()
        assert stats.kstest(column, stats.uniform(loc=lo, scale=width).cdf).pvalue > 1e-5
    corr = np.corrcoef(parts.T)  # rotation, scale, shift x, shift y drawn independently
    assert (np.abs(corr - np.eye(4)) < 6 / math.sqrt(N)).all(), corr


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_keypoint_noise_is_gaussian_with_the_level_as_std(severity: int) -> None:
    s = LEVELS["kpnoise"][severity - 1]
    mis = draws("kpnoise", severity, n=500, k=10)
    assert all(np.array_equal(m.matrix, np.eye(3)) for m in mis)  # the image is not moved
    noise = np.stack([m.keypoint_noise for m in mis]).astype(np.float64)  # (500, 10, 2)
    values = noise.ravel()
    assert values.std() == pytest.approx(s, rel=0.05)  # 10,000 values: std error 0.7 %
    assert abs(values.mean()) < 6 * s / math.sqrt(values.size)
    assert stats.kstest(values, stats.norm(scale=s).cdf).pvalue > 1e-5
    # x and y, and different keypoints, are independent
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.06
    assert abs(np.corrcoef(noise[:, 0, 0], noise[:, 1, 0])[0, 1]) < 6 / math.sqrt(500)


def test_the_draw_of_a_sample_follows_the_documented_seeding() -> None:
    """default_rng([seed, crc32(name), crc32(stream), index]), whatever the severity: the same
    four keys give the same draw, changing any one of them changes it."""
    pert = P.build_perturbation("affine")

    def draw(seed: int, name: str, stream: str, index: int, severity: int = 3) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(stream.encode()), index])
        return pert.draw(severity, rng, HW).matrix

    ref = draw(7, "affine", "gallery", 12)
    np.testing.assert_array_equal(pert.draw(3, P.sample_rng(7, "affine", "gallery", 12), HW).matrix, ref)
    for other in (draw(8, "affine", "gallery", 12), draw(7, "scale", "gallery", 12),
                  draw(7, "affine", "query", 12), draw(7, "affine", "gallery", 13)):
        assert not np.allclose(other, ref)
    # severity changes the magnitude only: the four uniforms are the same at every level
    low, high = (decompose(draw(7, "affine", "gallery", 12, s)[None]) for s in (1, 5))
    assert np.sign(low[0]) == np.sign(high[0]) and np.sign(low[1] - 1) == np.sign(high[1] - 1)
    assert high[0] == pytest.approx(low[0] * 5) and high[1] - 1 == pytest.approx((low[1] - 1) * 5)
    np.testing.assert_allclose(high[2], low[2] * 5)


@pytest.mark.parametrize("name", ["scale", "rotate", "translate", "affine", "kpnoise"])
def test_severity_zero_draws_the_identity_for_every_sample(name: str) -> None:
    for mis in draws(name, 0, n=50):
        assert mis.is_identity and mis is P.IDENTITY
