"""TAR@FAR in both conventions (issue 12, item 11): ``tar_at_far`` (strict: highest TPR with
FPR <= FAR) and ``tar_at_far_nearest`` (insightface's eval_ijbc.py table: the ROC point of
scikit-learn's default ``roc_curve`` whose FPR is nearest FAR)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from reidbench import cli
from reidbench.metrics.verification import roc, tar_at_far, tar_at_far_nearest, tar_fields


def insightface_table(labels: np.ndarray, scores: np.ndarray, fars: tuple[float, ...]) -> list[float]:
    """insightface's procedure, written from its description: scikit-learn's ROC (default
    arguments) reversed, then for each FAR the first index of the smallest |FPR - FAR|."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = fpr[::-1], tpr[::-1]
    return [float(tpr[min(zip(np.abs(fpr - far), range(len(fpr))))[1]]) for far in fars]


# 10 genuine and 10 impostor pairs. Descending score: 5 genuine, 2 impostors, 4 genuine,
# 8 impostors, 1 genuine. ROC (FPR, TPR) with the straight runs' middle points dropped:
# (0, 0), (0, .1), (0, .5), (.2, .5), (.2, .9), (1, .9), (1, 1).
SCORES = np.array([1.0, .99, .98, .97, .96, .90, .89, .80, .79, .78, .77,
                   .50, .49, .48, .47, .46, .45, .44, .43, .10])
LABELS = np.array([1] * 5 + [0] * 2 + [1] * 4 + [0] * 8 + [1])


def test_hand_computed_case_where_the_conventions_differ() -> None:
    fars = (0.1, 0.15, 0.5)
    got = tar_fields(SCORES, LABELS, fars)
    # strict: best TPR among points with FPR <= far: .5 (at FPR 0 and 0.1) for 0.1 and 0.15,
    # .9 (FPR .2) for 0.5
    assert got["tar_at_far"] == {"0.1": 0.5, "0.15": 0.5, "0.5": 0.9}
    # nearest: for 0.1, FPR 0 and 0.2 are equally near (0.1 is not on the reduced curve) and
    # the larger FPR, then the larger TPR, wins: .9; for 0.15, FPR .2 is nearest: .9; for 0.5,
    # FPR .2 (distance .3) beats FPR 1: .9
    assert got["tar_at_far_nearest"] == {"0.1": 0.9, "0.15": 0.9, "0.5": 0.9}
    assert list(got["tar_at_far_nearest"].values()) == insightface_table(LABELS, SCORES, fars)


def test_reduced_roc_equals_scikit_learns_default() -> None:
    fpr, tpr, thr = roc(SCORES, LABELS, drop_intermediate=True)
    np.testing.assert_allclose(fpr, [0, 0, 0, .2, .2, 1, 1])
    np.testing.assert_allclose(tpr, [0, .1, .5, .5, .9, .9, 1])
    ref = roc_curve(LABELS, SCORES)
    np.testing.assert_array_equal(fpr, ref[0])
    np.testing.assert_array_equal(tpr, ref[1])
    np.testing.assert_array_equal(thr[1:], ref[2][1:])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_nearest_matches_the_insightface_procedure(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 3000)
    scores = rng.standard_normal(3000) + labels * 1.5
    if ties:
        scores = np.round(scores * 4) / 4
    fars = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    fpr, tpr, _ = roc(scores, labels, drop_intermediate=True)
    got = tar_at_far_nearest(fpr, tpr, fars)
    assert list(got.values()) == insightface_table(labels, scores, fars)
    full_fpr, full_tpr, _ = roc(scores, labels)
    strict = tar_at_far(full_fpr, full_tpr, int((labels == 0).sum()), fars)
    assert set(strict) == set(got)


def test_no_negatives_or_positives_give_none() -> None:
    got = tar_fields(np.array([.1, .2, .3]), np.array([1, 1, 1]), (0.1,))
    assert got == {"tar_at_far": {"0.1": None}, "tar_at_far_nearest": {"0.1": None}}


def test_cli_shows_and_records_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    labels = np.tile([1, 0], 100)
    f1 = rng.standard_normal((200, 8)).astype(np.float32)
    f2 = (f1 + np.where(labels[:, None] == 1, 0.8, 4.0) * rng.standard_normal((200, 8))).astype(np.float32)
    np.savez(tmp_path / "v.npz", feats1=f1, feats2=f2, labels=labels)
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "v.npz"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    got = json.loads(out.read_text())
    assert set(got["tar_at_far"]) == set(got["tar_at_far_nearest"]) == {
        "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}
    assert got["tar_at_far"]["1e-06"] is None and got["tar_at_far_nearest"]["1e-06"] is not None
    assert f"{'TAR@FAR<=0.1':18s} {got['tar_at_far']['0.1']:.4f}\n" in text
    assert f"TAR@FAR~0.1 (insightface) {got['tar_at_far_nearest']['0.1']:.4f}" in text


def test_ijb_templates_report_both(tmp_path: Path) -> None:
    from test_ijb import ijb_tree, reference_metrics

    from reidbench.datasets.ijb import IJBB, read_ijb
    from reidbench.evaluation.templates import evaluate_templates

    ts = read_ijb(ijb_tree(tmp_path), IJBB)
    feats = np.random.default_rng(1).standard_normal((len(ts.images), 16))
    got = evaluate_templates(ts, feats)
    scores, _ = reference_metrics(ts, feats)
    fars = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert list(got["tar_at_far_nearest"].values()) == pytest.approx(
        insightface_table(ts.labels, scores, fars), abs=1e-12)
    assert got["tar_at_far"]["0.1"] is None  # strict: 4 impostor pairs cannot measure FAR 0.1
