"""`evaluate --features` on hostile or careless files (issue 12, item 8): one line and exit 2,
no traceback, memory bounded by what the file really holds; nothing is unpickled."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pytest

from reidbench import cli
from reidbench.errors import DatasetError
from reidbench.evaluation import features_file
from reidbench.evaluation.features_file import load_features


def reid_arrays(n: int = 12, d: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"query_feats": rng.standard_normal((n, d)).astype(np.float32),
            "gallery_feats": rng.standard_normal((n, d)).astype(np.float32),
            "query_pids": np.arange(n), "gallery_pids": np.arange(n),
            "query_camids": np.zeros(n, np.int64), "gallery_camids": np.ones(n, np.int64)}


def npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    """A version 1.0 .npy header (magic included) declaring ``shape`` and ``dtype``."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def saved_npy(path: Path) -> Path:
    np.save(path, np.zeros((3, 4)))
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray], raw: dict[str, bytes] | None = None,
              compress: bool = False) -> None:
    """An npz with ``arrays`` saved normally and ``raw`` members written byte for byte."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(f"{key}.npy", buf.getvalue())
        for key, data in (raw or {}).items():
            zf.writestr(f"{key}.npy", data)


def one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["-q", "evaluate", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("make,needle", [
    (lambda p: Path("/dev/null"), "/dev/null is not a regular file"),
    (lambda p: p, "is a directory"),
    (lambda p: written(p / "empty.npz", b""), "is empty"),
    (lambda p: saved_npy(p / "one.npy"), "is a single .npy array, not an .npz archive"),
    (lambda p: written(p / "text.npz", b"hello"), "not a readable .npz file"),
])
def test_not_an_npz(make, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert needle in one_line_error(["--features", str(make(tmp_path))], capsys)


def test_header_declaring_a_huge_array_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = reid_arrays()
    del arrays["gallery_feats"]
    # declares 10^12 x 512 float32 (2 PB) but holds 16 bytes
    write_npz(tmp_path / "forged.npz", arrays,
              {"gallery_feats": npy_header((10**12, 512)) + b"\0" * 16})
    err = one_line_error(["--features", str(tmp_path / "forged.npz")], capsys)
    assert "gallery_feats declares float32 data of shape (1000000000000, 512)" in err
    assert "its member holds 16 bytes" in err


def test_forged_label_headers_are_refused(tmp_path: Path) -> None:
    arrays = reid_arrays()
    del arrays["query_pids"]
    write_npz(tmp_path / "f.npz", arrays, {"query_pids": npy_header((10**9,), "<i8")})
    with pytest.raises(DatasetError, match=r"query_pids declares int64 data of shape \(1000000000,\)"):
        load_features(tmp_path / "f.npz")
    write_npz(tmp_path / "g.npz", arrays, {"query_pids": npy_header((13,), "<i8") + bytes(13 * 8)})
    with pytest.raises(DatasetError, match="query_pids has 13 entries but query_feats has 12 rows"):
        load_features(tmp_path / "g.npz")


def test_zip_bomb_is_refused_in_bounded_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 96 MiB of zero gallery "features" (and zero labels) deflate to about 100 KB; the issue's
    # 1.5 MB bomb reached 2.5 GB before it was refused
    n, d = 96 * 1024 * 1024 // (4 * 64), 64
    arrays = {k: v for k, v in reid_arrays(12, d).items() if not k.startswith("gallery")}
    arrays |= {"gallery_pids": np.zeros(n, np.int64), "gallery_camids": np.zeros(n, np.int64)}
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value)
            zf.writestr(f"{key}.npy", buf.getvalue())
        with zf.open("gallery_feats.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header((n, d)))
            zeros = bytes(1 << 20)
            for _ in range(n * d * 4 >> 20):
                fh.write(zeros)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="refusing what looks like a zip bomb"):
            load_features(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nothing was decompressed, not even the honest label arrays
    assert "zip bomb" in one_line_error(["--features", str(path)], capsys)


def test_arrays_larger_than_memory_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.savez(tmp_path / "f.npz", **reid_arrays())
    monkeypatch.setattr(features_file, "_physical_memory", lambda: 1024)
    with pytest.raises(DatasetError, match="more than this machine's"):
        load_features(tmp_path / "f.npz")


@pytest.mark.parametrize("raw,needle", [
    (b"not a npy file at all", "query_feats is not a plain .npy array"),
    (npy_format.magic(3, 0) + b"\0" * 100, "query_feats is not a plain .npy array"),
    (npy_header((12, 4), "|O"), "query_feats cannot be read as a plain array"),
])
def test_malformed_members(raw: bytes, needle: str, tmp_path: Path) -> None:
    arrays = reid_arrays()
    del arrays["query_feats"]
    write_npz(tmp_path / "f.npz", arrays, {"query_feats": raw})
    with pytest.raises(DatasetError, match=needle):
        load_features(tmp_path / "f.npz")


def test_pickled_object_members_are_never_loaded(tmp_path: Path) -> None:
    arrays = reid_arrays()
    arrays["gallery_pids"] = np.array([object()] * 12)
    np.savez(tmp_path / "f.npz", **arrays)  # a pickle inside the member
    with pytest.raises(DatasetError, match="gallery_pids cannot be read as a plain array"):
        load_features(tmp_path / "f.npz")


def test_compressed_and_float64_files_load(tmp_path: Path) -> None:
    arrays = reid_arrays()
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    got = load_features(tmp_path / "c.npz")
    np.testing.assert_array_equal(got.query, arrays["query_feats"])
    for key in ("query_feats", "gallery_feats"):
        arrays[key] = arrays[key].astype(np.float64) * 1e300
    np.savez(tmp_path / "big.npz", **arrays)
    got = load_features(tmp_path / "big.npz")
    assert got.gallery.dtype == np.float32 and np.isfinite(got.gallery).all()
    ratios = np.r_[got.query.ravel() / arrays["query_feats"].ravel(),
                   got.gallery.ravel() / arrays["gallery_feats"].ravel()]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)  # one common factor for both


def test_a_row_lost_to_float32_is_an_error(tmp_path: Path) -> None:
    arrays = reid_arrays()
    arrays["query_feats"] = arrays["query_feats"].astype(np.float64) * 1e300
    arrays["query_feats"][5] *= 1e-300  # 1e-300 of the others: zero in float32 beside them
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(DatasetError, match="query_feats row 5 is non-zero but vanishes in float32"):
        load_features(tmp_path / "f.npz")
