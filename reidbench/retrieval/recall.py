"""Recall@k of a gallery index against exact search, on a seeded sample of the queries.

For each sampled query, the exact k-th best score s_k comes from a flat (exact) FAISS index
of the same gallery; the index under test returns k ids, and each counts as found when its
true score (recomputed here in float64 from the prepared features, not taken from the index)
is at least as good as s_k, to a relative 1e-5. Recall@k is the mean over the sample of
found / min(k, Ng). This is ann-benchmarks' "k-nn recall": an item tied with the k-th
neighbour counts, so an exact index scores 1.0 whatever order it gives ties; ids of -1 (an
IVF probe that found fewer than k items) count as missed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from reidbench.errors import ConfigError
from reidbench.retrieval.index import GalleryIndex, build_index, prepare

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # relative, on the k-th exact score


@dataclass(frozen=True)
class Recall:
    k: int
    recall: float  # mean over the sampled queries, in [0, 1]
    num_sampled: int  # queries in the sample
    seed: int

    def as_dict(self) -> dict[str, object]:
        return {"k": self.k, "recall": self.recall, "sampled_queries": self.num_sampled,
                "seed": self.seed}


def sample_queries(num_queries: int, sample: int, seed: int) -> np.ndarray:
    """Sorted query rows, ``min(sample, num_queries)`` drawn by ``default_rng(seed)``."""
    if sample < 1:
        raise ConfigError(f"--recall-sample must be >= 1, got {sample}")
    if sample >= num_queries:
        return np.arange(num_queries)
    return np.sort(np.random.default_rng(seed).choice(num_queries, sample, replace=False))


def recall_at_k(
    index: GalleryIndex, gallery: np.ndarray, queries: np.ndarray, k: int, sample: int,
    seed: int = 0,
) -> Recall:
    """Recall@k of ``index`` (built on ``gallery``) on ``sample`` seeded ``queries`` (module
    doc). Builds a flat index of ``gallery`` as the reference (one more copy of it)."""
    rows = sample_queries(len(queries), sample, seed)
    q = np.asarray(queries)[rows]
    k = min(k, len(gallery))
    exact_scores, _ = build_index(gallery, index.metric, "flat").search(q, k)
    _, ids = index.search(q, k)
    kth = exact_scores[:, -1:].astype(np.float64)
    tol = TOLERANCE * np.maximum(1.0, np.abs(kth))
    found = np.zeros(ids.shape, dtype=bool)
    step = max(1, (1 << 22) // max(1, k * np.asarray(gallery).shape[1]))
    for s in range(0, len(q), step):
        rows_ids = ids[s:s + step]
        qp = prepare(q[s:s + step], index.metric, index.scale, "queries").astype(np.float64)
        gp = prepare(np.asarray(gallery)[rows_ids.clip(min=0).reshape(-1)], index.metric,
                     index.scale, "gallery features").astype(np.float64)
        gp = gp.reshape(len(qp), rows_ids.shape[1], -1)
        if index.higher_is_better:
            true = np.einsum("qd,qkd->qk", qp, gp)
            found[s:s + step] = true >= kth[s:s + step] - tol[s:s + step]
        else:
            true = ((gp - qp[:, None, :]) ** 2).sum(-1)
            found[s:s + step] = true <= kth[s:s + step] + tol[s:s + step]
    found &= ids >= 0
    recall = float(found.sum(1).mean() / k) if len(q) else 1.0
    log.info("recall@%d of the %s index against exact search: %.4f (%d sampled queries)", k,
             index.kind, recall, len(q))
    return Recall(k, recall, len(q), seed)
