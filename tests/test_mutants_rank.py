"""Rank metrics: what the mutation run found undefended (scripts/mutation_test.py).

Every check is against a brute-force evaluator written here (a Python loop per query: stable
sort by score, ties by gallery index, drop junk and same identity + same camera) or against
values computed by hand in the comments. Gaps closed:

- the fast histogram path is exact on its own when there are no ties (the exact fallback used
  to hide wrong histograms, since every row it flags is recomputed);
- ties without camera labels (face identification); a first chunk with no valid query;
- float64 scores keep their precision; ``junk_pid=None`` / another junk label; score
  tensors that require grad; the defaults (``max_rank`` 50, ``k`` = list width);
- the result fields (``as_dict``: rank-1/5/10, the CMC, query counts, ``per_query_ap``) and the
  all-skipped result;
- the NaN messages name the rows and the original gallery column;
- ``evaluate_topk``: gallery index 0, skipped and unknown queries, junk and camera filtering
  together, ``complete_fraction``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.errors import ReidbenchError
from reidbench.metrics import rank as rank_module
from reidbench.metrics.rank import (
    RankResult,
    TopKResult,
    evaluate_ranking,
    evaluate_ranking_features,
    evaluate_topk,
    rank_from_scores,
)


def reference(scores: np.ndarray, qp: np.ndarray, gp: np.ndarray, qc: np.ndarray | None,
              gc: np.ndarray | None, max_rank: int, junk: int | None = -1) -> dict[str, object]:
    """Brute force on similarity scores: per query, stable sort by -score (ties: lower gallery
    index first), then keep the valid items and read off CMC, AP and INP."""
    cmcs, aps, inps = [], [], []
    for i in range(len(qp)):
        order = np.argsort(-scores[i], kind="stable")
        valid = np.ones(len(order), bool)
        if junk is not None:
            valid &= gp[order] != junk
        if qc is not None and gc is not None:
            valid &= ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        hits = np.flatnonzero((gp[order] == qp[i])[valid])
        if len(hits) == 0:
            continue
        cmc = np.zeros(max_rank)
        cmc[hits[0]:] = 1
        cmcs.append(cmc)
        aps.append(float(np.mean((np.arange(len(hits)) + 1) / (hits + 1))))
        inps.append(len(hits) / (hits[-1] + 1))
    return {"cmc": np.mean(cmcs, 0), "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)),
            "valid": len(cmcs), "skipped": len(qp) - len(cmcs), "aps": np.array(aps)}


def assert_matches(result: RankResult, ref: dict[str, object]) -> None:
    np.testing.assert_allclose(result.cmc, ref["cmc"], rtol=0, atol=1e-12)
    assert result.mAP == pytest.approx(ref["mAP"], abs=1e-12)
    assert result.mINP == pytest.approx(ref["mINP"], abs=1e-12)
    assert (result.num_valid_queries, result.num_skipped) == (ref["valid"], ref["skipped"])
    np.testing.assert_allclose(result.per_query_ap, ref["aps"], rtol=0, atol=1e-12)


def case(seed: int, nq: int = 30, ng: int = 120, ids: int = 9, levels: int | None = None,
         junk: bool = True) -> tuple[np.ndarray, ...]:
    """Identities of varied sizes (including ones absent from the gallery), junk, 4 cameras."""
    rng = np.random.default_rng(seed)
    qp = rng.integers(1, ids + 2, nq)  # ids + 1 is never in the gallery
    gp = rng.integers(-1 if junk else 0, ids + 1, ng)  # pid 0: distractors, -1: junk
    qc, gc = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    scores = rng.standard_normal((nq, ng))
    if levels:
        scores = np.round(scores * levels) / levels
    return scores, qp, gp, qc, gc


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cams", [True, False])
def test_fast_path_is_exact_without_the_fallback(
    seed: int, cams: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct scores have no ties: the histogram path alone must give the exact metrics, so
    the direct-comparison fallback must never run."""
    def no_fallback(*args: object, **kwargs: object) -> None:
        raise AssertionError("the exact fallback ran on scores without ties")

    monkeypatch.setattr(rank_module, "_ranks_by_comparison", no_fallback)
    scores, qp, gp, qc, gc = case(seed)
    qc, gc = (qc, gc) if cams else (None, None)
    for chunk in (1 << 22, 120 * 7):  # one chunk; chunks of 7 queries
        got = evaluate_ranking(scores, qp, gp, qc, gc, higher_is_better=True, max_rank=20,
                               chunk_elements=chunk)
        assert_matches(got, reference(scores, qp, gp, qc, gc, 20))


