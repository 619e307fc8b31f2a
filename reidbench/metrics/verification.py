"""Face verification metrics on pair scores: k-fold accuracy (insightface's protocol), ROC,
AUC, EER and TAR at fixed FAR.

Scores are similarities (higher = same person) unless ``higher_is_better=False``. Labels are 1
for same-identity pairs and 0 otherwise. NaN/inf scores raise ReidbenchError.

TAR at FAR comes in two conventions, both reported:

- ``tar_at_far`` (strict): the highest TPR among ROC points with FPR <= FAR; None where FAR is
  below 1 / negatives (the pairs cannot measure it).
- ``tar_at_far_nearest`` (insightface's ``eval_ijbc.py`` table, which published IJB numbers
  use): the TPR of the ROC point whose FPR is nearest FAR, above or below it, on scikit-learn's
  default ROC (``roc_curve`` with ``drop_intermediate=True``); on equal distances the point with
  the larger FPR, then the larger TPR. Reported even where FAR is below 1 / negatives, as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidbench.metrics.finite import check_finite

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def contiguous_folds(n: int, k: int = 10) -> np.ndarray:
    """(n,) fold index of each pair in k contiguous folds, as scikit-learn's
    ``KFold(k, shuffle=False)`` (the first n % k folds hold one pair more), which insightface's
    LFW evaluation uses."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k), sizes).astype(np.int64)


@dataclass(frozen=True)
class KFoldResult:
    accuracy: float  # mean held-out accuracy over folds
    accuracy_std: float  # population std over folds (numpy's default, as insightface)
    thresholds: np.ndarray  # (folds,) threshold chosen on the other folds


def kfold_accuracy(
    distances: np.ndarray, labels: np.ndarray, folds: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> KFoldResult:
    """insightface's LFW protocol on distances (same person when distance < threshold).

    For each fold, the threshold that maximises accuracy on the other folds (the first of the
    grid on ties) is applied to the held-out fold. The default grid is insightface's
    ``arange(0, 4, 0.01)`` for squared L2 distances of unit-normalised features (= 2 - 2 cos).
    """
    grid = np.arange(0, 4, 0.01) if thresholds is None else np.asarray(thresholds)
    d, y = np.asarray(distances, np.float64), np.asarray(labels).astype(bool)
    check_finite(d, "pair distances")
    fold_ids = np.unique(folds)
    accs, chosen = [], []
    for f in fold_ids:
        test, train = folds == f, folds != f
        pred_train = d[train][None, :] < grid[:, None]  # (thresholds, pairs)
        train_acc = (pred_train == y[train][None, :]).mean(1)
        best = grid[int(np.argmax(train_acc))]
        accs.append(float(((d[test] < best) == y[test]).mean()))
        chosen.append(best)
    return KFoldResult(float(np.mean(accs)), float(np.std(accs)), np.array(chosen))


def roc(scores: np.ndarray, labels: np.ndarray, higher_is_better: bool = True,
        drop_intermediate: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest threshold first, starting at
    (0, 0) with threshold +inf (as scikit-learn's ``roc_curve`` with
    ``drop_intermediate=False``). ``drop_intermediate``: keep, besides the first and last
    threshold, only those where the curve bends (as scikit-learn's default): the middle points
    of straight runs go."""
    s = np.asarray(scores, np.float64) * (1 if higher_is_better else -1)
    check_finite(s, "verification scores")
    y = np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    if drop_intermediate and len(tps) > 2:  # exact on the integer counts
        bends = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        kept = np.flatnonzero(np.r_[True, bends, True])
        last_of_run, tps, fps = last_of_run[kept], tps[kept], fps[kept]
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.r_[0.0, fps / neg]
    tpr = np.r_[0.0, tps / pos]
    thr = np.r_[np.inf, s[last_of_run]] * (1 if higher_is_better else -1)
    return fpr, tpr, thr


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoidal rule."""
    return float(np.trapezoid(tpr, fpr))


def eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Equal error rate: where FPR = 1 - TPR, linearly interpolated between ROC points."""
    fnr = 1 - tpr
    i = int(np.flatnonzero(fpr >= fnr)[0])
    if i == 0:
        return float(fpr[0])
    x0, x1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    w = x0 / (x0 - x1) if x1 != x0 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def tar_at_far(
    fpr: np.ndarray, tpr: np.ndarray, num_negatives: int, fars: tuple[float, ...] = FARS,
) -> dict[str, float | None]:
    """Highest TPR with FPR <= far, for each far, keyed by ``f"{far:g}"``. None where ``far`` is
    below 1 / num_negatives: that many negative pairs cannot measure such a rate."""
    out: dict[str, float | None] = {}
    for far in fars:
        if num_negatives == 0 or far * num_negatives < 1:
            out[f"{far:g}"] = None
        else:
            out[f"{far:g}"] = float(tpr[fpr <= far * (1 + 1e-12)].max())
    return out


def tar_at_far_nearest(
    fpr: np.ndarray, tpr: np.ndarray, fars: tuple[float, ...] = FARS,
) -> dict[str, float]:
    """insightface's TAR at FAR: for each far, the TPR of the ROC point whose FPR is nearest
    ``far`` (equal distances: the larger FPR, then the larger TPR), keyed by ``f"{far:g}"``.
    Pass the ROC of ``roc(..., drop_intermediate=True)`` to get insightface's numbers."""
    out: dict[str, float] = {}
    for far in fars:
        distance = np.abs(fpr - far)
        out[f"{far:g}"] = float(tpr[np.flatnonzero(distance == distance.min())[-1]])
    return out


def tar_fields(
    scores: np.ndarray, labels: np.ndarray, fars: tuple[float, ...] = FARS,
    higher_is_better: bool = True,
) -> dict[str, dict[str, float | None]]:
    """``tar_at_far`` (strict: best TPR with FPR <= far) and ``tar_at_far_nearest``
    (insightface's table: the ROC point with FPR nearest far) of pair scores; every value is
    None when there are no negative or no positive pairs."""
    y = np.asarray(labels).astype(int)
    negatives, positives = int((y == 0).sum()), int((y == 1).sum())
    fpr, tpr, _ = roc(scores, y, higher_is_better)
    strict = tar_at_far(fpr, tpr, negatives, fars)
    if negatives == 0 or positives == 0:
        none: dict[str, float | None] = {key: None for key in strict}
        return {"tar_at_far": none, "tar_at_far_nearest": dict(none)}
    fpr, tpr, _ = roc(scores, y, higher_is_better, drop_intermediate=True)
    return {"tar_at_far": strict, "tar_at_far_nearest": dict(tar_at_far_nearest(fpr, tpr, fars))}


def verification_metrics(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, fars: tuple[float, ...] = FARS,
) -> dict[str, object]:
    """All verification metrics from cosine similarities of unit-normalised features.

    k-fold accuracy runs on the squared L2 distance 2 - 2 cos, as insightface does.
    """
    labels = np.asarray(labels).astype(int)
    fpr, tpr, _ = roc(scores, labels)
    kfold = kfold_accuracy(2.0 - 2.0 * np.asarray(scores, np.float64), labels, np.asarray(folds))
    return {
        "accuracy": kfold.accuracy,
        "accuracy_std": kfold.accuracy_std,
        "auc": auc(fpr, tpr),
        "eer": eer(fpr, tpr),
        **tar_fields(scores, labels, fars),
        "num_pairs": int(len(labels)),
        "num_folds": int(len(np.unique(folds))),
    }
