"""Feature files for `reidbench evaluate`: a .npz in one of two schemas, validated up front.

Re-ID: ``query_feats``, ``gallery_feats`` (float, N x D), ``query_pids``, ``gallery_pids``,
``query_camids``, ``gallery_camids`` (int). Verification: ``feats1``, ``feats2`` (float, P x D),
``labels`` (1 same / 0 different), optional ``folds`` (int, P; default: 10 contiguous folds).
Every problem (not a regular file, not an .npz, missing key, wrong shape or dtype, mismatched
lengths, NaN or infinite values, an empty gallery) is a DatasetError naming the key.

A file may come from anyone, so nothing is read before it is known to be sane: the header of
every needed array (``numpy.lib.format``, never a pickle) is read from its zip member first and
checked against the schema, against the member's size (a header declaring more than the member
holds is refused) and against the memory it would take; an archive that expands far beyond its
own size (a zip bomb) is refused before anything is decompressed. Features beyond float32's
range are scaled by a power of two before the cast (``metrics.finite``), never turned into inf.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import torch

from reidbench.errors import DatasetError
from reidbench.metrics.finite import safe_joint, safe_rows
from reidbench.metrics.verification import contiguous_folds

REID_KEYS = ("query_feats", "gallery_feats", "query_pids", "gallery_pids", "query_camids",
             "gallery_camids")
VERIFICATION_KEYS = ("feats1", "feats2", "labels")
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# an archive whose arrays total more than MAX_EXPANSION times its own size is refused when they
# exceed EXPANSION_FLOOR bytes: float features hardly compress (about 1.1x), a zip bomb 1000x
MAX_EXPANSION = 50
EXPANSION_FLOOR = 64 << 20


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


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # of the data the header declares


class _Archive:
    """The arrays of an .npz, addressed by key; headers are read and checked before any data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = _regular_file_size(path)
        try:
            with path.open("rb") as fh:
                magic = fh.read(6)
        except OSError as exc:
            raise DatasetError(f"features file {path} cannot be read: {exc.strerror or exc}") from None
        if magic == b"\x93NUMPY":
            raise DatasetError(
                f"{path} is a single .npy array, not an .npz archive of named arrays: save them "
                f"with np.savez(path, {', '.join(k + '=...' for k in REID_KEYS[:2])}, ...)")
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise DatasetError(f"{path} is not a readable .npz file: {exc}") from None
        self.members = {(name[:-4] if name.endswith(".npy") else name): name
                        for name in self.zip.namelist()}
        self.headers: dict[str, _Header] = {}

    @property
    def keys(self) -> set[str]:
        return set(self.members)

    def header(self, key: str) -> _Header:
        if key in self.headers:
            return self.headers[key]
        info = self.zip.getinfo(self.members[key])
        try:
            with self.zip.open(info) as fp:
                version = npy_format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = npy_format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                offset = fp.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DatasetError(f"{self.path}: {key} is not a plain .npy array: {exc}") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise DatasetError(f"{self.path}: {key} cannot be read as a plain array: it holds "
                               f"{dtype} (objects or records; pickles are never loaded)")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > info.file_size:
            raise DatasetError(
                f"{self.path}: {key} declares {dtype} data of shape {tuple(shape)} "
                f"({nbytes:,} bytes) but its member holds {info.file_size - offset:,} bytes: "
                "the file is corrupt or forged")
        self.headers[key] = _Header(tuple(int(n) for n in shape), dtype, nbytes)
        return self.headers[key]

    def check_budget(self, keys: list[str]) -> None:
        """Refuse, before decompressing anything, what would not fit or looks like a bomb."""
        total = sum(self.headers[k].nbytes for k in keys)
        if total > EXPANSION_FLOOR and total > MAX_EXPANSION * max(self.size, 1):
            raise DatasetError(
                f"{self.path}: its {self.size:,} bytes would expand to {total:,} bytes of arrays "
                f"({total / max(self.size, 1):.0f}x; features compress about 1.1x): refusing "
                "what looks like a zip bomb")
        memory = _physical_memory()
        if memory is not None and 2 * total > memory:  # the arrays and their float32 copies
            raise DatasetError(
                f"{self.path}: its arrays take {total / 2**30:.1f} GiB, with their float32 "
                f"copies more than this machine's {memory / 2**30:.1f} GiB of memory")

    def read(self, key: str) -> np.ndarray:
        header = self.header(key)
        try:
            with self.zip.open(self.members[key]) as fp:
                array = npy_format.read_array(fp, allow_pickle=False)
        except MemoryError:
            raise DatasetError(f"{self.path}: not enough memory to read {key} "
                               f"({header.nbytes:,} bytes)") from None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DatasetError(f"{self.path}: {key} cannot be read as a plain array: {exc}") from None
        return array