@pytest.mark.parametrize("cams", [True, False])
@pytest.mark.parametrize("seed", [3, 4])
def test_ties_match_brute_force_with_and_without_cameras(cams: bool, seed: int) -> None:
    scores, qp, gp, qc, gc = case(seed, levels=2)  # few score levels: ties everywhere
    qc, gc = (qc, gc) if cams else (None, None)
    for chunk in (1 << 22, 120 * 4):
        got = evaluate_ranking(scores, qp, gp, qc, gc, higher_is_better=True, max_rank=15,
                               chunk_elements=chunk)
        assert_matches(got, reference(scores, qp, gp, qc, gc, 15))


def test_a_first_chunk_without_valid_queries_does_not_end_the_evaluation() -> None:
    """One query per chunk; queries 0 and 1 have no positive in the gallery."""
    scores, qp, gp, qc, gc = case(5, nq=6, ng=40)
    qp[:2] = 99
    got = evaluate_ranking(scores, qp, gp, qc, gc, higher_is_better=True, max_rank=10,
                           chunk_elements=40)
    ref = reference(scores, qp, gp, qc, gc, 10)
    assert ref["skipped"] >= 2 and ref["valid"] >= 1
    assert_matches(got, ref)


def test_hand_computed_metrics_and_fields() -> None:
    """Gallery pids [1, 2, 1, 3, 2, 3, 4, 5, 6, 7, 8, 9], no cameras, similarities below.

    query pid 1: order by score is g0 (1), g1 (2), g2 (1), ... -> positives at ranks 1 and 3:
        AP = (1/1 + 2/3) / 2 = 5/6, INP = 2/3, first hit rank 1;
    query pid 3: the scores put g3 (pid 3) second and g5 (pid 3) last:
        positives at ranks 2 and 12: AP = (1/2 + 2/12) / 2 = 1/3, INP = 2/12, first hit rank 2;
    query pid 42: no positive -> skipped.
    CMC over the 2 valid queries: rank 1 -> 0.5, rank >= 2 -> 1.
    """
    gp = np.array([1, 2, 1, 3, 2, 3, 4, 5, 6, 7, 8, 9])
    descending = np.linspace(1.0, 0.0, 12)
    s1 = descending.copy()  # g0 > g1 > g2 > ...
    s3 = descending[[0, 2, 3, 1, 4, 11, 5, 6, 7, 8, 9, 10]]  # g0, g3, g1, g2, g4, ..., g5
    scores = np.stack([s1, s3, descending])
    qp = np.array([1, 3, 42])
    got = evaluate_ranking(scores, qp, gp, None, None, higher_is_better=True, max_rank=12)
    cmc = np.array([0.5] + [1.0] * 11)
    np.testing.assert_allclose(got.cmc, cmc)
    assert got.mAP == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert got.mINP == pytest.approx((2 / 3 + 2 / 12) / 2)
    np.testing.assert_allclose(got.per_query_ap, [5 / 6, 1 / 3])
    assert (got.num_valid_queries, got.num_skipped) == (2, 1)
    d = got.as_dict()
    assert d == {"mAP": got.mAP, "mINP": got.mINP, "rank1": 0.5, "rank5": 1.0, "rank10": 1.0,
                 "cmc": list(cmc), "num_valid_queries": 2, "num_skipped_queries": 1}


def test_single_positive_average_precision() -> None:
    """One positive at rank 2: AP = 1/2 (not 1/4), INP = 1/2."""
    got = evaluate_ranking(np.array([[0.9, 0.8, 0.1]]), np.array([7]), np.array([3, 7, 4]),
                           None, None, higher_is_better=True)
    assert (got.mAP, got.mINP, list(got.cmc)) == (0.5, 0.5, [0.0, 1.0, 1.0])


def test_cmc_fields_read_ranks_1_5_10_and_clip_short_curves() -> None:
    cmc = np.arange(1, 13) / 12  # distinct value at every rank
    d = RankResult(cmc, 0.25, 0.125, 7, 3).as_dict()
    assert (d["rank1"], d["rank5"], d["rank10"]) == (1 / 12, 5 / 12, 10 / 12)
    assert (d["num_valid_queries"], d["num_skipped_queries"]) == (7, 3)
    short = RankResult(np.array([0.2, 0.6, 0.9]), 0.5, 0.5, 2, 0).as_dict()
    assert (short["rank1"], short["rank5"], short["rank10"]) == (0.2, 0.9, 0.9)
    top = TopKResult(3, np.array([0.2, 0.6, 0.9]), 0.4, 5, 1, 0.8).as_dict()
    assert top == {"truncated_at_k": 3, "mAP_at_k": 0.4, "rank1": 0.2, "rank5": 0.9,
                   "rank10": 0.9, "cmc": [0.2, 0.6, 0.9], "num_valid_queries": 5,
                   "num_skipped_queries": 1, "queries_with_all_positives_in_top_k": 0.8}


