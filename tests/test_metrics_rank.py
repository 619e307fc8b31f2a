"""Rank metrics against torchreid's Python evaluator and a brute-force reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from reidbench.metrics.rank import evaluate_ranking

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics.rank import evaluate_rank


def brute_force(scores, qp, gp, qc, gc, higher, max_rank, junk=-1):
    """Per query: stable sort by score (ties by gallery index), drop same pid+cam and junk."""
    cmcs, aps, inps = [], [], []
    for i in range(len(qp)):
        key = -scores[i] if higher else scores[i]
        order = np.argsort(key, kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i])) & (gp[order] != junk)
        hits = (gp[order] == qp[i])[keep]
        if not hits.any():
            continue
        pos = np.flatnonzero(hits)
        cmc = np.zeros(max_rank)
        cmc[pos[0]:] = 1
        cmcs.append(cmc)
        aps.append(np.mean((np.arange(len(pos)) + 1) / (pos + 1)))
        inps.append(len(pos) / (pos[-1] + 1))
    return np.mean(cmcs, 0), float(np.mean(aps)), float(np.mean(inps)), len(cmcs)


def random_case(seed: int, nq: int = 40, ng: int = 300, ids: int = 12, tie_levels: int | None = None):
    rng = np.random.default_rng(seed)
    qp, gp = rng.integers(1, ids, nq), rng.integers(0, ids, ng)  # gallery includes pid 0 distractors
    qc, gc = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    scores = rng.standard_normal((nq, ng))  # negative scores included
    if tie_levels:
        scores = np.round(scores * tie_levels) / tie_levels
    return scores, qp, gp, qc, gc


@pytest.mark.parametrize("seed", range(6))
def test_matches_torchreid_on_distances(seed: int) -> None:
    dist, qp, gp, qc, gc = random_case(seed)
    cmc_ref, map_ref = evaluate_rank(dist, qp, gp, qc, gc, max_rank=20, use_cython=False)
    r = evaluate_ranking(dist, qp, gp, qc, gc, higher_is_better=False, max_rank=20, junk_pid=None)
    np.testing.assert_allclose(r.cmc, cmc_ref, atol=1e-6)
    assert r.mAP == pytest.approx(map_ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_similarity_direction_equals_negated_distance(seed: int) -> None:
    dist, qp, gp, qc, gc = random_case(seed)
    a = evaluate_ranking(dist, qp, gp, qc, gc, higher_is_better=False)
    b = evaluate_ranking(-dist, qp, gp, qc, gc, higher_is_better=True)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    assert (a.mAP, a.mINP) == (b.mAP, b.mINP)


@pytest.mark.parametrize("higher", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_ties_junk_and_chunking_match_brute_force(seed: int, higher: bool) -> None:
    scores, qp, gp, qc, gc = random_case(seed, tie_levels=2)  # many exact ties
    gp[::17] = -1  # junk gallery items
    ref_cmc, ref_map, ref_minp, ref_valid = brute_force(scores, qp, gp, qc, gc, higher, 50)
    for chunk in (1, 5000, 1 << 24):
        r = evaluate_ranking(scores, qp, gp, qc, gc, higher_is_better=higher, chunk_elements=chunk)
        np.testing.assert_allclose(r.cmc, ref_cmc, atol=1e-12)
        assert r.mAP == pytest.approx(ref_map, abs=1e-12)
        assert r.mINP == pytest.approx(ref_minp, abs=1e-12)
        assert r.num_valid_queries == ref_valid
        assert r.num_skipped == len(qp) - ref_valid


def test_hand_computed_case() -> None:
    # query pid 1 cam 0; gallery by descending similarity: [2, 1(cam0, removed), 1, 3, 1]
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    gp, gc = np.array([2, 1, 1, 3, 1]), np.array([1, 0, 1, 1, 2])
    r = evaluate_ranking(scores, np.array([1]), gp, np.array([0]), gc, higher_is_better=True,
                         max_rank=4)
    # valid order: 2, 1, 3, 1 -> positives at ranks 2 and 4
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1])
    assert r.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert r.mINP == pytest.approx(2 / 4)


def test_tie_broken_by_gallery_index() -> None:
    scores = np.array([[0.5, 0.5, 0.5]])
    gp, gc = np.array([3, 1, 1]), np.array([1, 1, 1])
    r = evaluate_ranking(scores, np.array([1]), gp, np.array([0]), gc, higher_is_better=True)
    assert r.cmc[0] == 0 and r.cmc[1] == 1  # the negative at index 0 ranks first
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_queries_without_valid_match_are_skipped_and_counted() -> None:
    scores = np.array([[0.9, 0.1], [0.3, 0.2]])
    gp, gc = np.array([1, 2]), np.array([0, 0])
    # query 0: pid 1 in camera 0 -> its only match is same-camera; query 1: pid 5 absent
    r = evaluate_ranking(scores, np.array([1, 5]), gp, np.array([0, 1]), gc, higher_is_better=True)
    assert (r.num_valid_queries, r.num_skipped, r.mAP) == (0, 2, 0.0)


def test_no_camera_filter_for_identification() -> None:
    scores = np.array([[0.9, 0.1]])
    r = evaluate_ranking(scores, np.array([1]), np.array([1, 2]), None, None, higher_is_better=True)
    assert r.num_valid_queries == 1 and r.cmc[0] == 1.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_features_path_equals_score_matrix_path(metric: str) -> None:
    from reidbench.metrics.rank import evaluate_ranking_features

    rng = np.random.default_rng(7)
    qf, gf = rng.standard_normal((30, 8)), rng.standard_normal((200, 8))
    qp, gp = rng.integers(1, 10, 30), rng.integers(-1, 10, 200)
    qc, gc = rng.integers(0, 6, 30), rng.integers(0, 6, 200)
    if metric == "cosine":
        qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        ref = evaluate_ranking(qn @ gn.T, qp, gp, qc, gc, higher_is_better=True)
    else:
        d = np.linalg.norm(qf[:, None] - gf[None], axis=2)
        ref = evaluate_ranking(d, qp, gp, qc, gc, higher_is_better=False)
    got = evaluate_ranking_features(qf, gf, qp, gp, qc, gc, metric=metric, chunk_elements=3000)
    np.testing.assert_allclose(got.cmc, ref.cmc, atol=1e-9)
    assert got.mAP == pytest.approx(ref.mAP, abs=1e-6)
    assert got.num_valid_queries == ref.num_valid_queries
