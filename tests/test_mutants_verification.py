"""Verification metrics: what the mutation run found undefended (scripts/mutation_test.py).

Hand-computed values (derivations in the comments) and scikit-learn's ``roc_curve`` where it
defines the convention: EER interpolation, distances (``higher_is_better=False``) and their
thresholds, a single positive or negative pair, the bends kept by ``drop_intermediate``,
k-fold's threshold grid and its 2 - 2 cos distances, custom FARs, the record's keys.
"""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.errors import ReidbenchError
from reidbench.metrics.verification import (
    contiguous_folds,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
    tar_fields,
    verification_metrics,
)


def test_contiguous_folds_are_int64_fold_indices() -> None:
    folds = contiguous_folds(7, 3)
    assert folds.dtype == np.int64
    assert folds.tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_eer_interpolates_the_crossing() -> None:
    """fpr (0, .5, 1), tpr (0, .8, 1): fnr (1, .2, 0). FPR - FNR goes -1 -> .3 between points 0
    and 1: w = 1 / 1.3, EER = 0 + w * .5 = 5 / 13."""
    assert eer(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0])) == pytest.approx(5 / 13)


def test_eer_of_a_curve_that_starts_separated() -> None:
    """A curve given from TPR 1 at FPR 0: FPR >= FNR at the first point, EER = 0."""
    assert eer(np.array([0.0, 1.0]), np.array([1.0, 1.0])) == 0.0


def test_distances_give_the_same_roc_and_their_own_thresholds() -> None:
    d = np.array([0.3, 1.2, 0.7, 2.0, 0.7])
    y = np.array([1, 0, 1, 0, 0])
    fpr, tpr, thr = roc(d, y, higher_is_better=False)
    # ascending distance: .3 (pos), .7 (pos, neg), 1.2 (neg), 2.0 (neg)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1, 1])
    assert thr[0] == -np.inf or thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], [0.3, 0.7, 1.2, 2.0])


def test_one_positive_and_one_negative_pair() -> None:
    fpr, tpr, _ = roc(np.array([0.9, 0.5, 0.1]), np.array([0, 1, 0]))
    np.testing.assert_allclose(tpr, [0, 0, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0.5, 0.5, 1])
    fpr, tpr, _ = roc(np.array([0.9, 0.5, 0.1]), np.array([1, 0, 1]))
    np.testing.assert_allclose(fpr, [0, 0, 1, 1])


def test_drop_intermediate_keeps_every_bend() -> None:
    """Runs at scores 5 (1 pos), 4 (1 pos, 1 neg), 3 (1 pos, 2 neg): tps 1, 2, 3 (straight),
    fps 0, 1, 3 (bends at the middle point), so the middle point stays. With three collinear
    points (3 positives) the middle one goes."""
    s = np.array([5, 4, 4, 3, 3, 3.0])
    y = np.array([1, 1, 0, 1, 0, 0])
    fpr, tpr, _ = roc(s, y, drop_intermediate=True)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    fpr, tpr, _ = roc(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 1]), drop_intermediate=True)
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1])
    metrics = pytest.importorskip("sklearn.metrics")
    for scores, labels in ((s, y), (np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0]))):
        ref_fpr, ref_tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=True)
        fpr, tpr, _ = roc(scores, labels, drop_intermediate=True)
        np.testing.assert_allclose(fpr, ref_fpr)
        np.testing.assert_allclose(tpr, ref_tpr)


def test_strict_tar_at_far_one_with_a_single_negative() -> None:
    """One negative pair can measure FAR 1 (not 0.5)."""
    fpr, tpr = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])
    assert tar_at_far(fpr, tpr, 1, (0.5, 1.0)) == {"0.5": None, "1": 1.0}


def test_tar_fields_for_distances_single_positive_and_no_positive() -> None:
    """Distances: 0.1 (pos) 0.2, 0.3, 0.4 (neg). At FAR 1/3 strict: the best TPR with FPR <= 1/3
    is 1 (the positive comes first). A single positive is enough to report; no positive is not."""
    d = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([1, 0, 0, 0])
    fields = tar_fields(d, y, (1 / 3,), higher_is_better=False)
    key = f"{1 / 3:g}"
    assert fields["tar_at_far"][key] == 1.0
    assert fields["tar_at_far_nearest"][key] == 1.0
    empty = tar_fields(d, np.zeros(4, int), (0.5,))
    assert empty == {"tar_at_far": {"0.5": None}, "tar_at_far_nearest": {"0.5": None}}


def test_kfold_default_grid_is_0_to_4_by_a_hundredth() -> None:
    """Fold 0: pos at .005, neg at .5; fold 1: pos at .008, neg at .6. Training on one fold,
    every threshold in (pos, neg] is perfect; the grid's first such is 0.01 in both cases:
    [0, 4) starting at 0 (starting at 1 would choose 1.0 and call the negatives positive)."""
    d = np.array([0.005, 0.5, 0.008, 0.6])
    y = np.array([1, 0, 1, 0])
    folds = np.array([0, 0, 1, 1])
    got = kfold_accuracy(d, y, folds)
    assert got.accuracy == 1.0 and got.accuracy_std == 0.0
    np.testing.assert_allclose(got.thresholds, [0.01, 0.01])
    # positives at 3.995, negatives at 4.5: only a threshold in (3.995, 4.5] separates them,
    # and the grid stops at 3.99; every threshold ties at 0.5 training accuracy, the first (0)
    # wins and the held-out accuracy is 0.5
    far = kfold_accuracy(np.array([3.995, 4.5, 3.995, 4.5]), np.array([1, 0, 1, 0]), folds)
    assert far.accuracy == 0.5
    np.testing.assert_allclose(far.thresholds, [0.0, 0.0])


def test_kfold_custom_thresholds_are_used() -> None:
    d = np.array([0.2, 0.9, 0.3, 0.8])
    y = np.array([1, 0, 1, 0])
    got = kfold_accuracy(d, y, np.array([0, 0, 1, 1]), thresholds=np.array([0.1, 0.5, 1.0]))
    np.testing.assert_allclose(got.thresholds, [0.5, 0.5])  # 0.1: all negative, 1.0: all positive
    assert got.accuracy == 1.0


def test_kfold_refuses_nan_distances_by_name() -> None:
    with pytest.raises(ReidbenchError, match="pair distances"):
        kfold_accuracy(np.array([0.1, np.nan]), np.array([1, 0]), np.array([0, 1]))


def test_verification_metrics_run_kfold_on_2_minus_2cos() -> None:
    """Positives at cos -0.7 (distance 3.4), negatives at cos -0.95 (3.9): thresholds in
    (3.4, 3.9] separate them, within the grid [0, 4) -> accuracy 1. Any other distance map
    (3 - 2 cos, 2 - 3 cos, 2 - 2 / cos) pushes the positives to 4 or beyond and fails."""
    s = np.array([-0.7, -0.95, -0.7, -0.95])
    y = np.array([1, 0, 1, 0])
    got = verification_metrics(s, y, np.array([0, 0, 1, 1]), fars=(0.5,))
    assert got["accuracy"] == 1.0 and got["accuracy_std"] == 0.0
    assert set(got) == {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far",
                        "tar_at_far_nearest", "num_pairs", "num_folds"}
    assert got["tar_at_far"] == {"0.5": 1.0} and got["tar_at_far_nearest"] == {"0.5": 1.0}
    assert (got["num_pairs"], got["num_folds"], got["auc"], got["eer"]) == (4, 2, 1.0, 0.0)
