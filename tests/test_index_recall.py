"""Issue 15, galleries of a million: IVF trained on a seeded sample of the gallery, its size
rules, and recall@k of an index against exact search (hand-checkable geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.errors import ConfigError
from reidbench.retrieval.index import (
    build_index,
    nlist_for,
    params_from_flags,
    train_size_for,
    training_rows,
)
from reidbench.retrieval.recall import recall_at_k, sample_queries


def two_lines() -> tuple[np.ndarray, np.ndarray]:
    """40 points at x = -1, -1.01, ..., and 40 at x = 1, 1.01, ... (y = 0); one query at
    x = 0.001. Its 4 nearest are 1 (0.999), -1 (1.001), 1.01 (1.009), -1.01 (1.011): two in
    each cluster, so an IVF of 2 lists probing only the query's list finds exactly 2 of 4."""
    x = 0.01 * np.arange(40)
    g = np.concatenate([np.stack([-1 - x, 0 * x], 1), np.stack([1 + x, 0 * x], 1)])
    return g.astype(np.float32), np.array([[0.001, 0.0]], np.float32)


def clusters(seed: int = 0, n: int = 3000, d: int = 16, nq: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 4 * rng.standard_normal((30, d))
    g = centres[rng.integers(0, 30, n)] + rng.standard_normal((n, d))
    q = centres[rng.integers(0, 30, nq)] + rng.standard_normal((nq, d))
    return g.astype(np.float32), q.astype(np.float32)


def test_crippled_nprobe_finds_half_of_the_hand_computed_neighbours() -> None:
    g, q = two_lines()
    crippled = build_index(g, "euclidean", "ivf", nlist=2, nprobe=1)
    assert crippled.search(q, 4)[1].tolist() == [[40, 41, 42, 43]]  # the right-hand list only
    assert recall_at_k(crippled, g, q, k=4, sample=1).recall == 0.5
    full = build_index(g, "euclidean", "ivf", nlist=2, nprobe=2)  # every list: exhaustive
    assert recall_at_k(full, g, q, k=4, sample=1).recall == 1.0


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_index_has_recall_one_even_with_ties(metric: str) -> None:
    g, q = clusters()
    g[1::2] = g[::2]  # every gallery row twice: the k-th neighbour is always tied
    result = recall_at_k(build_index(g, metric, "flat"), g, q, k=7, sample=25)
    assert result.recall == 1.0 and result.num_sampled == 25 and result.k == 7


def test_recall_counts_missing_ids_as_missed() -> None:
    g, q = two_lines()
    index = build_index(g, "euclidean", "ivf", nlist=2, nprobe=1)
    # 50 asked, the probed list holds 40: at most 40 of 50 can be found
    assert recall_at_k(index, g, q, k=50, sample=1).recall <= 40 / 50


def test_query_sample_is_seeded_sorted_and_clipped() -> None:
    a = sample_queries(1000, 50, seed=3)
    assert np.array_equal(a, sample_queries(1000, 50, seed=3))
    assert not np.array_equal(a, sample_queries(1000, 50, seed=4))
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)
    assert np.array_equal(sample_queries(10, 50, seed=0), np.arange(10))
    with pytest.raises(ConfigError, match="--recall-sample must be >= 1"):
        sample_queries(10, 0, seed=0)


def test_ivf_sizes_follow_faiss_rules_of_thumb() -> None:
    assert nlist_for(1_000_000) == 4000  # 4 sqrt(N)
    assert train_size_for(1_000_000, 4000) == 156_000  # 39 per list, not the whole gallery
    assert nlist_for(2000) == 51  # capped at N / 39 so k-means has 39 points per centroid
    assert train_size_for(2000, 51) == 2000
    assert train_size_for(50_000, 100) == 10_000  # the floor
    assert nlist_for(10) == 1


def test_ivf_trains_on_the_seeded_sample_only() -> None:
    # rows outside the sample are moved 1000 away: centroids trained on the sample stay near
    # the origin; training on the whole gallery (the old behaviour) pulls some out there
    rng = np.random.default_rng(0)
    g = rng.standard_normal((20_000, 8)).astype(np.float32)
    inside = training_rows(len(g), train_size_for(len(g), 10), seed=5)
    assert len(inside) == 10_000
    outside = np.setdiff1d(np.arange(len(g)), inside)
    g[outside] += 1000
    index = build_index(g, "euclidean", "ivf", nlist=10, seed=5)
    centroids = index.index.quantizer.reconstruct_n(0, 10)
    assert np.abs(centroids).max() < 10


def test_ivf_training_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    g, q = clusters(n=4000)
    state = np.random.get_state()[1].copy()  # noqa: NPY002 (the global RNG, on purpose)
    a = build_index(g, "cosine", "ivf", nlist=20, seed=1)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002
    b = build_index(g, "cosine", "ivf", nlist=20, seed=1)
    c = build_index(g, "cosine", "ivf", nlist=20, seed=2)
    ca, cb, cc = (x.index.quantizer.reconstruct_n(0, 20) for x in (a, b, c))
    assert np.array_equal(ca, cb) and not np.array_equal(ca, cc)
    assert np.array_equal(a.search(q, 10)[1], b.search(q, 10)[1])


def test_flags_of_another_index_kind_are_refused() -> None:
    assert params_from_flags("ivf", nlist=7, nprobe=3).nlist == 7
    assert params_from_flags("hnsw", ef_search=9).ef_search == 9
    with pytest.raises(ConfigError, match="--nprobe goes with --index ivf"):
        params_from_flags("hnsw", nprobe=3)
    with pytest.raises(ConfigError, match="--ef-search goes with --index hnsw"):
        params_from_flags("flat", ef_search=3)
    with pytest.raises(ConfigError, match="larger than the gallery"):
        build_index(np.zeros((5, 2), np.float32), "euclidean", "ivf", nlist=6)
    with pytest.raises(ConfigError, match="nprobe must be >= 1"):
        build_index(np.zeros((5, 2), np.float32), "euclidean", "ivf", nprobe=0)
