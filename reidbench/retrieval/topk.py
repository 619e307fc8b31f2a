"""Top-k re-ID metrics from a FAISS index, exact up to rank k with the flat index.

The protocol removes, per query, the gallery images of its identity taken by its own camera,
and ignores junk. Retrieving k items and removing those afterwards would let them use up
slots of the list (a query whose two nearest images are such matches would be scored on one
valid item out of three). So junk never enters the index, and every query's list is searched
``k + e`` deep, ``e`` the largest number of same-identity same-camera gallery images any query
has: after the removal each list still holds its ``k`` best valid items (or all of them).

``search_topk`` also reuses or saves the index (``index_file``, see ``retrieval.index_file``)
and measures the index's recall@k against exact search on a query sample
(``retrieval.recall``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.errors import ConfigError
from reidbench.metrics.rank import TopKResult, evaluate_topk
from reidbench.retrieval.index import IndexParams, build_index, check_kind
from reidbench.retrieval.recall import Recall, recall_at_k

log = logging.getLogger(__name__)


def same_camera_matches(
    query_pids: np.ndarray, query_camids: np.ndarray,
    gallery_pids: np.ndarray, gallery_camids: np.ndarray,
) -> np.ndarray:
    """(Nq,) number of gallery items with each query's pid and camera (removed by the
    protocol)."""
    qp, qc = np.asarray(query_pids), np.asarray(query_camids)
    keys = np.concatenate([np.stack([qp, qc], 1),
                           np.stack([np.asarray(gallery_pids), np.asarray(gallery_camids)], 1)])
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse[len(qp):], minlength=int(inverse.max()) + 1)
    return counts[inverse[:len(qp)]]


@dataclass(frozen=True)
class IndexTopK:
    """Top-k metrics and what the index was: its parameters, reuse, recall."""

    result: TopKResult
    index: dict[str, Any]  # kind, build and search parameters, gpu
    reused: bool  # loaded from ``index_file`` rather than built
    build_seconds: float  # 0 when reused
    recall: Recall | None  # with ``recall_sample``


def evaluate_index_topk(
    query: np.ndarray, gallery: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None, *, k: int,
    metric: str = "cosine", kind: str = "flat", junk_pid: int | None = -1,
) -> TopKResult:
    """CMC up to ``k`` and mAP@k of the queries against a ``kind`` FAISS index of the gallery
    (see the module doc); exact for ``kind="flat"`` up to the order of tied scores. ``k`` is
    clipped to the number of non-junk gallery items."""
    return search_topk(query, gallery, query_pids, gallery_pids, query_camids, gallery_camids,
                       k=k, metric=metric, kind=kind, junk_pid=junk_pid).result


def search_topk(
    query: np.ndarray, gallery: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None, *, k: int,
    metric: str = "cosine", kind: str = "flat", junk_pid: int | None = -1,
    params: IndexParams | None = None, index_file: Path | None = None,
    recall_sample: int | None = None, recall_seed: int = 0,
) -> IndexTopK:
    """``evaluate_index_topk`` with the index built by ``params`` (or reused from / saved to
    ``index_file``; the junk-free gallery rows are what it indexes and fingerprints) and, with
    ``recall_sample``, its recall@k against exact search on that many queries drawn with
    ``recall_seed``."""
    if k < 1:
        raise ConfigError(f"top-k needs k >= 1, got {k}")
    check_kind(metric, kind)
    params = params or IndexParams()
    gp = np.asarray(gallery_pids)
    use_cams = query_camids is not None and gallery_camids is not None
    keep = np.flatnonzero(gp != junk_pid) if junk_pid is not None else np.arange(len(gp))
    if len(keep) == 0:
        raise ConfigError("the gallery holds only junk items: nothing to retrieve")
    k = min(k, len(keep))
    extra = 0
    if use_cams:
        excluded = same_camera_matches(query_pids, np.asarray(query_camids), gp[keep],
                                       np.asarray(gallery_camids)[keep])
        extra = int(excluded.max()) if len(excluded) else 0
    width = min(len(keep), k + extra)
    log.info("top-%d search %d deep (%d junk items left out of the index)", k, width,
             len(gp) - len(keep))
    indexed = np.asarray(gallery)[keep]
    reused = False
    if index_file is not None:
        from reidbench.retrieval.index_file import load_or_build

        index, reused = load_or_build(index_file, indexed, metric, kind, params)
    else:
        index = build_index(indexed, metric, kind, params=params)
    recall = (recall_at_k(index, indexed, query, k, recall_sample, recall_seed)
              if recall_sample is not None else None)
    _, found = index.search(query, width)
    ids = np.where(found >= 0, keep[found.clip(min=0)], -1)  # back to gallery indices
    result = evaluate_topk(ids, query_pids, gallery_pids, query_camids, gallery_camids,
                           junk_pid=junk_pid, k=k)
    return IndexTopK(result, index.info(), reused, 0.0 if reused else index.build_seconds,
                     recall)
