"""FAISS retrieval against brute force (tie-tolerant) and top-k metrics against full ranking."""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.metrics.rank import evaluate_ranking, evaluate_topk
from reidbench.retrieval import build_index


def data(seed: int = 0, nq: int = 40, ng: int = 500, d: int = 16, ties: bool = False):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((25, d))
    gp = rng.integers(0, 25, ng)
    qp = rng.integers(0, 25, nq)
    g = centres[gp] + 0.6 * rng.standard_normal((ng, d))
    q = centres[qp] + 0.6 * rng.standard_normal((nq, d))
    if ties:
        g[1::2] = g[::2][: len(g[1::2])]  # exact duplicate gallery rows: tied scores
    return q.astype(np.float32), g.astype(np.float32), qp, gp, rng.integers(0, 6, nq), rng.integers(0, 6, ng)


def brute(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        return (qn @ gn.T).astype(np.float64)
    return ((q[:, None, :].astype(np.float64) - g[None]) ** 2).sum(2)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("ties", [False, True])
def test_flat_index_equals_brute_force_up_to_ties(metric: str, ties: bool) -> None:
    q, g, *_ = data(ties=ties)
    index = build_index(g, metric, "flat")
    scores, ids = index.search(q, k=50, chunk=7)
    ref = brute(q, g, metric)
    order = np.argsort(-ref if metric == "cosine" else ref, axis=1, kind="stable")[:, :50]
    ref_scores = np.take_along_axis(ref, order, 1)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)  # same score sequence
    # every returned id scores what FAISS says it does (ids may differ only among equal scores)
    np.testing.assert_allclose(np.take_along_axis(ref, ids, 1), scores, rtol=1e-4, atol=1e-4)
    assert all(len(set(row)) == 50 for row in ids)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_topk_over_whole_gallery_equals_full_ranking(metric: str) -> None:
    q, g, qp, gp, qc, gc = data(seed=1)
    gp[::23] = -1  # junk
    index = build_index(g, metric, "flat")
    _, ids = index.search(q, k=len(g))
    top = evaluate_topk(ids, qp, gp, qc, gc)
    full = evaluate_ranking(brute(q, g, metric), qp, gp, qc, gc,
                            higher_is_better=metric == "cosine", max_rank=len(g))
    assert top.mAP_at_k == pytest.approx(full.mAP, abs=1e-5)
    np.testing.assert_allclose(top.cmc[:50], full.cmc[:50], atol=1e-9)
    assert top.num_valid_queries == full.num_valid_queries and top.complete_fraction == 1.0


def test_truncation_is_a_lower_bound() -> None:
    q, g, qp, gp, qc, gc = data(seed=2)
    _, ids = build_index(g, "cosine", "flat").search(q, k=10)
    top = evaluate_topk(ids, qp, gp, qc, gc)
    full = evaluate_ranking(brute(q, g, "cosine"), qp, gp, qc, gc, higher_is_better=True)
    assert top.mAP_at_k <= full.mAP + 1e-9 and top.complete_fraction < 1.0
    np.testing.assert_allclose(top.cmc, full.cmc[:10], atol=1e-9)  # CMC within k is exact


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_almost_all_neighbours(kind: str) -> None:
    q, g, *_ = data(seed=3, ng=2000)
    exact = build_index(g, "cosine", "flat").search(q, k=20)[1]
    approx = build_index(g, "cosine", kind, nprobe=8).search(q, k=20)[1]
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])
    assert recall > 0.9


def test_bad_index_arguments() -> None:
    from reidbench.errors import ConfigError

    with pytest.raises(ConfigError, match="index kind"):
        build_index(np.zeros((4, 2), np.float32), "cosine", "lsh")
    with pytest.raises(ConfigError, match="unknown metric"):
        build_index(np.zeros((4, 2), np.float32), "dot", "flat")
