"""Gallery indexes on FAISS.

Cosine similarity is an inner product on L2-normalised features (``IndexFlatIP``); Euclidean
retrieval uses ``IndexFlatL2``, whose scores are *squared* distances (smaller first). Exact
(flat) indexes rank the whole gallery; approximate ones (IVF, HNSW) are for galleries too
large for exact search and return top-k lists only. Queries are searched in chunks so the
(chunk, k) results are the only large buffers. Ties are returned in FAISS's order; callers that
need a documented tie order re-sort with ``stable_topk``.

NaN/inf features raise ReidbenchError. Features of extreme magnitude are rescaled by powers of
two before FAISS squares them (``metrics.finite``): per row for cosine; for Euclidean by one
factor fixed by the gallery (``GalleryIndex.scale``), applied to the queries too, so the
returned squared distances are those of the scaled features (``scale`` is 1 for features
within [2^-32, 2^32]).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import faiss
import numpy as np

from reidbench.errors import ConfigError, ReidbenchError
from reidbench.metrics.finite import check_finite, power_of_two_scale, safe_rows

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")


@dataclass
class GalleryIndex:
    index: faiss.Index
    metric: str  # "cosine" (higher first) or "euclidean" (squared L2, lower first)
    kind: str
    scale: float = 1.0  # euclidean: the power of two every feature is multiplied by

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "cosine"

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(Nq, k) scores and gallery ids, best first; ids are -1 where fewer than k exist."""
        q = _prepare(queries, self.metric, self.scale, "queries")
        k = min(k, self.index.ntotal)
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        start = time.perf_counter()
        for s in range(0, len(q), chunk):
            scores[s:s + chunk], ids[s:s + chunk] = self.index.search(q[s:s + chunk], k)
        found = np.isfinite(scores) | (ids < 0)
        if not found.all():
            row = int(np.flatnonzero(~found.all(1))[0])
            raise ReidbenchError(
                f"{self.kind} {self.metric} search: query {row} has non-finite scores (the "
                f"queries' magnitudes overflow against the gallery's scale {self.scale:g}); "
                "rescale the queries and gallery together")
        log.info("searched %d queries in a %s %s index of %d in %.2fs", len(q), self.kind,
                 self.metric, self.index.ntotal, time.perf_counter() - start)
        return scores, ids


def _prepare(x: np.ndarray, metric: str, scale: float, what: str) -> np.ndarray:
    """float32 features for FAISS: finite, and scaled (see the module doc)."""
    check_finite(np.asarray(x), what)
    if metric == "cosine":
        x = safe_rows(x).numpy().copy()
        faiss.normalize_L2(x)
        return x
    if scale != 1.0:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float64) * scale, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(
    gallery: np.ndarray, metric: str = "cosine", kind: str = "flat", *, nlist: int | None = None,
    nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0,
) -> GalleryIndex:
    """Index ``gallery`` (Ng, D).

    Args:
        metric: "cosine" or "euclidean".
        kind: "flat" (exact), "ivf" (inverted lists, ``nlist`` centroids, default about
            4 sqrt(Ng), ``nprobe`` probed) or "hnsw" (graph with ``hnsw_m`` links,
            ``ef_search`` candidates).
        seed: k-means seed of the IVF training, for reproducible indexes.
    """
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric {metric!r}; expected cosine or euclidean")
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
    peak = float(np.abs(np.asarray(gallery)).max()) if np.asarray(gallery).size else 0.0
    scale = float(power_of_two_scale(np.float64(peak))) if metric == "euclidean" else 1.0
    g = _prepare(gallery, metric, scale, "gallery features")
    dim = g.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif kind == "ivf":
        lists = nlist or max(1, int(4 * np.sqrt(len(g))))
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss_metric)
        index.cp.seed = seed
        index.train(g)
        index.nprobe = min(nprobe, lists)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
        index.hnsw.efSearch = ef_search
    index.add(g)
    return GalleryIndex(index, metric, kind, scale)
