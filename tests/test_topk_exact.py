"""`--index flat --topk K` (issue 12, item 12): same-camera matches and junk must not use up
slots of the top-K list, so CMC up to K is exact (equal to the full-ranking evaluator's) and
mAP@K is AP over the K best valid items."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.metrics.rank import evaluate_ranking_features
from reidbench.retrieval.topk import evaluate_index_topk, same_camera_matches

REPRO = dict(
    query=np.array([[1, 0, 0]], np.float32),
    gallery=np.array([[1, .01, 0], [1, .02, 0], [1, .3, 0], [1, .5, 0]], np.float32),
    query_pids=np.array([1]), gallery_pids=np.array([1, 1, 2, 1]),
    query_camids=np.array([1]), gallery_camids=np.array([1, 1, 2, 2]),
)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_issue_repro(metric: str) -> None:
    # the two nearest are the query's identity in its own camera (removed); then pid 2, then the
    # match: exact CMC [0, 1, 1]; searching only 3 deep gave [0, 0, 0]
    top = evaluate_index_topk(**REPRO, k=3, metric=metric)
    np.testing.assert_array_equal(top.cmc, [0.0, 1.0, 1.0])
    assert top.mAP_at_k == 0.5 and top.complete_fraction == 1.0


def test_issue_repro_through_the_cli(tmp_path: Path) -> None:
    arrays = {k: v for k, v in REPRO.items() if k not in ("query", "gallery")}
    np.savez(tmp_path / "f.npz", query_feats=REPRO["query"], gallery_feats=REPRO["gallery"], **arrays)
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "f.npz"), "--index", "flat",
                     "--topk", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["cmc"] == [0.0, 1.0, 1.0]


def crowded_case(seed: int, nq: int = 30, ng: int = 400, d: int = 12):  # type: ignore[no-untyped-def]
    """Few identities and cameras: many same-identity same-camera items near each query (the
    queries are near their identity's centre), a tenth of the gallery junk, some distractors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d)) * 2
    gp, qp = rng.integers(0, 6, ng), rng.integers(1, 6, nq)
    g = centres[gp] + 0.7 * rng.standard_normal((ng, d))
    q = centres[qp] + 0.7 * rng.standard_normal((nq, d))
    gc, qc = rng.integers(0, 3, ng), rng.integers(0, 3, nq)
    gp[rng.random(ng) < 0.1] = -1  # junk
    return q.astype(np.float32), g.astype(np.float32), qp, gp, qc, gc


def reference_map_at_k(q, g, qp, gp, qc, gc, k, metric):  # type: ignore[no-untyped-def]
    """AP over each query's k best valid items (float64 brute force), divided by all its valid
    positives; queries without a valid positive skipped."""
    if metric == "cosine":
        qn, gn = (x / np.linalg.norm(x, axis=1, keepdims=True)
                  for x in (q.astype(np.float64), g.astype(np.float64)))
        key = -(qn @ gn.T)
    else:
        key = np.linalg.norm(q[:, None].astype(np.float64) - g[None], axis=2)
    aps = []
    for i in range(len(q)):
        valid = (gp != -1) & ~((gp == qp[i]) & (gc == qc[i]))
        positives = int((valid & (gp == qp[i])).sum())
        if positives == 0:
            continue
        order = [j for j in np.argsort(key[i], kind="stable") if valid[j]][:k]
        hits = np.flatnonzero(gp[order] == qp[i])
        aps.append(np.sum((np.arange(len(hits)) + 1) / (hits + 1)) / positives)
    return float(np.mean(aps))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_cmc_up_to_k_equals_the_full_ranking(metric: str, seed: int, k: int) -> None:
    q, g, qp, gp, qc, gc = crowded_case(seed)
    assert same_camera_matches(qp, qc, gp[gp != -1], gc[gp != -1]).max() > k  # slots at stake
    top = evaluate_index_topk(q, g, qp, gp, qc, gc, k=k, metric=metric)
    full = evaluate_ranking_features(q, g, qp, gp, qc, gc, metric=metric, max_rank=k)
    np.testing.assert_array_equal(top.cmc, full.cmc)
    assert top.num_valid_queries == full.num_valid_queries
    assert top.num_skipped == full.num_skipped
    assert top.mAP_at_k == pytest.approx(reference_map_at_k(q, g, qp, gp, qc, gc, k, metric), abs=1e-12)
    assert top.mAP_at_k <= full.mAP + 1e-12


def test_same_camera_matches_counts() -> None:
    got = same_camera_matches(np.array([1, 1, 2, 9]), np.array([0, 1, 0, 0]),
                              np.array([1, 1, 1, 2, 2, 1]), np.array([0, 0, 1, 0, 1, 2]))
    np.testing.assert_array_equal(got, [2, 1, 1, 0])
