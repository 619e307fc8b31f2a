"""Issue 15, galleries of a million: `--index-file` saves a built index with a fingerprint
sidecar and reuses it with identical results; a stale, mismatched, tampered or foreign index is
refused in one line (exit 2), never used, overwritten or deleted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.errors import ConfigError
from reidbench.retrieval.index import IndexParams
from reidbench.retrieval.index_file import features_sha256, load_or_build, sidecar


def gallery(seed: int = 0, n: int = 1500, d: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((20, d))
    g = centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d))
    q = centres[rng.integers(0, 20, 40)] + rng.standard_normal((40, d))
    return g.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_round_trip_gives_identical_results(tmp_path: Path, kind: str, metric: str) -> None:
    g, q = gallery()
    path = tmp_path / "g.faiss"
    built, reused = load_or_build(path, g, metric, kind, IndexParams(nprobe=4))
    assert not reused and path.is_file() and sidecar(path).is_file()
    loaded, reused = load_or_build(path, g, metric, kind, IndexParams(nprobe=4))
    assert reused
    a, b = built.search(q, 15), loaded.search(q, 15)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert loaded.info() == built.info() and loaded.scale == built.scale


def test_search_settings_are_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    g, q = gallery()
    path = tmp_path / "g.faiss"
    load_or_build(path, g, "cosine", "ivf", IndexParams(nlist=30, nprobe=30))
    narrow, reused = load_or_build(path, g, "cosine", "ivf", IndexParams(nlist=30, nprobe=1))
    assert reused and narrow.info()["nprobe"] == 1
    assert faiss_nprobe(narrow) == 1  # the setting reached the loaded index


def faiss_nprobe(index) -> int:  # type: ignore[no-untyped-def]
    import faiss

    return int(faiss.extract_index_ivf(index.index).nprobe)


@pytest.mark.parametrize("change,needle", [
    (lambda g: (g.__setitem__((3, 4), g[3, 4] + 1e-3), g)[1], "gallery features of sha256"),
    (lambda g: g[:-1], "a gallery of size 1500"),
    (lambda g: g[:, :-1], "features of dimension 12"),
])
def test_a_changed_gallery_is_refused(tmp_path: Path, change, needle: str) -> None:  # type: ignore[no-untyped-def]
    g, _ = gallery()
    path = tmp_path / "g.faiss"
    load_or_build(path, g, "cosine", "ivf", IndexParams())
    before = path.read_bytes(), sidecar(path).read_bytes()
    with pytest.raises(ConfigError, match=needle):
        load_or_build(path, change(g.copy()), "cosine", "ivf", IndexParams())
    assert (path.read_bytes(), sidecar(path).read_bytes()) == before  # nothing rewritten


@pytest.mark.parametrize("metric,kind,params,needle", [
    ("cosine", "hnsw", IndexParams(), "index kind ivf, this call has hnsw"),
    ("euclidean", "ivf", IndexParams(), "metric cosine, this call has euclidean"),
    ("cosine", "ivf", IndexParams(nlist=10), "built with nlist=38, this call asks for nlist=10"),
    ("cosine", "ivf", IndexParams(seed=1), "built with seed=0, this call asks for seed=1"),
])
def test_other_index_settings_are_refused(tmp_path: Path, metric: str, kind: str,
                                          params: IndexParams, needle: str) -> None:
    g, _ = gallery()
    path = tmp_path / "g.faiss"
    load_or_build(path, g, "cosine", "ivf", IndexParams())
    with pytest.raises(ConfigError, match=needle):
        load_or_build(path, g, metric, kind, params)


def test_tampered_missing_and_foreign_files_are_refused(tmp_path: Path) -> None:
    g, _ = gallery()
    path = tmp_path / "g.faiss"
    load_or_build(path, g, "cosine", "flat", IndexParams())
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="do not match the sha256"):
        load_or_build(path, g, "cosine", "flat", IndexParams())
    path.unlink()
    with pytest.raises(ConfigError, match="is missing, but its fingerprint"):
        load_or_build(path, g, "cosine", "flat", IndexParams())
    foreign = tmp_path / "mine.faiss"
    foreign.write_bytes(b"not reidbench's")
    with pytest.raises(ConfigError, match="has no fingerprint mine.faiss.json"):
        load_or_build(foreign, g, "cosine", "flat", IndexParams())
    assert foreign.read_bytes() == b"not reidbench's"  # never overwritten
    sidecar(foreign).write_text("{")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_or_build(foreign, g, "cosine", "flat", IndexParams())
    with pytest.raises(ConfigError, match="is a directory"):
        load_or_build(tmp_path, g, "cosine", "flat", IndexParams())


def test_a_sidecar_that_lies_about_the_index_is_caught_before_use(tmp_path: Path) -> None:
    # an HNSW index put in place of the IVF one, with a sidecar edited to match its bytes
    import hashlib

    g, _ = gallery()
    ivf, hnsw = tmp_path / "ivf.faiss", tmp_path / "hnsw.faiss"
    load_or_build(ivf, g, "cosine", "ivf", IndexParams())
    load_or_build(hnsw, g, "cosine", "hnsw", IndexParams())
    record = json.loads(sidecar(ivf).read_text())
    record["index_sha256"] = hashlib.sha256(hnsw.read_bytes()).hexdigest()
    ivf.write_bytes(hnsw.read_bytes())
    sidecar(ivf).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="holds a IndexHNSWFlat"):
        load_or_build(ivf, g, "cosine", "ivf", IndexParams())


def test_features_hash_covers_dtype_shape_and_bytes() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert features_sha256(x) == features_sha256(x.copy())
    assert features_sha256(x) != features_sha256(x.reshape(4, 3))
    assert features_sha256(x) != features_sha256(x.astype(np.float64))
    assert features_sha256(np.asfortranarray(x)) == features_sha256(x)  # values, not layout


def reid_file(tmp_path: Path, seed: int = 0) -> Path:
    g, q = gallery(seed)
    rng = np.random.default_rng(seed)
    path = tmp_path / f"f{seed}.npz"
    np.savez(path, query_feats=q, gallery_feats=g, query_pids=rng.integers(0, 20, len(q)),
             gallery_pids=rng.integers(-1, 20, len(g)), query_camids=rng.integers(0, 6, len(q)),
             gallery_camids=rng.integers(0, 6, len(g)))
    return path


def test_cli_reuses_then_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "ivf.faiss"
    base = ["-q", "evaluate", "--features", str(reid_file(tmp_path)), "--index", "ivf",
            "--topk", "10", "--index-file", str(index), "--recall-sample", "15"]
    assert cli.main([*base, "--json", str(tmp_path / "a.json")]) == 0
    assert cli.main([*base, "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert (a["index_reused"], b["index_reused"]) == (False, True)
    assert b["index_build_seconds"] == 0
    for record in (a, b):
        del record["index_reused"], record["index_build_seconds"]
    assert a == b and a["recall_at_k"]["sampled_queries"] == 15
    assert "reused from" in capsys.readouterr().out
    other = ["-q", "evaluate", "--features", str(reid_file(tmp_path, seed=1)), "--index", "ivf",
             "--topk", "10", "--index-file", str(index)]
    assert cli.main(other) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reidbench: error: --index-file" in err and "it was built for" in err


def test_flat_topk_record_is_unchanged(tmp_path: Path) -> None:
    # the exact top-k record keeps exactly the keys it had before indexes were persisted
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(reid_file(tmp_path)), "--topk", "10",
                     "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())) == {
        "task", "metric", "index", "truncated_at_k", "mAP_at_k", "cmc", "rank1", "rank5", "rank10",
        "num_valid_queries", "num_skipped_queries", "queries_with_all_positives_in_top_k"}


@pytest.mark.parametrize("extra,needle", [
    (["--index-file", "x.faiss"], "--index-file goes with a FAISS top-k search"),
    (["--recall-sample", "5", "--rerank"], "--recall-sample goes with a FAISS top-k search"),
    (["--topk", "5", "--nprobe", "3"], "--nprobe goes with --index ivf"),
])
def test_misplaced_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             extra: list[str], needle: str) -> None:
    assert cli.main(["-q", "evaluate", "--features", str(reid_file(tmp_path)), *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not Path("x.faiss").exists()
