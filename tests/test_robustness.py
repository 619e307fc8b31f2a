"""Robustness sweeps (re-ID and verification) and the report: CSV schema, scores, markdown, plot."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reidbench.config import DataConfig
from reidbench.data.perturb import build_perturbation
from reidbench.data.transforms import Transform
from reidbench.datasets.catalog import build_dataset
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.reid import Features
from reidbench.evaluation.robustness import Cell, Extractor, SweepSpec, sweep
from reidbench.evaluation.tasks import PairTask, ReidTask, task_for
from reidbench.reporting import robustness as R

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Probe(nn.Module):
    """A fixed feature map: 4x2 average-pooled pixels, plus the keypoints when ``use_keypoints``."""

    def __init__(self, use_keypoints: bool) -> None:
        super().__init__()
        self.use_keypoints = use_keypoints
        self.seen_keypoints: list[torch.Tensor | None] = []

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        self.seen_keypoints.append(keypoints)
        feats = nn.functional.adaptive_avg_pool2d(images, (4, 2)).flatten(1)
        if self.use_keypoints and keypoints is not None:
            feats = torch.cat([feats, 10.0 * keypoints.flatten(1)], 1)
        return feats


class Counting(Extractor):
    """An Extractor that counts how many images it extracts."""

    calls: list[int]

    def __call__(self, dataset, flip_perm):  # type: ignore[override]
        self.calls.append(len(dataset))
        return super().__call__(dataset, flip_perm)


def extractor(use_keypoints: bool, hw: tuple[int, int]) -> Counting:
    ex = Counting(Probe(use_keypoints), Transform(*hw, MEAN, STD), torch.device("cpu"), batch_size=16)
    object.__setattr__(ex, "calls", [])
    return ex


@pytest.fixture(scope="module")
def reid_data(tmp_path_factory: pytest.TempPathFactory) -> ReidTask:
    root = tmp_path_factory.mktemp("rob-reid")
    cfg = DataConfig(name="synthetic-reid", root=str(root), synth_ids=16)
    task = task_for(build_dataset(cfg))
    assert isinstance(task, ReidTask)
    return task


@pytest.fixture(scope="module")
def face_data(tmp_path_factory: pytest.TempPathFactory) -> PairTask:
    root = tmp_path_factory.mktemp("rob-faces")
    task = task_for(build_dataset(
        DataConfig(name="synthetic-faces", root=str(root), synth_ids=24, synth_train_ids=8)))
    assert isinstance(task, PairTask)
    return task


SPEC = SweepSpec(("rotate", "kpnoise"), (0, 2, 5), "query", seed=0)


def by_key(cells: list[Cell]) -> dict[tuple[str, int], Cell]:
    return {(c.perturbation, c.severity): c for c in cells}


def test_reid_sweep_reextracts_only_the_perturbed_queries(reid_data: ReidTask) -> None:
    ex = extractor(True, (64, 32))
    clean, cells = sweep(ex, reid_data, SPEC)
    nq, ng = len(reid_data.split.query), len(reid_data.split.gallery)  # type: ignore[union-attr]
    # gallery once, clean queries once, then the queries of each (perturbation, severity > 0)
    assert ex.calls == [ng, nq] + [nq] * 4
    assert [(c.perturbation, c.severity) for c in cells] == [
        ("rotate", 0), ("rotate", 2), ("rotate", 5), ("kpnoise", 0), ("kpnoise", 2), ("kpnoise", 5)]
    cells_ = by_key(cells)
    assert cells_[("rotate", 0)].values == clean.values
    assert set(clean.values) == {"mAP", "rank1"} and clean.num_samples > 0
    assert clean.per_sample is not None and clean.per_sample.mean() == pytest.approx(clean.values["mAP"])
    assert cells_[("rotate", 5)].values != clean.values
    assert cells_[("kpnoise", 5)].values != clean.values  # this model reads the keypoints
    assert all(0.0 <= v <= 1.0 for c in cells for v in c.values.values() if v is not None)
    # every batch carried keypoints (KP-RPE receives the moved ones)
    assert all(k is not None and k.shape[1:] == (10, 2) for k in ex.model.seen_keypoints)  # type: ignore[union-attr]


def test_severity_zero_matches_an_independent_clean_extraction(reid_data: ReidTask) -> None:
    from reidbench.data.loader import ImageDataset
    from reidbench.evaluation.reid import evaluate_reid, extract_features

    split = reid_data.split
    tf = Transform(64, 32, MEAN, STD)
    model = Probe(True)
    q = extract_features(model, ImageDataset(split.query, tf, 10), 16, torch.device("cpu"))  # type: ignore[union-attr]
    g = extract_features(model, ImageDataset(split.gallery, tf, 10), 16, torch.device("cpu"))  # type: ignore[union-attr]
    expected = evaluate_reid(q, g)
    clean, _ = sweep(extractor(True, (64, 32)), reid_data, SweepSpec(("scale",), (0,)))
    assert clean.values == {"mAP": expected.mAP, "rank1": float(expected.cmc[0])}


def test_keypoint_noise_leaves_a_keypoint_blind_model_unchanged(reid_data: ReidTask) -> None:
    _, cells = sweep(extractor(False, (64, 32)), reid_data, SPEC)
    c = by_key(cells)
    assert c[("kpnoise", 5)].values == c[("kpnoise", 0)].values
    assert c[("rotate", 5)].values != c[("rotate", 0)].values


def test_sweep_is_deterministic_and_seeded(reid_data: ReidTask) -> None:
    a = sweep(extractor(True, (64, 32)), reid_data, SPEC)[1]
    b = sweep(extractor(True, (64, 32)), reid_data, SPEC)[1]
    other = sweep(extractor(True, (64, 32)), reid_data, SweepSpec(SPEC.perturbations, SPEC.severities,
                                                                  seed=1))[1]
    assert [c.values for c in a] == [c.values for c in b]
    assert [c.values for c in a] != [c.values for c in other]


def test_side_both_perturbs_the_gallery_too(reid_data: ReidTask) -> None:
    ex = extractor(True, (64, 32))
    _, both = sweep(ex, reid_data, SweepSpec(("translate",), (0, 4), "both"))
    nq, ng = len(reid_data.split.query), len(reid_data.split.gallery)  # type: ignore[union-attr]
    assert ex.calls == [ng, nq, nq, ng]
    _, query = sweep(extractor(True, (64, 32)), reid_data, SweepSpec(("translate",), (0, 4), "query"))
    assert both[1].values != query[1].values
    with pytest.raises(ConfigError, match="unknown side 'gallery'"):
        SweepSpec(("scale",), (0,), "gallery")


def test_verification_sweep_perturbs_the_second_image_of_each_pair(face_data: PairTask) -> None:
    vs = face_data.pairs
    ex = extractor(True, (48, 48))
    clean, cells = sweep(ex, face_data, SweepSpec(("scale", "kpnoise"), (0, 5)))
    paired, second = len(np.unique(vs.pairs)), len(np.unique(vs.pairs[:, 1]))
    assert ex.calls == [paired, second, second]
    assert set(clean.values) == {"accuracy", "auc", "tar_at_far_1e-2"}
    assert clean.num_samples == len(vs.pairs)
    # equal folds: the mean per-pair correctness is the k-fold accuracy
    assert clean.per_sample is not None and len(clean.per_sample) == len(vs.pairs)
    assert clean.per_sample.mean() == pytest.approx(clean.values["accuracy"])
    c = by_key(cells)
    assert c[("scale", 0)].values == clean.values
    assert c[("scale", 5)].values != clean.values
    ex_both = extractor(True, (48, 48))
    _, both = sweep(ex_both, face_data, SweepSpec(("scale",), (0, 5), "both"))
    assert ex_both.calls == [paired, paired]
    assert both[1].values != c[("scale", 5)].values


@pytest.mark.parametrize("side", ["query", "both"])
def test_verification_pairs_compare_the_right_images(
    face_data: PairTask, side: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """side=query: pair (i, j) compares clean image i with perturbed image j; both: perturbed i
    with perturbed j. Features here are (record index, perturbed?)."""
    import reidbench.evaluation.tasks.pairs as rob

    class Tagged(Extractor):
        def __call__(self, dataset, flip_perm):  # type: ignore[override]
            idx = dataset.indices
            tag = float(dataset.perturbation is not None and dataset.severity > 0)
            feats = np.stack([idx.astype(np.float32), np.full(len(idx), tag, np.float32)], 1)
            return Features(feats, np.zeros(len(idx), np.int64), np.zeros(len(idx), np.int64))

    seen = []

    def capture(features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        seen.append((features, pairs))
        return np.zeros(len(pairs))

    monkeypatch.setattr(rob, "pair_scores", capture)
    ex = Tagged(Probe(False), Transform(48, 48, MEAN, STD), torch.device("cpu"))
    sweep(ex, face_data, SweepSpec(("rotate",), (0, 3), side))
    vs = face_data.pairs
    (clean_feats, clean_pairs), (feats, pairs) = seen
    np.testing.assert_array_equal(clean_feats[clean_pairs][..., 1], 0.0)
    first, second = feats[pairs[:, 0]], feats[pairs[:, 1]]
    np.testing.assert_array_equal(first[:, 0], vs.pairs[:, 0])
    np.testing.assert_array_equal(second[:, 0], vs.pairs[:, 1])
    np.testing.assert_array_equal(second[:, 1], 1.0)
    np.testing.assert_array_equal(first[:, 1], 1.0 if side == "both" else 0.0)


# ------------------------------------------------------------------------------ report


def fake_rows() -> list[dict]:
    """Two models, two perturbations, severities 0..2: values chosen so the scores are known."""
    rows = []
    values = {  # (model, perturbation) -> mAP at severities 0, 1, 2
        ("ape", "scale"): (0.8, 0.6, 0.4), ("ape", "kpnoise"): (0.8, 0.8, 0.8),
        ("kprpe", "scale"): (0.5, 0.45, 0.4), ("kprpe", "kpnoise"): (0.5, 0.45, 0.25),
    }
    for (model, pert), vals in values.items():
        clean = Cell("clean", 0, {"mAP": vals[0], "rank1": 0.9}, {"mAP": 0.01, "rank1": 0.02}, 100)
        cells = [Cell(pert, s, {"mAP": v, "rank1": 0.9 - 0.1 * s}, {"mAP": 0.01, "rank1": 0.02}, 100)
                 for s, v in enumerate(vals)]
        rows += R.cell_rows(clean, cells, dataset="synthetic-reid", task="reid", model=model,
                            run_id=f"run-{model}", side="query", seed=0,
                            describe=lambda p, s: build_perturbation(p).describe(s))
    return rows


def test_csv_schema_and_round_trip(tmp_path: Path) -> None:
    rows = fake_rows()
    assert len(rows) == 2 * 2 * 3 * 2  # models x perturbations x severities x metrics
    path = tmp_path / "r.csv"
    path.write_text(R.to_csv(rows))
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["dataset", "task", "model", "run_id", "side", "seed", "perturbation", "severity",
                      "parameters", "metric", "value", "stderr", "clean", "ratio", "num_samples"]
    back = R.read_csv(path)
    assert len(back) == len(rows)
    row = next(r for r in back if r["model"] == "ape" and r["perturbation"] == "scale"
               and r["severity"] == 2 and r["metric"] == "mAP")
    assert row["value"] == pytest.approx(0.4) and row["clean"] == pytest.approx(0.8)
    assert row["ratio"] == pytest.approx(0.5) and row["parameters"] == "x0.84 or x1.16"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ReidbenchError, match="is not a robustness CSV"):
        R.read_csv(bad)


def test_robustness_score_is_the_mean_ratio() -> None:
    scores = R.robustness_scores(fake_rows(), "mAP")
    assert scores["APE"]["scale"] == pytest.approx((0.6 / 0.8 + 0.4 / 0.8) / 2)
    assert scores["APE"]["kpnoise"] == pytest.approx(1.0)
    assert scores["KP-RPE"]["scale"] == pytest.approx((0.9 + 0.8) / 2)
    assert scores["KP-RPE"]["kpnoise"] == pytest.approx((0.9 + 0.5) / 2)
    assert scores["KP-RPE"]["mean"] == pytest.approx((0.85 + 0.7) / 2)


def test_markdown_report_answers_the_question() -> None:
    md = R.to_markdown(fake_rows(), {"command": "reidbench bench --dataset synthetic-reid"}, "r.csv",
                       "r.png")
    assert "reidbench bench --dataset synthetic-reid" in md
    assert "| APE | 0.625 | 1.000 | 0.812 |" in md  # scale, kpnoise, mean
    assert "| KP-RPE | 0.850 | 0.700 | 0.775 |" in md
    assert "### Does KP-RPE degrade less than the others?" in md
    # scale: 0.850 - 0.625 = +0.225 in score; mean perturbed mAP 0.425 - 0.5 = -0.075
    assert "| scale | 0.850 | +0.225 (-0.075) | 1 of 1 (APE); 1 beyond noise |" in md
    assert "| kpnoise | 0.700 | -0.300 (-0.450) | 0 of 1; degrades more than APE beyond noise |" in md
    assert "under 1 of 2 perturbations, and beyond the evaluation noise under 1." in md
    assert "![metrics vs severity, one panel per perturbation](r.png)" in md


def test_plot_and_report_files(tmp_path: Path) -> None:
    paths = R.write_report(fake_rows(), tmp_path, "synthetic-reid-query", {"command": "x"})
    for key in ("csv", "markdown", "plot", "meta"):
        assert paths[key].is_file(), key
    with Image.open(paths["plot"]) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 200
    assert not paths["examples"].exists()
    # the markdown and plot are rebuilt from the CSV alone
    paths["markdown"].unlink()
    paths["plot"].unlink()
    R.rebuild_report(paths["csv"])
    assert paths["markdown"].is_file() and paths["plot"].is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_examples_grid_png() -> None:
    img = np.zeros((32, 16, 3), np.uint8)
    kps = np.array([[0.5, 0.5]], np.float32)
    png = R.examples_png({("scale", 0): (img, kps), ("scale", 1): (img, None), ("rotate", 0): (img, kps)})
    with Image.open(io.BytesIO(png)) as out:
        assert out.format == "PNG"


def per_sample_fixture(shift: float) -> R.PerSample:
    """Two models on 200 queries: the reference's perturbed APs are the other's plus ``shift``."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 1.0, 200)
    out: R.PerSample = {}
    for run, extra in (("run-kprpe", shift), ("run-ape", 0.0)):
        out[(run, "clean", 0)] = base
        for s in (1, 2):
            noise = rng.normal(0, 0.01, 200)
            out[(run, "scale", s)] = np.clip(base * (1 - 0.2 * s) + extra + noise, 0, 1)
    return out


