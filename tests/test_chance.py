"""Chance-level metrics (reidbench/metrics/chance.py) against brute force over every ranking and
against the rank evaluator on random scores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from reidbench.metrics.chance import chance_map, expected_ap
from reidbench.metrics.rank import evaluate_ranking


@pytest.mark.parametrize(("valid", "positives"), [(1, 1), (2, 1), (4, 2), (5, 1), (5, 5), (6, 3)])
def test_expected_ap_is_the_mean_over_every_ranking(valid: int, positives: int) -> None:
    total, count = 0.0, 0
    for order in itertools.permutations(range(valid)):
        relevant = [item < positives for item in order]  # items 0..R-1 are the positives
        hits, ap = 0, 0.0
        for rank, rel in enumerate(relevant, start=1):
            if rel:
                hits += 1
                ap += hits / rank
        total += ap / positives
        count += 1
    assert expected_ap(valid, positives) == pytest.approx(total / count, abs=1e-12)


def test_expected_ap_refuses_impossible_counts() -> None:
    for valid, positives in ((3, 0), (2, 3), (0, 0)):
        with pytest.raises(ValueError):
            expected_ap(valid, positives)


def test_chance_map_is_what_the_evaluator_averages_over_random_scores() -> None:
    rng = np.random.default_rng(0)
    # junk ids, same-camera positives removed, a query with no valid match (pid 9: one gallery
    # item, same camera), unequal numbers of positives
    qp = np.array([1, 2, 3, 9, 1])
    qc = np.array([0, 1, 0, 0, 2])
    gp = np.array([1, 1, 1, 2, 2, 3, -1, -1, 4, 4, 5, 9, 6, 7])
    gc = np.array([0, 1, 2, 1, 0, 3, 0, 1, 2, 2, 0, 0, 1, 1])
    expected = chance_map(qp, gp, qc, gc)
    draws = [evaluate_ranking(rng.standard_normal((len(qp), len(gp))), qp, gp, qc, gc,
                              higher_is_better=True).mAP for _ in range(4000)]
    assert evaluate_ranking(rng.standard_normal((len(qp), len(gp))), qp, gp, qc, gc,
                            higher_is_better=True).num_skipped == 1
    se = np.std(draws) / math.sqrt(len(draws))
    assert abs(np.mean(draws) - expected) < 4 * se
    # hand value for query 0 (pid 1, cam 0): gallery 0 removed, junk 6 and 7 ignored -> 11 valid,
    # 2 positives
    assert chance_map(qp[:1], gp, qc[:1], gc) == pytest.approx(expected_ap(11, 2), abs=1e-15)
    # without cameras nothing but junk is removed: 12 valid, 3 positives
    assert chance_map(qp[:1], gp, None, None) == pytest.approx(expected_ap(12, 3), abs=1e-15)


def test_chance_map_without_any_valid_query_is_nan_and_camera_arrays_go_together() -> None:
    assert math.isnan(chance_map(np.array([5]), np.array([1, 2]), None, None))
    with pytest.raises(ValueError):
        chance_map(np.array([1]), np.array([1]), np.array([0]), None)
