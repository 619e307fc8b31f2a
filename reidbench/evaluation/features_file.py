"""Feature files for `reidbench evaluate`: a .npz in one of two schemas, validated up front.

Re-ID: ``query_feats``, ``gallery_feats`` (float, N x D), ``query_pids``, ``gallery_pids``,
``query_camids``, ``gallery_camids`` (int). Verification: ``feats1``, ``feats2`` (float, P x D),
``labels`` (1 same / 0 different), optional ``folds`` (int, P; default: 10 contiguous folds).
Every problem (missing key, wrong shape or dtype, mismatched lengths, NaN or infinite values,
an empty gallery) is a DatasetError naming the key.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidbench.errors import DatasetError
from reidbench.metrics.verification import contiguous_folds

REID_KEYS = ("query_feats", "gallery_feats", "query_pids", "gallery_pids", "query_camids",
             "gallery_camids")
VERIFICATION_KEYS = ("feats1", "feats2", "labels")


@dataclass(frozen=True)
class ReidFeatures:
    query: np.ndarray  # (Nq, D) float32
    gallery: np.ndarray  # (Ng, D) float32
    query_pids: np.ndarray  # (Nq,) int64
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


@dataclass(frozen=True)
class PairFeatures:
    feats1: np.ndarray  # (P, D) float32
    feats2: np.ndarray
    labels: np.ndarray  # (P,) int64 in {0, 1}
    folds: np.ndarray  # (P,) int64


def _array(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return data[key]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # object arrays, corrupt members
        raise DatasetError(f"{path}: {key} cannot be read as a plain array: {exc}") from None


def _feats(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    x = _array(data, key, path)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{path}: {key} must be a 2-D float array (N x D), got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DatasetError(f"{path}: {key} has NaN or infinite values in {bad} rows")
    return np.ascontiguousarray(x, dtype=np.float32)


def _ints(data: np.lib.npyio.NpzFile, key: str, n: int, path: Path, of: str) -> np.ndarray:
    x = _array(data, key, path)
    if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
        raise DatasetError(f"{path}: {key} must be a 1-D integer array, got {x.dtype} {x.shape}")
    if len(x) != n:
        raise DatasetError(f"{path}: {key} has {len(x)} entries but {of} has {n} rows")
    return x.astype(np.int64)


def load_features(path: Path) -> ReidFeatures | PairFeatures:
    """Read and validate ``path``; the schema is chosen by the keys present."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"features file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path} is not a readable .npz file: {exc}") from None
    keys = set(data.files)
    if "feats1" in keys or "feats2" in keys:
        missing = [k for k in VERIFICATION_KEYS if k not in keys]
        if missing:
            raise DatasetError(f"{path}: verification schema is missing {', '.join(missing)} "
                               f"(needs {', '.join(VERIFICATION_KEYS)}, optional folds)")
        f1, f2 = _feats(data, "feats1", path), _feats(data, "feats2", path)
        if f1.shape != f2.shape:
            raise DatasetError(f"{path}: feats1 {f1.shape} and feats2 {f2.shape} differ in shape")
        labels = _ints(data, "labels", len(f1), path, "feats1")
        if not np.isin(labels, (0, 1)).all():
            raise DatasetError(f"{path}: labels must be 1 (same) or 0 (different)")
        if "folds" in keys:
            folds = _ints(data, "folds", len(f1), path, "feats1")
        else:  # insightface's default: 10 contiguous folds
            folds = contiguous_folds(len(f1), 10)
        return PairFeatures(f1, f2, labels, folds)
    missing = [k for k in REID_KEYS if k not in keys]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)}; expected the re-ID schema "
            f"({', '.join(REID_KEYS)}) or the verification schema ({', '.join(VERIFICATION_KEYS)})"
        )
    q, g = _feats(data, "query_feats", path), _feats(data, "gallery_feats", path)
    if len(g) == 0:
        raise DatasetError(f"{path}: gallery_feats is empty")
    if len(q) == 0:
        raise DatasetError(f"{path}: query_feats is empty")
    if q.shape[1] != g.shape[1]:
        raise DatasetError(f"{path}: query_feats have {q.shape[1]} dims, gallery_feats {g.shape[1]}")
    return ReidFeatures(
        q, g,
        _ints(data, "query_pids", len(q), path, "query_feats"),
        _ints(data, "gallery_pids", len(g), path, "gallery_feats"),
        _ints(data, "query_camids", len(q), path, "query_feats"),
        _ints(data, "gallery_camids", len(g), path, "gallery_feats"),
    )
