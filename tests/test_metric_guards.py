"""Impossible metrics (issue 12, item 2): non-finite features and scores stop evaluation naming
what and where; finite features of any magnitude rank as they should; no value outside its
range is ever written (``metrics.validate.check_metrics``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MINI_MARKET
from torch import nn

from reidbench import cli
from reidbench.data.loader import ImageDataset
from reidbench.data.transforms import Transform
from reidbench.datasets.base import ImageRecord
from reidbench.errors import ReidbenchError
from reidbench.evaluation.reid import extract_features
from reidbench.evaluation.templates import template_features
from reidbench.evaluation.verification import pair_scores
from reidbench.metrics.finite import safe_joint, safe_rows
from reidbench.metrics.rank import evaluate_ranking, evaluate_ranking_features
from reidbench.metrics.validate import check_metrics
from reidbench.metrics.verification import roc, verification_metrics
from reidbench.retrieval import build_index


def reid_case(seed: int = 0, nq: int = 20, ng: int = 60, d: int = 8):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    q, g = rng.standard_normal((nq, d)), rng.standard_normal((ng, d))
    return q, g, rng.integers(0, 5, nq), rng.integers(0, 5, ng), np.zeros(nq, int), np.ones(ng, int)


def brute_force_map(q: np.ndarray, g: np.ndarray, qp: np.ndarray, gp: np.ndarray, metric: str) -> float:
    """mAP in float64 from unit vectors (cosine) or exact distances; no same-camera removal
    needed (queries are all camera 0, gallery camera 1)."""
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        scores = (q / np.abs(q).max(1, keepdims=True)) @ (g / np.abs(g).max(1, keepdims=True)).T
        scores /= np.outer(np.linalg.norm(q / np.abs(q).max(1, keepdims=True), axis=1),
                           np.linalg.norm(g / np.abs(g).max(1, keepdims=True), axis=1))
    else:
        scale = max(np.abs(q).max(), np.abs(g).max())
        scores = -np.linalg.norm(q[:, None] / scale - g[None] / scale, axis=2)
    aps = []
    for i in range(len(q)):
        hits = gp[np.argsort(-scores[i], kind="stable")] == qp[i]
        if hits.any():
            pos = np.flatnonzero(hits)
            aps.append(np.mean((np.arange(len(pos)) + 1) / (pos + 1)))
    return float(np.mean(aps))


# --- the validator -----------------------------------------------------------------------------

def test_check_metrics_accepts_real_records() -> None:
    q, g, qp, gp, qc, gc = reid_case()
    reid = {"task": "reid", "metric": "cosine", "params": 123, "epochs": 2, "eval_seconds": 0.5,
            "rerank": {"k1": 20, "k2": 6, "lambda": 0.3},
            **evaluate_ranking_features(q, g, qp, gp, qc, gc, metric="cosine").as_dict()}
    check_metrics(reid)
    rng = np.random.default_rng(0)
    labels = np.tile([1, 0], 50)
    check_metrics(verification_metrics(rng.uniform(-1, 1, 100), labels, np.arange(100) % 10))


@pytest.mark.parametrize("bad,needle", [
    ({"mAP": 2.34}, "mAP = 2.34 is impossible"),  # the all-NaN run
    ({"mINP": 3.68}, "mINP = 3.68 is impossible"),
    ({"mAP": -0.1}, "mAP = -0.1 is impossible"),
    ({"rank1": float("nan")}, "rank1 is nan"),
    ({"cmc": [0.2, 0.5, 1.5]}, "cmc[2] = 1.5 is impossible"),
    ({"cmc": [0.2, 0.5, 0.4]}, "cmc decreases at rank 3"),
    ({"tar_at_far": {"0.01": 1.2}}, "tar_at_far.0.01 = 1.2 is impossible"),
    ({"tar_at_far_nearest": {"0.1": float("inf")}}, "tar_at_far_nearest.0.1 is inf"),
    ({"num_valid_queries": -3}, "num_valid_queries = -3 is impossible"),
    ({"num_pairs": 2.5}, "num_pairs = 2.5 is impossible"),
    ({"eval_seconds": -1.0}, "eval_seconds = -1.0 is impossible"),
    ({"some_new_number": float("nan")}, "some_new_number is nan"),
    ({"auc": "abc"}, None),  # strings are labels, allowed
])
def test_check_metrics_names_the_impossible_entry(bad: dict, needle: str | None) -> None:
    if needle is None:
        check_metrics(bad)
        return
    with pytest.raises(ReidbenchError, match=None) as exc:
        check_metrics({"task": "reid", **bad}, "metrics of run R")
    assert needle in str(exc.value) and str(exc.value).startswith("metrics of run R: ")


# --- non-finite features and scores -----------------------------------------------------------

def test_all_nan_features_are_refused_not_ranked() -> None:
    # the diverged run: all-NaN features gave mAP 2.34, mINP 3.68, rank-1 1.0
    q, g, qp, gp, qc, gc = reid_case()
    with pytest.raises(ReidbenchError, match=r"gallery features: 60 of 60 rows are NaN/inf \(first row 0\)"):
        evaluate_ranking_features(q, np.full_like(g, np.nan), qp, gp, qc, gc, metric="cosine")
    g[[3, 9, 10, 40, 41]] = np.nan  # five gallery rows (a NaN keypoint) silently changed mAP
    with pytest.raises(ReidbenchError, match=r"5 of 60 rows are NaN/inf \(first row 3\)"):
        evaluate_ranking_features(q, g, qp, gp, qc, gc, metric="euclidean")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_rank_core_refuses_non_finite_scores(value: float) -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((6, 30))
    scores[4, 17] = value
    gp = rng.integers(0, 3, 30)
    gp[2] = -1  # junk column dropped before scoring: the message still names gallery indices
    with pytest.raises(ReidbenchError, match=r"first: query 4, gallery 17"):
        evaluate_ranking(scores, rng.integers(0, 3, 6), gp, None, None, higher_is_better=True)
    with pytest.raises(ReidbenchError, match="NaN/inf"):
        evaluate_ranking(np.full((6, 30), value), rng.integers(0, 3, 6), gp, None, None,
                         higher_is_better=False)


def test_verification_refuses_non_finite_scores() -> None:
    with pytest.raises(ReidbenchError,
                       match=r"verification scores: 1 of 4 values are NaN/inf \(first value 2\)"):
        roc(np.array([0.1, 0.5, np.nan, 0.3]), np.array([1, 0, 1, 0]))
    with pytest.raises(ReidbenchError, match="pair image features: 1 of 3 rows"):
        pair_scores(np.array([[1.0, 0], [np.inf, 1], [0, 1]]), np.array([[0, 1], [1, 2]]))
    with pytest.raises(ReidbenchError, match="template image features"):
        template_features(np.array([[1.0, np.nan]]), np.array([1]), np.array([1]))


class BrightIsNan(nn.Module):
    """Embedding = the image mean, NaN for bright images (a diverged model on some inputs)."""

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        mean = images.mean(dim=(1, 2, 3))
        out = torch.stack([mean, 1 - mean], 1)
        return torch.where((mean > 0.5)[:, None], torch.full_like(out, float("nan")), out)


def test_extract_features_names_the_image(tmp_path: Path) -> None:
    from PIL import Image

    records = []
    for i, level in enumerate([10, 20, 250, 30, 240]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((8, 4, 3), level, np.uint8)).save(path)
        records.append(ImageRecord(str(path), i, 0))
    ds = ImageDataset(records, Transform(8, 4, (0.0,) * 3, (1.0,) * 3))
    with pytest.raises(ReidbenchError) as exc:
        extract_features(BrightIsNan(), ds, 2, torch.device("cpu"), "gallery features")
    assert str(exc.value).startswith(
        f"gallery features: 2 of 5 rows are NaN/inf (first row 2, image {tmp_path / 'img2.png'})")


# --- finite but extreme features rank correctly (root cause: overflow to inf / underflow to 0) ---

@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("factor,dtype", [(1e19, np.float32), (1e-30, np.float32),
                                          (1e300, np.float64), (1e-300, np.float64)])
def test_extreme_magnitudes_give_the_unscaled_metrics(metric: str, factor: float, dtype: type) -> None:
    # float32 1e19 with euclidean gave mAP 1.69 (cdist overflowed to inf); with cosine every norm
    # overflowed and every score became 0 (ties ranked by index)
    q, g, qp, gp, qc, gc = reid_case(3)
    base = evaluate_ranking_features(q, g, qp, gp, qc, gc, metric=metric)
    big = evaluate_ranking_features((q * factor).astype(dtype), (g * factor).astype(dtype), qp, gp,
                                    qc, gc, metric=metric)
    assert big.mAP == pytest.approx(base.mAP, abs=1e-12)
    np.testing.assert_array_equal(big.cmc, base.cmc)
    assert base.mAP == pytest.approx(brute_force_map(q, g, qp, gp, metric), abs=1e-9)


def test_rows_of_different_magnitudes_keep_their_directions() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6))
    x[1] *= 1e300
    x[2] *= 1e-300
    got = safe_rows(x, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(got[[0, 3]], x[[0, 3]])  # rows in range: untouched, bit for bit
    peak = np.abs(x).max(1, keepdims=True)
    unit = x / peak / np.linalg.norm(x / peak, axis=1, keepdims=True)
    np.testing.assert_allclose(got / np.linalg.norm(got, axis=1, keepdims=True), unit, rtol=1e-12)
    a, b = safe_joint(x[[0]] * 1e200, x[[3]] * 1e190, dtype=torch.float64)
    ratios = np.r_[a.numpy()[0] / (x[0] * 1e200), b.numpy()[0] / (x[3] * 1e190)]
    exponent = np.log2(ratios[0])  # one common factor, a power of two
    assert np.all(ratios == ratios[0]) and exponent == round(exponent) and np.abs(a.numpy()).max() < 1


def test_pair_and_template_scores_ignore_magnitude() -> None:
    rng = np.random.default_rng(5)
    f = rng.standard_normal((6, 5))
    pairs = np.array([[0, 1], [2, 3], [4, 5], [0, 5]])
    ref = pair_scores(f, pairs)
    np.testing.assert_allclose(pair_scores(f * 1e300, pairs), ref, atol=1e-7)
    np.testing.assert_allclose(pair_scores((f * 1e19).astype(np.float32), pairs), ref, atol=1e-6)
    tids, media = np.array([1, 1, 2, 2, 3, 3]), np.array([0, 1, 0, 0, 5, 6])
    _, ref_t = template_features(f, tids, media)
    _, big_t = template_features(f * 1e300, tids, media)
    np.testing.assert_allclose(big_t, ref_t, atol=1e-7)
    assert np.allclose(np.linalg.norm(big_t, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_faiss_index_ranks_extreme_features(metric: str) -> None:
    q, g, *_ = reid_case(6, ng=80)
    _, ref = build_index(g.astype(np.float32), metric).search(q.astype(np.float32), 10)
    _, got = build_index((g * 1e19).astype(np.float32), metric).search((q * 1e19).astype(np.float32), 10)
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ReidbenchError, match="query features|NaN/inf"):
        build_index(g, metric).search(np.full_like(q, np.nan), 3)


def test_evaluate_cli_on_extreme_features_reports_the_true_metrics(tmp_path: Path) -> None:
    # the issue: float64 features of 1e300 reported mAP 5.88 (cast to float32: inf)
    q, g, qp, gp, qc, gc = reid_case(7)
    out = {}
    for name, factor in (("plain", 1.0), ("huge", 1e300)):
        np.savez(tmp_path / f"{name}.npz", query_feats=q * factor, gallery_feats=g * factor,
                 query_pids=qp, gallery_pids=gp, query_camids=qc, gallery_camids=gc)
        for metric in ("cosine", "euclidean"):
            js = tmp_path / f"{name}-{metric}.json"
            assert cli.main(["-q", "evaluate", "--features", str(tmp_path / f"{name}.npz"),
                             "--metric", metric, "--json", str(js)]) == 0
            out[name, metric] = json.loads(js.read_text())
    for metric in ("cosine", "euclidean"):
        assert out["huge", metric]["mAP"] == pytest.approx(out["plain", metric]["mAP"], abs=1e-12)
        assert out["plain", metric]["mAP"] == pytest.approx(brute_force_map(q, g, qp, gp, metric), abs=1e-6)


# --- a run never records impossible metrics ----------------------------------------------------

TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--set", "model.size=nano", "--set", "model.depth=2", "--set", "data.height=64",
        "--set", "data.width=32", "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0"]


@pytest.mark.usefixtures("shared_data")
def test_run_refuses_to_record_impossible_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reidbench.engine import run as run_module

    real = run_module.evaluate_state

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        metrics, seconds = real(*args, **kwargs)
        return {**metrics, "mAP": 2.34}, seconds  # what all-NaN features used to give

    monkeypatch.setattr(run_module, "evaluate_state", broken)
    out = tmp_path / "runs"
    code = cli.main(["-q", "run", *TINY, "--epochs", "1", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "mAP = 2.34 is impossible" in err and len(err.strip().splitlines()) == 1
    assert not list(out.rglob("metrics.json"))