def _regular_file_size(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"features file {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"features file {path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"features file {path} is a directory; expected an .npz file")
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"features file {path} is not a regular file (a device, pipe or "
                           "socket); expected an .npz file")
    if st.st_size == 0:
        raise DatasetError(f"features file {path} is empty; expected an .npz file")
    return st.st_size


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_feats(archive: _Archive, key: str) -> _Header:
    h = archive.header(key)
    if len(h.shape) != 2 or h.dtype.kind != "f":
        raise DatasetError(f"{archive.path}: {key} must be a 2-D float array (N x D), "
                           f"got {h.dtype} {h.shape}")
    if h.dtype not in FLOAT_DTYPES:
        raise DatasetError(f"{archive.path}: {key} is {h.dtype}; expected float16, float32 or float64")
    return h


def _check_ints(archive: _Archive, key: str, n: int, of: str) -> None:
    h = archive.header(key)
    if len(h.shape) != 1 or h.dtype.kind not in "iub":
        raise DatasetError(f"{archive.path}: {key} must be a 1-D integer array, got {h.dtype} {h.shape}")
    if h.shape[0] != n:
        raise DatasetError(f"{archive.path}: {key} has {h.shape[0]} entries but {of} has {n} rows")


def _finite(archive: _Archive, key: str, x: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DatasetError(f"{archive.path}: {key} has NaN or infinite values in {int(bad.sum())} "
                           f"of {len(x)} rows (first row {int(np.flatnonzero(bad)[0])})")
    return x


def _float32(archive: _Archive, keys: tuple[str, ...], arrays: list[np.ndarray], joint: bool
             ) -> list[np.ndarray]:
    """float32 copies; values beyond its range scaled by powers of two (jointly when distances
    between the arrays matter, else per row). A row that would vanish is an error."""
    out = safe_joint(*arrays) if joint else tuple(safe_rows(a) for a in arrays)
    result = []
    for key, x, y in zip(keys, arrays, out, strict=True):
        y_np = np.ascontiguousarray(y.numpy() if isinstance(y, torch.Tensor) else y)
        if x.size:
            lost = (x != 0).any(1) & (y_np == 0).all(1)
            if lost.any():
                raise DatasetError(
                    f"{archive.path}: {key} row {int(np.flatnonzero(lost)[0])} is non-zero but "
                    "vanishes in float32 next to the file's largest values; rescale the features")
        result.append(y_np)
    return result


def _labels(archive: _Archive, key: str) -> np.ndarray:
    return archive.read(key).astype(np.int64)


def load_features(path: Path) -> ReidFeatures | PairFeatures:
    """Read and validate ``path``; the schema is chosen by the keys present."""
    archive = _Archive(Path(path))
    with archive.zip:
        return _load(archive)


def _load(archive: _Archive) -> ReidFeatures | PairFeatures:
    path, keys = archive.path, archive.keys
    if "feats1" in keys or "feats2" in keys:
        missing = [k for k in VERIFICATION_KEYS if k not in keys]
        if missing:
            raise DatasetError(f"{path}: verification schema is missing {', '.join(missing)} "
                               f"(needs {', '.join(VERIFICATION_KEYS)}, optional folds)")
        h1, h2 = _check_feats(archive, "feats1"), _check_feats(archive, "feats2")
        if h1.shape != h2.shape:
            raise DatasetError(f"{path}: feats1 {h1.shape} and feats2 {h2.shape} differ in shape")
        needed = ["feats1", "feats2", "labels"] + (["folds"] if "folds" in keys else [])
        for key in needed[2:]:
            _check_ints(archive, key, h1.shape[0], "feats1")
        archive.check_budget(needed)
        f1, f2 = (_finite(archive, k, archive.read(k)) for k in ("feats1", "feats2"))
        f1, f2 = _float32(archive, ("feats1", "feats2"), [f1, f2], joint=False)
        labels = _labels(archive, "labels")
        if not np.isin(labels, (0, 1)).all():
            raise DatasetError(f"{path}: labels must be 1 (same) or 0 (different)")
        if "folds" in keys:
            folds = _labels(archive, "folds")
        else:  # insightface's default: 10 contiguous folds
            folds = contiguous_folds(len(f1), 10)
        return PairFeatures(f1, f2, labels, folds)
    missing = [k for k in REID_KEYS if k not in keys]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)}; expected the re-ID schema "
            f"({', '.join(REID_KEYS)}) or the verification schema ({', '.join(VERIFICATION_KEYS)})"
        )
    hq, hg = _check_feats(archive, "query_feats"), _check_feats(archive, "gallery_feats")
    if hg.shape[0] == 0:
        raise DatasetError(f"{path}: gallery_feats is empty")
    if hq.shape[0] == 0:
        raise DatasetError(f"{path}: query_feats is empty")
    if hq.shape[1] != hg.shape[1]:
        raise DatasetError(f"{path}: query_feats have {hq.shape[1]} dims, gallery_feats {hg.shape[1]}")
    for side, h in (("query", hq), ("gallery", hg)):
        for kind in ("pids", "camids"):
            _check_ints(archive, f"{side}_{kind}", h.shape[0], f"{side}_feats")
    archive.check_budget(list(REID_KEYS))
    q, g = (_finite(archive, k, archive.read(k)) for k in ("query_feats", "gallery_feats"))
    q, g = _float32(archive, ("query_feats", "gallery_feats"), [q, g], joint=True)
    return ReidFeatures(q, g, *(_labels(archive, k) for k in REID_KEYS[2:]))
