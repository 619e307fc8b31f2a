"""FAISS on GPU where the installed FAISS has GPU support and sees a GPU.

``faiss-cpu`` has neither ``StandardGpuResources`` nor ``index_cpu_to_gpu`` and reports no GPU;
a GPU build (``faiss-gpu``, conda's ``faiss-gpu``) has both. Then flat and IVF indexes are
copied to GPU 0 for searching (``to_gpu``) and IVF's k-means assigns points with a GPU flat
index (``clustering_index``, FAISS's own idiom). The CPU index is kept: it is what
``retrieval.index_file`` saves, and what answers searches deeper than FAISS's GPU limit of
``MAX_K`` neighbours. ``REIDBENCH_FAISS_GPU=0`` keeps everything on the CPU.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faiss

log = logging.getLogger(__name__)

MAX_K = 2048  # FAISS GPU indexes return at most this many neighbours per query
_resources: list[Any] = []  # one StandardGpuResources, created on first use, kept alive


def available() -> bool:
    """True where FAISS can run on a GPU: a GPU build, at least one GPU, not disabled."""
    if os.environ.get("REIDBENCH_FAISS_GPU", "1") == "0":
        return False
    if not (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "index_cpu_to_gpu")):
        return False
    return int(faiss.get_num_gpus()) > 0


def _resource() -> Any:
    if not _resources:
        _resources.append(faiss.StandardGpuResources())
    return _resources[0]


def to_gpu(index: faiss.Index) -> Any:
    """A copy of ``index`` on GPU 0, or None where FAISS has no GPU (or cannot copy it)."""
    if not available():
        return None
    try:
        return faiss.index_cpu_to_gpu(_resource(), 0, index)
    except RuntimeError as exc:  # e.g. out of GPU memory: search on the CPU instead
        log.warning("FAISS could not copy the index to the GPU (%s); searching on the CPU",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


def clustering_index(dim: int, metric: str) -> Any:
    """A GPU flat index for IVF's k-means assignments, or None without a GPU."""
    if not available():
        return None
    flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    return to_gpu(flat)
