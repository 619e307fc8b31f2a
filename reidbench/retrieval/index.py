"""Gallery indexes on FAISS.

Cosine similarity is an inner product on L2-normalised features (``IndexFlatIP``); Euclidean
retrieval uses ``IndexFlatL2``, whose scores are *squared* distances (smaller first). Exact
(flat) indexes rank the whole gallery; approximate ones (IVF, HNSW) are for galleries too
large for exact search and return top-k lists only. Queries are searched in chunks so the
(chunk, k) results are the only large buffers. Ties are returned in FAISS's order; callers that
need a documented tie order re-sort with ``stable_topk``.

IVF: ``nlist`` inverted lists (default ``nlist_for``: 4 sqrt(Ng), FAISS's guideline, which
also minimises the per-query work nlist + Ng nprobe / nlist at the default nprobe of 16, and
at most Ng / 39 so k-means has 39 points per centroid), trained by k-means on a seeded sample
of the gallery (``train_size_for``: max(39 nlist, 10,000) rows, FAISS's minimum of 39 points
per centroid, never the whole of a large gallery), ``nprobe`` lists searched per query. HNSW:
``hnsw_m`` links per node, ``ef_construction`` candidates while building, ``ef_search`` (at
least k) while searching. ``nprobe`` and ``ef_search`` are search-time settings: a built index
(``retrieval.index_file``) is reused with any of them.

On a FAISS build with GPUs (``retrieval.gpu``) flat and IVF indexes search on GPU 0 and IVF's
k-means runs there; HNSW has no FAISS GPU implementation and stays on the CPU.

NaN/inf features raise ReidbenchError. Features of extreme magnitude are rescaled by powers of
two before FAISS squares them (``metrics.finite``): per row for cosine; for Euclidean by one
factor fixed by the gallery (``GalleryIndex.scale``), applied to the queries too, so the
returned squared distances are those of the scaled features (``scale`` is 1 for features
within [2^-32, 2^32]).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import faiss
import numpy as np

from reidbench.errors import ConfigError, ReidbenchError
from reidbench.metrics.finite import check_finite, power_of_two_scale, safe_rows
from reidbench.retrieval import gpu

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
MIN_POINTS_PER_LIST = 39  # FAISS warns below this many k-means training points per centroid
MIN_TRAIN = 10_000  # IVF trains on at least this many rows (or all, if fewer)


@dataclass(frozen=True)
class IndexParams:
    """How an index is built (``build``: fixed in a saved index, its fingerprint) and
    searched (``search``: set at every call, a saved index serves any)."""

    nlist: int | None = None  # ivf: inverted lists (None: nlist_for(Ng))
    train_size: int | None = None  # ivf: k-means sample (None: train_size_for(Ng, nlist))
    seed: int = 0  # ivf: seed of the training sample and of k-means
    hnsw_m: int = 32  # hnsw: graph links per node
    ef_construction: int = 40  # hnsw: candidates while building (FAISS's default)
    nprobe: int = 16  # ivf, search time: lists probed per query
    ef_search: int = 128  # hnsw, search time: candidates per query (at least k is used)

    def resolved(self, kind: str, size: int) -> IndexParams:
        """Defaults filled in for a gallery of ``size``; checked (ConfigError)."""
        for name in ("nlist", "train_size", "hnsw_m", "ef_construction", "nprobe", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"index parameter {name} must be >= 1, got {value}")
        if kind != "ivf":
            return self
        nlist = self.nlist or nlist_for(size)
        if nlist > size:
            raise ConfigError(f"--nlist {nlist} is larger than the gallery ({size} items); "
                              f"use at most {size} (default for this size: {nlist_for(size)})")
        return replace(self, nlist=nlist,
                       train_size=min(size, self.train_size or train_size_for(size, nlist)))

    def build(self, kind: str) -> dict[str, Any]:
        """The fields that make an index of ``kind`` what it is (its fingerprint)."""
        names = {"flat": (), "ivf": ("nlist", "train_size", "seed"),
                 "hnsw": ("hnsw_m", "ef_construction")}[kind]
        return {name: getattr(self, name) for name in names}

    def search(self, kind: str) -> dict[str, Any]:
        """The search-time fields of an index of ``kind``."""
        names = {"flat": (), "ivf": ("nprobe",), "hnsw": ("ef_search",)}[kind]
        return {name: getattr(self, name) for name in names}


def params_from_flags(
    kind: str, *, nlist: int | None = None, nprobe: int | None = None,
    hnsw_m: int | None = None, ef_search: int | None = None,
) -> IndexParams:
    """IndexParams from the command line's flags (None: not given); a flag of another kind
    of index is a ConfigError rather than silently ignored."""
    owners = {"--nlist": ("ivf", nlist), "--nprobe": ("ivf", nprobe),
              "--hnsw-m": ("hnsw", hnsw_m), "--ef-search": ("hnsw", ef_search)}
    for flag, (owner, value) in owners.items():
        if value is not None and kind != owner:
            raise ConfigError(f"{flag} goes with --index {owner} (this call has --index {kind})")
    given = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search}
    return replace(IndexParams(), **{k: v for k, v in given.items() if v is not None})


def nlist_for(size: int) -> int:
    """Default IVF lists for a gallery of ``size``: 4 sqrt(size), at most size / 39."""
    return max(1, min(int(4 * math.sqrt(size)), size // MIN_POINTS_PER_LIST))


def train_size_for(size: int, nlist: int) -> int:
    """Default IVF training sample: max(39 nlist, 10,000) rows, at most the gallery."""
    return min(size, max(MIN_POINTS_PER_LIST * nlist, MIN_TRAIN))


def training_rows(size: int, train_size: int, seed: int) -> np.ndarray:
    """The sorted gallery rows IVF trains on: ``train_size`` drawn without replacement by
    ``np.random.default_rng(seed)`` (no global RNG is touched)."""
    if train_size >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, train_size, replace=False))


@dataclass
class GalleryIndex:
    index: faiss.Index
    metric: str  # "cosine" (higher first) or "euclidean" (squared L2, lower first)
    kind: str
    scale: float = 1.0  # euclidean: the power of two every feature is multiplied by
    params: IndexParams = IndexParams()
    build_seconds: float = 0.0
    on_gpu: Any = None  # a GPU copy of ``index`` searched instead, where FAISS has GPUs

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "cosine"

    @property
    def exact(self) -> bool:
        return self.kind == "flat"

    def info(self) -> dict[str, Any]:
        """What the metrics record about this index: kind, build and search parameters."""
        return {"kind": self.kind, **self.params.build(self.kind),
                **self.params.search(self.kind), "gpu": self.on_gpu is not None}

    def set_search(self, params: IndexParams) -> None:
        """Apply the search-time settings of ``params`` (nprobe, ef_search)."""
        self.params = replace(self.params, nprobe=params.nprobe, ef_search=params.ef_search)
        if self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = min(params.nprobe, self.index.nlist)
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = params.ef_search
        self.on_gpu = gpu.to_gpu(self.index) if self.kind != "hnsw" else None
        if self.kind == "ivf" and self.on_gpu is not None:
            self.on_gpu.nprobe = min(params.nprobe, self.index.nlist)

    def search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(Nq, k) scores and gallery ids, best first; ids are -1 where fewer than k exist."""
        q = prepare(queries, self.metric, self.scale, "queries")
        k = min(k, self.index.ntotal)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.params.ef_search, k)
        index = self.on_gpu if self.on_gpu is not None and k <= gpu.MAX_K else self.index
        scores = np.empty((len(q), k), dtype=np.float32)
        ids = np.empty((len(q), k), dtype=np.int64)
        start = time.perf_counter()
        for s in range(0, len(q), chunk):
            scores[s:s + chunk], ids[s:s + chunk] = index.search(q[s:s + chunk], k)
        found = np.isfinite(scores) | (ids < 0)
        if not found.all():
            row = int(np.flatnonzero(~found.all(1))[0])
            raise ReidbenchError(
                f"{self.kind} {self.metric} search: query {row} has non-finite scores (the "
                f"queries' magnitudes overflow against the gallery's scale {self.scale:g}); "
                "rescale the queries and gallery together")
        log.info("searched %d queries in a %s %s index of %d in %.2fs%s", len(q), self.kind,
                 self.metric, self.index.ntotal, time.perf_counter() - start,
                 " (GPU)" if index is self.on_gpu else "")
        return scores, ids


