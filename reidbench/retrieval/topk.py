"""Top-k re-ID metrics from a FAISS index, exact up to rank k with the flat index.

The protocol removes, per query, the gallery images of its identity taken by its own camera,
and ignores junk. Retrieving k items and removing those afterwards would let them use up
slots of the list (a query whose two nearest images are such matches would be scored on one
valid item out of three). So junk never enters the index, and every query's list is searched
``k + e`` deep, ``e`` the largest number of same-identity same-camera gallery images any query
has: after the removal each list still holds its ``k`` best valid items (or all of them).
"""

from __future__ import annotations

import logging

import numpy as np

from reidbench.errors import ConfigError
from reidbench.metrics.rank import TopKResult, evaluate_topk
from reidbench.retrieval.index import build_index

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


def evaluate_index_topk(
    query: np.ndarray, gallery: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None, *, k: int,
    metric: str = "cosine", kind: str = "flat", junk_pid: int | None = -1,
) -> TopKResult:
    """CMC up to ``k`` and mAP@k of the queries against a ``kind`` FAISS index of the gallery
    (see the module doc); exact for ``kind="flat"`` up to the order of tied scores. ``k`` is
    clipped to the number of non-junk gallery items."""
    if k < 1:
        raise ConfigError(f"top-k needs k >= 1, got {k}")
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
    _, found = build_index(np.asarray(gallery)[keep], metric, kind).search(query, width)
    ids = np.where(found >= 0, keep[found.clip(min=0)], -1)  # back to gallery indices
    return evaluate_topk(ids, query_pids, gallery_pids, query_camids, gallery_camids,
                         junk_pid=junk_pid, k=k)
