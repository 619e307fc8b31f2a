"""rel_index: what the mutation run found undefended (scripts/mutation_test.py).

The bucket functions were checked at the default ratio 1.9 only, where several wrong
constants (gamma = 9 ratio, alpha = 1 / ratio...) happen to give the same integer buckets. Here
the paper's piecewise function (iRPE, Eq. 18), written on plain floats, is compared at other
ratios and on fractional offsets (KP-RPE's keypoint offsets are fractional), and the defaults,
dtype and device of the public functions are pinned.
"""

from __future__ import annotations

import math

import pytest
import torch

from reidbench.layers.rel_index import (
    abg,
    bucket_ids,
    clip_index,
    offsets_to_buckets,
    piecewise_index,
)

RATIOS = (0.4, 0.9, 1.9, 2.6, 3.7)


def paper_index(x: float, ratio: float) -> int:
    """Eq. (18) on one number: alpha : beta : gamma = 1 : 2 : 8 times ``ratio``; round half to
    even (as torch.round), clip the magnitude at beta, then truncate to an integer."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    if abs(x) <= alpha:
        return int(round(x))
    mag = min(beta, round(alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha)))
    return int(math.copysign(mag, x))


def offsets() -> list[float]:
    whole = [float(v) for v in range(-40, 41)]
    fractional = [k * 0.37 for k in range(-60, 61)] + [0.45, -0.45, 0.95, 1.45, 2.55, 11.5]
    return whole + fractional


def test_abg_is_one_two_eight_times_the_ratio() -> None:
    assert abg(1.9) == pytest.approx((1.9, 3.8, 15.2))
    assert abg(0.5) == pytest.approx((0.5, 1.0, 4.0))


@pytest.mark.parametrize("ratio", RATIOS)
def test_piecewise_matches_the_paper_at_other_ratios(ratio: float) -> None:
    xs = offsets()
    got = piecewise_index(torch.tensor(xs, dtype=torch.float64), *abg(ratio))
    assert got.dtype == torch.int64
    assert got.tolist() == [paper_index(x, ratio) for x in xs]


@pytest.mark.parametrize("ratio", RATIOS)
def test_cross_buckets_match_the_paper_at_other_ratios(ratio: float) -> None:
    """``offsets_to_buckets`` through ``_index``: piecewise and clip, rows and columns."""
    xs = offsets()
    b = int(2 * ratio)
    pairs = torch.tensor([[x, -x / 2] for x in xs], dtype=torch.float64)
    rows = offsets_to_buckets(pairs, "cross_rows", ratio, "piecewise")
    cols = offsets_to_buckets(pairs, "cross_cols", ratio, "piecewise")
    assert rows.tolist() == [paper_index(x, ratio) + b for x in xs]
    assert cols.tolist() == [paper_index(-x / 2, ratio) + b for x in xs]
    clipped = offsets_to_buckets(pairs, "cross_rows", ratio, "clip")
    assert clipped.tolist() == [max(-b, min(b, round(x))) + b for x in xs]


@pytest.mark.parametrize("ratio", (0.9, 2.6, 3.7))
def test_two_dimensional_buckets_at_other_ratios(ratio: float) -> None:
    grid = (9, 7)
    ids = bucket_ids(grid, "quant", ratio, "piecewise")
    euclid = bucket_ids(grid, "euclidean", ratio, "piecewise")
    product = bucket_ids(grid, "product", ratio, "piecewise")
    b = int(2 * ratio)
    pos = [divmod(n, grid[1]) for n in range(grid[0] * grid[1])]
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            dy, dx = yi - yj, xi - xj
            assert int(ids[i, j]) == paper_index(dy * dy + dx * dx, ratio)
            assert int(euclid[i, j]) == paper_index(round(math.hypot(dy, dx)), ratio)
            assert int(product[i, j]) == ((paper_index(dy, ratio) + b) * (2 * b + 1)
                                          + paper_index(dx, ratio) + b)


def test_fraction_just_beyond_a_small_alpha() -> None:
    """ratio 0.4 (alpha 0.4): 0.45 is beyond alpha and maps to 0.4 + ln(1.125)/ln(8) * 0.4 =
    0.42 -> bucket 0 (a floor of 1 under |x| would give 0.58 -> 1)."""
    assert piecewise_index(torch.tensor([0.45, -0.45]), *abg(0.4)).tolist() == [0, 0]


def test_defaults_are_ratio_1_9_piecewise() -> None:
    """Documented defaults: ratio 1.9, piecewise. |x| = 0, 1, 2, 3, 4, 10 -> 0, 1, 2, 2, 3, 3,
    shifted by b = 3 in the cross buckets; a 1 x 3 grid's product buckets are 24 + (i - j)."""
    x = torch.tensor([0, 1, 2, 3, 4, 10, -10])
    pairs = torch.stack([x, torch.zeros_like(x)], dim=1)
    assert offsets_to_buckets(pairs, "cross_rows").tolist() == [3, 4, 5, 5, 6, 6, 0]
    assert bucket_ids((1, 3), "product").tolist() == [[24, 23, 22], [25, 24, 23], [26, 25, 24]]
    # ratio 2.9 would give b = 5 and a different centre bucket
    assert int(bucket_ids((1, 1), "cross_cols")[0, 0]) == 3


def test_clip_index_rounds_half_to_even_and_returns_int64() -> None:
    x = torch.tensor([-5.6, -2.5, -0.5, 0.5, 1.5, 2.4, 9.0], dtype=torch.float32)
    got = clip_index(x, 3.8)
    assert got.dtype == torch.int64
    assert got.tolist() == [-3, -2, 0, 0, 2, 2, 3]


def test_bucket_ids_are_on_the_requested_device() -> None:
    """The meta device exists in every torch build: the ids must be moved there."""
    ids = bucket_ids((2, 3), "product", 1.9, "piecewise", skip=1, device="meta")
    assert ids.device.type == "meta" and ids.shape == (7, 7)
    assert bucket_ids((2, 3), "product", 1.9, "piecewise", skip=1).device.type == "cpu"
