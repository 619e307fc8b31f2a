"""Verification metrics against scikit-learn and an independent insightface-style k-fold loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from reidbench.metrics.verification import (
    auc,
    contiguous_folds,
    eer,
    kfold_accuracy,
    roc,
    tar_at_far,
    verification_metrics,
)


def case(seed: int, n: int = 600, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.standard_normal(n) * 0.5 + labels * 0.6 - 0.3  # negative scores included
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


def insightface_kfold(dist: np.ndarray, issame: np.ndarray, nfolds: int = 10) -> tuple[float, float]:
    """Written independently from insightface's LFW procedure: KFold without shuffling, the
    best threshold of arange(0, 4, 0.01) on the train folds (first maximum) applied to the test
    fold, predict same when dist < threshold."""
    thresholds = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(dist))):
        train_acc = [np.mean((dist[train] < th) == issame[train]) for th in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
    return float(np.mean(accs)), float(np.std(accs))


@pytest.mark.parametrize("n", [600, 605, 37])
def test_contiguous_folds_match_sklearn_kfold(n: int) -> None:
    folds = contiguous_folds(n, 10)
    for f, (_, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.arange(n))):
        np.testing.assert_array_equal(np.flatnonzero(folds == f), test)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_kfold_matches_insightface_procedure(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 600).astype(bool)
    e1 = rng.standard_normal((600, 16))
    e2 = e1 * labels[:, None] + rng.standard_normal((600, 16)) * 1.2
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    dist = ((e1 - e2) ** 2).sum(1)
    if ties:
        dist = np.round(dist, 2)
    ref_acc, ref_std = insightface_kfold(dist, labels)
    got = kfold_accuracy(dist, labels.astype(int), contiguous_folds(600))
    assert got.accuracy == pytest.approx(ref_acc, abs=1e-12)
    assert got.accuracy_std == pytest.approx(ref_std, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(seed: int, ties: bool) -> None:
    scores, labels = case(seed, ties=ties)
    fpr, tpr, thr = roc(scores, labels)
    ref_fpr, ref_tpr, ref_thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_distance_direction() -> None:
    scores, labels = case(0)
    a = roc(scores, labels, higher_is_better=True)
    b = roc(-scores, labels, higher_is_better=False)
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])


def test_eer_and_tar_on_a_hand_made_case() -> None:
    # 4 positives, 4 negatives, perfectly separated except one negative above one positive
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.5, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    fpr, tpr, _ = roc(scores, labels)
    assert eer(fpr, tpr) == pytest.approx(0.25)
    tar = tar_at_far(fpr, tpr, num_negatives=4, fars=(0.1, 0.25, 0.5))
    # at threshold 0.4: 4 true and 1 false acceptance -> FPR 0.25, TPR 1
    assert tar == {"0.1": None, "0.25": 1.0, "0.5": 1.0}


def test_perfect_separation() -> None:
    labels = np.tile([1, 0], 50)  # every fold holds both kinds
    scores = np.where(labels == 1, 0.9, -0.5)
    m = verification_metrics(scores, labels, contiguous_folds(100))
    assert m["auc"] == 1.0 and m["eer"] == 0.0 and m["accuracy"] == 1.0