def test_all_queries_skipped() -> None:
    got = evaluate_ranking(np.ones((2, 4)), np.array([8, 9]), np.array([1, 2, 3, 4]),
                           None, None, higher_is_better=True, max_rank=3)
    assert isinstance(got.cmc, np.ndarray) and got.cmc.tolist() == [0.0, 0.0, 0.0]
    assert (got.mAP, got.mINP, got.num_valid_queries, got.num_skipped) == (0.0, 0.0, 0, 2)
    assert got.per_query_ap.shape == (0,)


def test_defaults_max_rank_50_and_junk_minus_one() -> None:
    rng = np.random.default_rng(6)
    scores, qp, gp = rng.standard_normal((3, 60)), np.array([1, 2, 3]), rng.integers(-1, 4, 60)
    got = rank_from_scores(lambda rows: torch.as_tensor(scores[rows]), 3, 60, qp, gp, None, None)
    assert len(got.cmc) == 50
    assert_matches(got, reference(scores, qp, gp, None, None, 50))


def test_float64_scores_are_not_rounded_to_float32() -> None:
    """1 + 1e-12 and 1 are equal in float32: the positive (g1) would lose the tie to g0."""
    scores = np.array([[1.0, 1.0 + 1e-12, 0.5]])
    got = evaluate_ranking(scores, np.array([5]), np.array([4, 5, 6]), None, None,
                           higher_is_better=True)
    assert got.cmc[0] == 1.0 and got.mAP == 1.0
    dist = evaluate_ranking(-scores, np.array([5]), np.array([4, 5, 6]), None, None,
                            higher_is_better=False)
    assert dist.cmc[0] == 1.0


@pytest.mark.parametrize("junk", [None, 0])
def test_other_junk_labels(junk: int | None) -> None:
    """With ``junk_pid=None`` a -1 item is an ordinary negative; with 0, pid 0 is ignored."""
    scores, qp, gp, qc, gc = case(7, nq=12, ng=50)
    gp[:10] = -1
    gp[10:15] = 0
    got = evaluate_ranking(scores, qp, gp, qc, gc, higher_is_better=True, max_rank=10,
                           junk_pid=junk)
    ref = reference(scores, qp, gp, qc, gc, 10, junk=junk)
    assert_matches(got, ref)
    rng = np.random.default_rng(8)
    q, g = rng.standard_normal((12, 6)), rng.standard_normal((50, 6))
    feats = evaluate_ranking_features(q, g, qp, gp, qc, gc, metric="euclidean", max_rank=10,
                                      junk_pid=junk)
    dist = -np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    assert_matches(feats, reference(dist, qp, gp, qc, gc, 10, junk=junk))


def test_features_with_junk_and_no_cameras() -> None:
    rng = np.random.default_rng(9)
    q, g = rng.standard_normal((10, 5)), rng.standard_normal((40, 5))
    qp, gp = rng.integers(1, 5, 10), rng.integers(-1, 5, 40)
    got = evaluate_ranking_features(q, g, qp, gp, None, None, metric="cosine", max_rank=10)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert_matches(got, reference(qn @ gn.T, qp, gp, None, None, 10))


def test_score_tensors_are_used_as_they_are() -> None:
    """A score tensor that requires grad (numpy cannot take it) ranks like its values."""
    scores, qp, gp, qc, gc = case(10, nq=8, ng=30)
    s = torch.tensor(scores, requires_grad=True)
    got = evaluate_ranking(s, qp, gp, qc, gc, higher_is_better=True, max_rank=10)
    assert_matches(got, reference(scores, qp, gp, qc, gc, 10))


def test_nan_scores_name_the_rows_and_the_original_gallery_column() -> None:
    scores = np.zeros((3, 5))
    scores[0, 3] = np.nan
    scores[2, 1] = np.inf
    qp, gp = np.array([1, 2, 1]), np.array([1, 2, 3, 1, 2])
    with pytest.raises(ReidbenchError, match=r"2 of the queries 0\.\.2 .*query 0, gallery 3"):
        evaluate_ranking(scores, qp, gp, None, None, higher_is_better=True)
    gp_junk = np.array([-1, 2, 3, 1, 2])  # column 0 is dropped as junk: the index stays 3
    with pytest.raises(ReidbenchError, match=r"query 0, gallery 3"):
        evaluate_ranking(scores, qp, gp_junk, None, None, higher_is_better=True)