def prepare(x: np.ndarray, metric: str, scale: float, what: str) -> np.ndarray:
    """float32 features for FAISS: finite, and scaled (see the module doc)."""
    check_finite(np.asarray(x), what)
    if metric == "cosine":
        x = safe_rows(x).numpy().copy()
        faiss.normalize_L2(x)
        return x
    if scale != 1.0:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float64) * scale, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def gallery_scale(gallery: np.ndarray, metric: str) -> float:
    """The power of two the features are multiplied by (euclidean; 1 for cosine)."""
    if metric != "euclidean":
        return 1.0
    peak = float(np.abs(np.asarray(gallery)).max()) if np.asarray(gallery).size else 0.0
    return float(power_of_two_scale(np.float64(peak)))


def check_kind(metric: str, kind: str) -> None:
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown metric {metric!r}; expected cosine or euclidean")
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")


def build_index(
    gallery: np.ndarray, metric: str = "cosine", kind: str = "flat", *, nlist: int | None = None,
    nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0,
    train_size: int | None = None, ef_construction: int = 40, params: IndexParams | None = None,
) -> GalleryIndex:
    """Index ``gallery`` (Ng, D).

    Args:
        metric: "cosine" or "euclidean".
        kind: "flat" (exact), "ivf" (inverted lists, ``nlist`` centroids trained on
            ``train_size`` sampled rows, ``nprobe`` probed) or "hnsw" (graph with ``hnsw_m``
            links, ``ef_construction`` / ``ef_search`` candidates); defaults in the module doc.
        seed: seed of the IVF training sample and k-means, for reproducible indexes.
        params: all of the above at once (then the keyword values are ignored).
    """
    check_kind(metric, kind)
    if params is None:
        params = IndexParams(nlist, train_size, seed, hnsw_m, ef_construction, nprobe, ef_search)
    params = params.resolved(kind, len(gallery))
    start = time.perf_counter()
    scale = gallery_scale(gallery, metric)
    g = prepare(gallery, metric, scale, "gallery features")
    dim = g.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if kind == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif kind == "ivf":
        assert params.nlist is not None and params.train_size is not None
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, params.nlist, faiss_metric)
        index.cp.seed = params.seed
        if params.train_size < MIN_POINTS_PER_LIST * params.nlist:
            log.warning("IVF: %d training rows for %d lists (FAISS wants %d per list); use a "
                        "smaller --nlist", params.train_size, params.nlist, MIN_POINTS_PER_LIST)
        clustering = gpu.clustering_index(dim, metric)  # kept alive until train returns
        if clustering is not None:
            index.clustering_index = clustering
        index.train(g[training_rows(len(g), params.train_size, params.seed)])
        index.clustering_index = None
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss_metric)
        index.hnsw.efConstruction = params.ef_construction
    index.add(g)
    built = GalleryIndex(index, metric, kind, scale, params, time.perf_counter() - start)
    built.set_search(params)
    if kind != "flat":
        log.info("built a %s %s index of %d x %d in %.2fs (%s)", kind, metric, len(g), dim,
                 built.build_seconds, ", ".join(f"{k}={v}" for k, v in asdict(params).items()
                                                if k in params.build(kind)))
    return built
