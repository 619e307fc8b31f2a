"""`reidbench evaluate`: both schemas, JSON output, and one-line errors for malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.metrics.rank import evaluate_ranking
from reidbench.metrics.verification import verification_metrics


def reid_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "query_feats": rng.standard_normal((20, 16)).astype(np.float32),
        "gallery_feats": rng.standard_normal((120, 16)).astype(np.float32),
        "query_pids": rng.integers(1, 8, 20), "gallery_pids": rng.integers(0, 8, 120),
        "query_camids": rng.integers(0, 6, 20), "gallery_camids": rng.integers(0, 6, 120),
    }


def test_reid_file_matches_the_metric_functions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = reid_arrays()
    np.savez(tmp_path / "f.npz", **arrays)
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "f.npz"), "--json", str(out),
                     "--max-rank", "10"]) == 0
    got = json.loads(out.read_text())
    q = arrays["query_feats"] / np.linalg.norm(arrays["query_feats"], axis=1, keepdims=True)
    g = arrays["gallery_feats"] / np.linalg.norm(arrays["gallery_feats"], axis=1, keepdims=True)
    ref = evaluate_ranking(q @ g.T, arrays["query_pids"], arrays["gallery_pids"],
                           arrays["query_camids"], arrays["gallery_camids"],
                           higher_is_better=True, max_rank=10)
    assert got["mAP"] == pytest.approx(ref.mAP, abs=1e-6) and len(got["cmc"]) == 10
    assert got["num_valid_queries"] == ref.num_valid_queries
    assert "mAP" in capsys.readouterr().out


def test_verification_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([1, 0], 300)
    f1 = rng.standard_normal((600, 8)).astype(np.float32)
    f2 = (f1 * labels[:, None] + rng.standard_normal((600, 8)) * 0.8).astype(np.float32)
    np.savez(tmp_path / "v.npz", feats1=f1, feats2=f2, labels=labels)
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "v.npz"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    cos = (f1 * f2).sum(1) / np.linalg.norm(f1, axis=1) / np.linalg.norm(f2, axis=1)
    folds = np.repeat(np.arange(10), 60)
    ref = verification_metrics(cos, labels, folds)
    assert got["accuracy"] == pytest.approx(ref["accuracy"]) and got["auc"] == pytest.approx(ref["auc"])
    assert set(got["tar_at_far"]) == {"1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1"}


@pytest.mark.parametrize("mutate,needle", [
    (lambda a: a.pop("gallery_camids"), "missing gallery_camids"),
    (lambda a: a.update(query_pids=a["query_pids"][:5]), "query_pids has 5 entries"),
    (lambda a: a["gallery_feats"].__setitem__((3, 2), np.nan), "gallery_feats has NaN"),
    (lambda a: a.update(gallery_feats=np.zeros((0, 16), np.float32), gallery_pids=np.zeros(0, int),
                        gallery_camids=np.zeros(0, int)), "gallery_feats is empty"),
    (lambda a: a.update(query_feats=a["query_feats"][:, :4]), "have 4 dims"),
])
def test_malformed_files_are_one_line_errors(
    mutate, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    arrays = reid_arrays()
    mutate(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    code = cli.main(["-q", "evaluate", "--features", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_missing_and_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_text("not a zip")
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "junk.npz")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_object_arrays_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = reid_arrays()
    arrays["query_pids"] = np.array([object()] * 20)
    np.savez(tmp_path / "obj.npz", **arrays)
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "obj.npz")]) == 2
    assert "query_pids cannot be read as a plain array" in capsys.readouterr().err


def test_topk_mode_says_it_is_truncated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "f.npz", **reid_arrays())
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "f.npz"), "--index", "hnsw",
                     "--topk", "15", "--json", str(out)]) == 0
    assert "truncated at k=15" in capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["truncated_at_k"] == 15 and len(got["cmc"]) == 15 and "mAP" not in got


def test_rerank_flag_matches_torchreid_reranking(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.utils.rerank import re_ranking

    arrays = reid_arrays(3)
    np.savez(tmp_path / "f.npz", **arrays)
    out = tmp_path / "m.json"
    assert cli.main(["-q", "evaluate", "--features", str(tmp_path / "f.npz"), "--rerank", "--k1", "8",
                     "--k2", "3", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    q = arrays["query_feats"] / np.linalg.norm(arrays["query_feats"], axis=1, keepdims=True)
    g = arrays["gallery_feats"] / np.linalg.norm(arrays["gallery_feats"], axis=1, keepdims=True)
    dist = re_ranking(1 - q @ g.T, 1 - q @ q.T, 1 - g @ g.T, k1=8, k2=3, lambda_value=0.3)
    ref = evaluate_ranking(dist, arrays["query_pids"], arrays["gallery_pids"], arrays["query_camids"],
                           arrays["gallery_camids"], higher_is_better=False)
    assert got["rerank"] == {"k1": 8, "k2": 3, "lambda": 0.3}
    assert got["mAP"] == pytest.approx(ref.mAP, abs=1e-6)
    assert got["cmc"] == pytest.approx(list(ref.cmc), abs=1e-6)


def test_rerank_refuses_topk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "f.npz", **reid_arrays())
    assert cli.main(["evaluate", "--features", str(tmp_path / "f.npz"), "--rerank", "--topk", "5"]) == 2
    assert "--rerank" in capsys.readouterr().err
