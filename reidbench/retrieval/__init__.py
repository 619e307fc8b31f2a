"""FAISS retrieval: exact and approximate indexes, searched in chunks of queries."""

from reidbench.retrieval.index import GalleryIndex, build_index

__all__ = ["GalleryIndex", "build_index"]