def test_paired_bootstrap_finds_a_consistent_difference() -> None:
    better = R.bootstrap_differences(per_sample_fixture(0.05), "run-kprpe", "run-ape", ["scale"], [0, 1, 2])
    assert better is not None
    lo, hi = better["scale"]
    assert 0 < lo < hi  # every query gains 0.05: clearly positive
    same = R.bootstrap_differences(per_sample_fixture(0.0), "run-kprpe", "run-ape", ["scale"], [0, 1, 2])
    assert same is not None and same["scale"][0] < 0 < same["scale"][1]
    assert same["mean"] == same["scale"]
    assert R.bootstrap_differences({}, "a", "b", ["scale"], [0, 1]) is None


def test_per_sample_sidecar_round_trip_and_paired_intervals_in_the_report(tmp_path: Path) -> None:
    arrays = per_sample_fixture(0.05)
    path = tmp_path / "x.npz"
    path.write_bytes(R.per_sample_bytes(arrays))
    back = R.read_per_sample(path)
    assert back.keys() == arrays.keys()
    assert all(np.allclose(back[k], arrays[k], atol=1e-7) for k in arrays)
    rows = [r for r in fake_rows() if r["perturbation"] == "scale"]
    md = R.to_markdown(rows, per_sample=arrays)
    assert "95 % paired bootstrap interval" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| scale | 0.850 |"))
    assert "+0.225 [" in line and " ~" not in line
    # without the sidecar the report falls back to the unpaired rule
    assert "taken unpaired" in R.to_markdown(rows)


def test_batches_are_fetched_with_one_thread_and_the_count_is_restored() -> None:
    from reidbench.evaluation.reid import single_threaded

    before = torch.get_num_threads()
    seen = []

    def source():
        for i in range(3):
            seen.append(torch.get_num_threads())
            yield i

    out = []
    for item in single_threaded(source()):
        out.append((item, torch.get_num_threads()))
    assert out == [(0, before), (1, before), (2, before)]
    assert seen == [1, 1, 1] and torch.get_num_threads() == before
