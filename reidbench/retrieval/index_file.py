"""Saving a built gallery index and reusing it, refused when it no longer fits.

``PATH`` holds the index as ``faiss.serialize_index`` writes it; ``PATH.json`` (the sidecar)
its fingerprint: kind, metric, build parameters (``IndexParams.build``), gallery size and
dimension, the Euclidean scale, the sha256 of the gallery features (dtype, shape and bytes of
the rows indexed) and the sha256 of the index bytes. Both are written atomically, the index
first, so an interrupted save leaves an index without a sidecar, which is refused, never a
sidecar vouching for a half-written index.

Reuse compares the fingerprint of this call (same gallery, kind, metric, build parameters) with
the sidecar, then reads the index bytes once, checks their sha256 against the sidecar and
only then hands those same bytes to FAISS. Any difference is one ``ConfigError`` naming the
field and how to fix it; a stale or foreign index is never used, and never overwritten or
deleted (the user removes it). Search settings (nprobe, ef_search) are not part of the
fingerprint: one saved index serves any of them. FAISS parses the file in C++: reuse only
index files you (or reidbench) wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from reidbench.errors import ConfigError
from reidbench.fileio import atomic_write_bytes, atomic_write_json
from reidbench.retrieval.index import (
    GalleryIndex,
    IndexParams,
    build_index,
    check_kind,
    gallery_scale,
)

log = logging.getLogger(__name__)

FORMAT = "reidbench-faiss-index/1"
# fields compared on reuse, in the order a mismatch is reported
COMPARED = ("format", "kind", "metric", "num_gallery", "dim", "build", "scale", "gallery_sha256")
LABELS = {"format": "format", "kind": "index kind", "metric": "metric",
          "num_gallery": "a gallery of size", "dim": "features of dimension",
          "scale": "the euclidean scale", "gallery_sha256": "gallery features of sha256"}
FAISS_TYPES = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def features_sha256(x: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    x = np.ascontiguousarray(x)
    digest = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    flat = x.reshape(-1).view(np.uint8) if x.size else np.zeros(0, np.uint8)
    step = 1 << 26
    for s in range(0, len(flat), step):
        digest.update(flat[s:s + step].data)
    return digest.hexdigest()


def fingerprint(gallery: np.ndarray, metric: str, kind: str, params: IndexParams) -> dict[str, Any]:
    """What an index built from ``gallery`` with ``params`` (resolved) must record."""
    g = np.asarray(gallery)
    return {"format": FORMAT, "kind": kind, "metric": metric, "num_gallery": int(g.shape[0]),
            "dim": int(g.shape[1]) if g.ndim == 2 else 0, "build": params.build(kind),
            "scale": gallery_scale(g, metric), "gallery_sha256": features_sha256(g)}


def load_or_build(
    path: Path, gallery: np.ndarray, metric: str, kind: str, params: IndexParams,
) -> tuple[GalleryIndex, bool]:
    """The index of ``gallery`` saved at ``path`` if it matches, else built and saved there
    when nothing is there yet; True when it was reused. ConfigError for a mismatch."""
    check_kind(metric, kind)
    params = params.resolved(kind, len(gallery))
    if path.is_dir():
        raise ConfigError(f"--index-file {path} is a directory; give a file name, e.g. "
                          f"{path / 'gallery.faiss'}")
    want = fingerprint(gallery, metric, kind, params)
    if path.exists() or sidecar(path).exists():
        return load(path, want, params), True
    built = build_index(gallery, metric, kind, params=params)
    save(path, built, want)
    return built, False


def save(path: Path, built: GalleryIndex, fingerprint: dict[str, Any]) -> None:
    """Write ``built.index`` to ``path`` and its fingerprint to the sidecar, atomically."""
    data = faiss.serialize_index(built.index)  # (bytes,) uint8: one copy of the index
    atomic_write_bytes(path, data)  # a buffer, written as it is (no second copy as bytes)
    record = {**fingerprint, "index_sha256": hashlib.sha256(data.data).hexdigest(),
              "index_bytes": int(data.nbytes), "faiss_version": faiss.__version__,
              "build_seconds": round(built.build_seconds, 3)}
    atomic_write_json(sidecar(path), record)
    log.info("saved the %s index to %s (%.1f MB) and its fingerprint to %s", built.kind, path,
             data.nbytes / 2**20, sidecar(path))


def _refuse(path: Path, problem: str) -> ConfigError:
    return ConfigError(f"--index-file {path}: {problem}; it is not used (remove {path} and "
                       f"{sidecar(path).name} to rebuild it there, or give another path)")


def read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar(path)
    if not side.is_file():
        raise _refuse(path, f"has no fingerprint {side.name} beside it (an index file reidbench "
                            "did not write, or an interrupted save)")
    if not path.is_file():
        raise _refuse(path, f"is missing, but its fingerprint {side.name} exists")
    try:
        record = json.loads(side.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(path, f"its fingerprint {side.name} is not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _refuse(path, f"its fingerprint {side.name} is not a {FORMAT} record")
    return record


def load(path: Path, want: dict[str, Any], params: IndexParams) -> GalleryIndex:
    """The index at ``path``, if its sidecar matches ``want`` and its bytes their sha256."""
    record = read_sidecar(path)
    for key in COMPARED:
        have, need = record.get(key), want[key]
        if have == need:
            continue
        if key == "build" and isinstance(have, dict):
            names = [n for n in need if have.get(n) != need[n]] or list(have)
            have = ", ".join(f"{n}={have.get(n)}" for n in names)
            need = ", ".join(f"{n}={need.get(n)}" for n in names)
            raise _refuse(path, f"it was built with {have}, this call asks for {need}")
        raise _refuse(path, f"it was built for {LABELS[key]} {_show(have)}, this call has "
                            f"{_show(need)}")
    start = time.perf_counter()
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if hashlib.sha256(data.data).hexdigest() != record.get("index_sha256"):
        raise _refuse(path, f"its bytes do not match the sha256 in {sidecar(path).name} (the "
                            "file changed after it was written)")
    try:
        index = faiss.deserialize_index(data)
    except RuntimeError as exc:
        raise _refuse(path, f"FAISS cannot read it ({str(exc).splitlines()[0]})") from None
    kind = want["kind"]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if want["metric"] == "cosine" else faiss.METRIC_L2
    if (not isinstance(index, FAISS_TYPES[kind]) or index.ntotal != want["num_gallery"]
            or index.d != want["dim"] or index.metric_type != faiss_metric):
        raise _refuse(path, f"it holds a {type(index).__name__} of {index.ntotal} x {index.d}, "
                            f"not the {kind} {want['metric']} index of {want['num_gallery']} x "
                            f"{want['dim']} its fingerprint describes")
    loaded = GalleryIndex(index, want["metric"], kind, float(want["scale"]), params)
    loaded.set_search(params)
    log.info("reused the %s index %s (%d items) in %.2fs", kind, path, index.ntotal,
             time.perf_counter() - start)
    return loaded


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:12] + "..."
    return str(value)
