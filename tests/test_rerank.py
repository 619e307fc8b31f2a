"""k-reciprocal re-ranking equals torchreid's dense ``re_ranking`` given the same base distances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from reidbench.errors import ConfigError
from reidbench.metrics.rank import evaluate_ranking, rank_from_scores
from reidbench.retrieval.rerank import RerankParams, k_reciprocal_distances

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchreid.reid.metrics.rank import evaluate_rank
    from torchreid.reid.utils.rerank import re_ranking


def clustered(seed: int, nq: int = 40, ng: int = 150, ids: int = 12, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    qp, gp = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    qf = centres[qp] + 0.9 * rng.standard_normal((nq, dim))
    gf = centres[gp] + 0.9 * rng.standard_normal((ng, dim))
    cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    return qf.astype(np.float32), gf.astype(np.float32), qp, gp, *cams


def base_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - a @ b.T
    return np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 1, 0.5), (7, 3, 0.0), (20, 6, 1.0)])
def test_matches_torchreid_dense_reranking(metric: str, k1: int, k2: int, lam: float) -> None:
    qf, gf, *_ = clustered(k1 + k2)
    want = re_ranking(base_distance(qf, gf, metric), base_distance(qf, qf, metric),
                      base_distance(gf, gf, metric), k1=k1, k2=k2, lambda_value=lam)
    rows = k_reciprocal_distances(qf, gf, metric, RerankParams(k1, k2, lam))
    got = rows(slice(0, len(qf))).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(rows(slice(7, 19)).numpy(), got[7:19])  # any row chunk


def test_rank_metrics_on_reranked_distances_match_torchreid() -> None:
    qf, gf, qp, gp, qc, gc = clustered(3)
    gp[:10] = -1  # junk
    dist = re_ranking(base_distance(qf, gf, "cosine"), base_distance(qf, qf, "cosine"),
                      base_distance(gf, gf, "cosine"))
    keep = gp != -1
    cmc, m_ap = evaluate_rank(dist[:, keep], qp, gp[keep], qc, gc[keep], 20, use_metric_cuhk03=False,
                              use_cython=False)[:2]
    rows = k_reciprocal_distances(qf, gf, "cosine")
    r = rank_from_scores(lambda sl: -rows(sl), len(qf), len(gf), qp, gp, qc, gc, max_rank=20)
    assert r.mAP == pytest.approx(m_ap, abs=1e-6)
    np.testing.assert_allclose(r.cmc, cmc, atol=1e-6)
    dense = evaluate_ranking(dist, qp, gp, qc, gc, higher_is_better=False, max_rank=20)
    assert r.mAP == pytest.approx(dense.mAP, abs=1e-6)


def test_reranking_improves_a_clustered_gallery() -> None:
    qf, gf, qp, gp, qc, gc = clustered(5, nq=60, ng=300, ids=15)
    plain = evaluate_ranking(-base_distance(qf, gf, "cosine"), qp, gp, qc, gc, higher_is_better=True)
    rows = k_reciprocal_distances(qf, gf, "cosine")
    rr = rank_from_scores(lambda sl: -rows(sl), len(qf), len(gf), qp, gp, qc, gc)
    assert rr.mAP > plain.mAP


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="k1"):
        RerankParams(k1=0)
    with pytest.raises(ConfigError, match="lambda"):
        RerankParams(lambda_value=1.5)
    with pytest.raises(ConfigError, match="metric"):
        k_reciprocal_distances(np.ones((3, 2)), np.ones((3, 2)), "manhattan")


def test_tiny_sets_with_fewer_items_than_k1() -> None:
    qf, gf, *_ = clustered(1, nq=3, ng=6)
    want = re_ranking(base_distance(qf, gf, "cosine"), base_distance(qf, qf, "cosine"),
                      base_distance(gf, gf, "cosine"))
    got = k_reciprocal_distances(qf, gf, "cosine")(slice(0, 3)).numpy()
    assert torch.isfinite(torch.as_tensor(got)).all()
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_evaluate_reid_reranks_when_asked() -> None:
    from reidbench.evaluation.reid import Features, evaluate_reid
    from reidbench.retrieval.rerank import evaluate_reranked

    qf, gf, qp, gp, qc, gc = clustered(9)
    q = Features(qf, qp, qc)
    g = Features(gf, gp, gc)
    params = RerankParams(10, 2, 0.4)
    got = evaluate_reid(q, g, "cosine", 20, rerank=params)
    # the independent reference: torchreid's dense re-ranking, then torchreid's rank metrics
    dist = re_ranking(base_distance(qf, gf, "cosine"), base_distance(qf, qf, "cosine"),
                      base_distance(gf, gf, "cosine"), k1=10, k2=2, lambda_value=0.4)
    cmc, m_ap = evaluate_rank(dist, qp, gp, qc, gc, 20, use_metric_cuhk03=False, use_cython=False)[:2]
    assert got.mAP == pytest.approx(m_ap, abs=1e-6)
    np.testing.assert_allclose(got.cmc[:20], cmc, atol=1e-6)
    assert got.mAP != pytest.approx(evaluate_reid(q, g, "cosine", 20).mAP, abs=1e-3)  # it did re-rank
    # and the library's own entry point agrees with it
    assert evaluate_reranked(qf, gf, qp, gp, qc, gc, "cosine", params, 20).mAP == got.mAP
