"""Issue 15, galleries of a million: FAISS on GPU where the installed FAISS has GPU support and
sees a GPU; exactly the CPU's answers for the flat index, the same index saved either way."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from reidbench.retrieval import gpu
from reidbench.retrieval.index import IndexParams, build_index
from reidbench.retrieval.index_file import load_or_build
from reidbench.retrieval.recall import recall_at_k

NO_GPU = ("FAISS sees no GPU here (faiss.get_num_gpus() == 0 or a faiss-cpu build without "
          "StandardGpuResources); run on a machine with faiss-gpu and a CUDA GPU")
needs_gpu = pytest.mark.skipif(not gpu.available(), reason=NO_GPU)


def data(n: int = 20_000, d: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((100, d))
    g = centres[rng.integers(0, 100, n)] + rng.standard_normal((n, d))
    q = centres[rng.integers(0, 100, 300)] + rng.standard_normal((300, d))
    return g.astype(np.float32), q.astype(np.float32)


def test_a_cpu_build_never_claims_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    assert not gpu.available() and gpu.to_gpu(faiss.IndexFlatL2(4)) is None
    index = build_index(np.eye(4, dtype=np.float32), "euclidean", "flat")
    assert index.on_gpu is None and index.info()["gpu"] is False


def test_gpu_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REIDBENCH_FAISS_GPU", "0")
    assert not gpu.available()


@needs_gpu
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_gpu_flat_search_matches_the_cpu(metric: str) -> None:
    g, q = data()
    index = build_index(g, metric, "flat")
    assert index.on_gpu is not None and index.info()["gpu"] is True
    scores, ids = index.search(q, 50)
    cpu_scores, cpu_ids = index.index.search(index_queries(index, q), 50)
    np.testing.assert_allclose(scores, cpu_scores, rtol=1e-4, atol=1e-4)
    assert np.mean(ids == cpu_ids) > 0.99  # ids may differ only among near-equal scores


def index_queries(index, q: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from reidbench.retrieval.index import prepare

    return prepare(q, index.metric, index.scale, "queries")


@needs_gpu
def test_gpu_ivf_trains_searches_and_saves_a_cpu_index(tmp_path: Path) -> None:
    g, q = data()
    params = IndexParams(nprobe=16)
    built, _ = load_or_build(tmp_path / "ivf.faiss", g, "cosine", "ivf", params)
    assert built.on_gpu is not None
    assert recall_at_k(built, g, q, k=20, sample=300).recall > 0.9
    loaded, reused = load_or_build(tmp_path / "ivf.faiss", g, "cosine", "ivf", params)
    assert reused and isinstance(loaded.index, faiss.IndexIVFFlat)  # saved from the CPU copy
    assert np.array_equal(loaded.search(q, 20)[1], built.search(q, 20)[1])


@needs_gpu
def test_searches_deeper_than_the_gpu_limit_fall_back_to_the_cpu() -> None:
    g, q = data(n=5000)
    index = build_index(g, "euclidean", "flat")
    _, ids = index.search(q[:3], gpu.MAX_K + 1)
    assert ids.shape == (3, gpu.MAX_K + 1) and (ids >= 0).all()