def test_nan_query_features_are_named() -> None:
    q, g = np.ones((2, 3)), np.ones((4, 3))
    q[1, 0] = np.nan
    with pytest.raises(ReidbenchError, match="query features"):
        evaluate_ranking_features(q, g, np.array([1, 2]), np.array([1, 2, 1, 2]), None, None,
                                  metric="cosine")


def test_a_gallery_of_one_identity_and_an_unknown_query() -> None:
    """The query of pid 9 sorts after the only gallery identity (5) and must be skipped."""
    got = evaluate_ranking(np.array([[0.5, 0.2], [0.1, 0.3]]), np.array([5, 9]),
                           np.array([5, 5]), None, None, higher_is_better=True)
    assert (got.num_valid_queries, got.num_skipped, got.mAP) == (1, 1, 1.0)


# --- evaluate_topk: by hand -------------------------------------------------------------------
# gallery:  index 0   1   2   3   4   5
#           pid   7   7  -1   8   8   9
#           cam   1   2   1   1   2   1
# query 0: pid 99 (not in the gallery): skipped.
# query 1: pid 7, cam 1; list [2, 1, 0, 5, 3]: 2 is junk, 0 is same pid + cam -> [1, 5, 3];
#          positives of pid 7 in the gallery after removal: 1 (index 1) -> hit at rank 1,
#          AP = 1, complete.
# query 2: pid 8, cam 1; list [0, 5, 4, -1, -1]: 3 (same cam) was never listed -> [0, 5, 4];
#          valid positives: index 4 only (3 is removed) -> hit at rank 3, AP = 1/3, complete.
# query 3: pid 8, cam 3; list [1, 0, 2, 5, 3]: 2 junk -> [1, 0, 5, 3]; positives 3 and 4:
#          hit at rank 4 (index 3) with k = 5; 4 not listed: AP = (1/4) / 2, incomplete.
# k = 5 (list width): CMC over 3 valid queries: r1 1/3, r2 1/3, r3 2/3, r4 1, r5 1.

GALLERY_PIDS = np.array([7, 7, -1, 8, 8, 9])
GALLERY_CAMS = np.array([1, 2, 1, 1, 2, 1])
QUERY_PIDS = np.array([99, 7, 8, 8])
QUERY_CAMS = np.array([1, 1, 1, 3])
LISTS = np.array([[0, 1, 2, 3, 4], [2, 1, 0, 5, 3], [0, 5, 4, -1, -1], [1, 0, 2, 5, 3]])


def test_topk_by_hand() -> None:
    got = evaluate_topk(LISTS, QUERY_PIDS, GALLERY_PIDS, QUERY_CAMS, GALLERY_CAMS)
    assert got.k == 5
    np.testing.assert_allclose(got.cmc, [1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert got.mAP_at_k == pytest.approx((1 + 1 / 3 + 1 / 8) / 3)
    assert (got.num_valid_queries, got.num_skipped) == (3, 1)
    assert got.complete_fraction == pytest.approx(2 / 3)


def test_topk_gallery_index_zero_counts() -> None:
    """A list whose only hit is gallery item 0."""
    got = evaluate_topk(np.array([[0, 1]]), np.array([4]), np.array([4, 5]), None, None)
    assert (got.cmc.tolist(), got.mAP_at_k, got.complete_fraction) == ([1.0, 1.0], 1.0, 1.0)


def test_topk_without_junk_label_counts_minus_one_as_a_gallery_identity() -> None:
    """``junk_pid=None``: the -1 item is an ordinary item; a query of pid -1 then matches it."""
    got = evaluate_topk(np.array([[1, 0], [0, 1]]), np.array([-1, 7]), np.array([-1, 7]),
                        None, None, junk_pid=None)
    np.testing.assert_allclose(got.cmc, [0.0, 1.0])  # both hits at rank 2
    assert got.mAP_at_k == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert (got.num_valid_queries, got.num_skipped) == (2, 0)
    junk = evaluate_topk(np.array([[1, 0], [0, 1]]), np.array([-1, 7]), np.array([-1, 7]),
                         None, None)
    assert (junk.num_valid_queries, junk.num_skipped) == (1, 1)
