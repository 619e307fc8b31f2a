"""The per-task leaderboards, the comparison and index.html (issue 17), on hand-made run records
and robustness reports whose every number is computed by hand below."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reidbench import cli
from reidbench.config import resolve_config
from reidbench.registry import load_builtins
from reidbench.reporting.aggregate import comparison, task_leaderboard
from reidbench.reporting.bootstrap import hierarchical_bootstrap, interval
from reidbench.reporting.leaderboard_tables import publish
from reidbench.reporting.records import write_run_config
from reidbench.reporting.robustness import per_sample_bytes, to_csv
from reidbench.reporting.tidy import robustness_frame, runs_frame


def fake_run(runs: Path, name: str, *, model: str = "ape", seed: int = 0, mAP: float = 0.5,
             dataset: str = "synthetic-reid", overrides: tuple[str, ...] = (),
             extra: dict | None = None, counts: tuple[int, int] = (10, 40)) -> Path:
    load_builtins()
    run = runs / name
    run.mkdir(parents=True)
    cfg = resolve_config(dataset=dataset, model=model, overrides=[f"train.seed={seed}", *overrides])
    write_run_config(cfg, run / "config.yaml")
    metrics = {"task": "reid", "mAP": mAP, "mINP": 0.25, "rank1": mAP, "rank5": 0.8, "rank10": 0.9,
               "num_valid_queries": counts[0], "num_query": counts[0], "num_gallery": counts[1],
               "params": 123, "epochs": cfg.train.epochs, **(extra or {})}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


# per-sample values of each run: clean, rotate at severity 1 and 2 (constant arrays of 4 queries:
# the sample-level bootstrap has no spread, so every interval below is computable by hand)
CELLS = {
    "a0": (0.8, 0.4, 0.6),  # ape seed 0: score (0.4/0.8 + 0.6/0.8) / 2 = 0.625
    "a1": (0.5, 0.25, 0.5),  # ape seed 1: (0.5 + 1.0) / 2 = 0.75
    "k0": (0.8, 0.8, 0.8),  # kprpe seed 0: 1.0
    "k1": (0.5, 0.5, 0.5),  # kprpe seed 1: 1.0
    "r0": (0.8, 0.8, 0.8),  # rpe seed 0: 1.0
    "r1": (0.5, 0.375, 0.375),  # rpe seed 1: 0.75
}


def report(out: Path, report_id: str, cells: dict[str, tuple[float, float, float]], n: int = 4) -> None:
    rows, arrays = [], {}
    for run, (clean, *perturbed) in cells.items():
        arrays[(run, "clean", 0)] = np.full(n, clean)
        for sev, value in enumerate([clean, *perturbed]):
            arrays[(run, "rotate", sev)] = np.full(n, value)
            rows.append({"dataset": "synthetic-reid", "task": "reid", "model": run[0], "run_id": run,
                         "side": "query", "seed": 0, "perturbation": "rotate", "severity": sev,
                         "parameters": "", "metric": "mAP", "value": value, "stderr": 0.0,
                         "clean": clean, "ratio": value / clean, "num_samples": n})
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{report_id}.csv").write_text(to_csv(rows))
    (out / f"{report_id}-per-sample.npz").write_bytes(per_sample_bytes(arrays))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """results/ with runs a0 a1 (ape), k0 k1 (kprpe), r0 r1 (rpe), seeds 0 and 1, one report."""
    runs = tmp_path / "results" / "runs"
    maps = {"a0": 0.5, "a1": 0.7, "k0": 0.6, "k1": 0.6, "r0": 0.4, "r1": 0.5}
    models = {"a": "ape", "k": "kprpe", "r": "rpe"}
    for run, m in maps.items():
        fake_run(runs, run, model=models[run[0]], seed=int(run[1]), mAP=m)
    report(tmp_path / "results" / "robustness", "synthetic-reid-query", CELLS)
    return tmp_path / "results"


def board_of(results: Path) -> pd.DataFrame:
    runs, _ = runs_frame(results / "runs")
    rob = robustness_frame(results / "robustness", set(runs["run_id"]))
    return task_leaderboard(runs, rob, "reid")


def test_mean_std_n_and_intervals_are_the_hand_computed_ones(project: Path) -> None:
    board = board_of(project).set_index("model")
    assert len(board) == 3 and list(board["n_seeds"]) == [2, 2, 2]
    ape = board.loc["ape"]
    assert ape["seeds"] == "0,1" and ape["runs"] == "a0 a1"
    assert ape["mAP_mean"] == pytest.approx(0.6)
    assert ape["mAP_std"] == pytest.approx(math.sqrt(0.02))  # ddof=1: (0.1^2 + 0.1^2) / (2 - 1)
    assert ape["robustness_rotate"] == pytest.approx(0.6875)
    assert ape["robustness_mean_std"] == pytest.approx(0.125 / math.sqrt(2))
    # constant per-sample values: the replicates are the mean of two seeds drawn from
    # {0.625, 0.75}, so the 95 % interval is exactly [0.625, 0.75]
    assert (ape["robustness_rotate_lo"], ape["robustness_rotate_hi"]) == pytest.approx((0.625, 0.75))
    assert (ape["robustness_mean_lo"], ape["robustness_mean_hi"]) == pytest.approx((0.625, 0.75))
    assert board.loc["kprpe", "mAP_std"] == 0.0 and board.loc["kprpe", "robustness_mean"] == 1.0
    assert list(board.index) == ["ape", "kprpe", "rpe"]  # best mAP first


def test_one_seed_has_no_std_and_a_sample_level_interval(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "a0")
    rng = np.random.default_rng(3)
    perturbed = (rng.random(400) < 0.5).astype(float)  # 0/1 per query: score = their mean
    arrays = {("a0", "clean", 0): np.ones(400), ("a0", "rotate", 0): np.ones(400),
              ("a0", "rotate", 1): perturbed}
    rows = [{"dataset": "synthetic-reid", "task": "reid", "model": "ape", "run_id": "a0",
             "side": "query", "seed": 0, "perturbation": "rotate", "severity": s, "parameters": "",
             "metric": "mAP", "value": v, "stderr": 0.0, "clean": 1.0, "ratio": v, "num_samples": 400}
            for s, v in ((0, 1.0), (1, perturbed.mean()))]
    (tmp_path / "robustness").mkdir()
    (tmp_path / "robustness" / "r.csv").write_text(to_csv(rows))
    (tmp_path / "robustness" / "r-per-sample.npz").write_bytes(per_sample_bytes(arrays))
    row = board_of(tmp_path).iloc[0]
    assert row["n_seeds"] == 1 and math.isnan(row["mAP_std"])
    # the binomial standard error of a mean of 400 coin flips: 95 % ~ +-1.96 * sqrt(p(1-p)/400)
    half = 1.96 * math.sqrt(perturbed.mean() * (1 - perturbed.mean()) / 400)
    assert row["robustness_rotate_lo"] == pytest.approx(perturbed.mean() - half, abs=0.012)
    assert row["robustness_rotate_hi"] == pytest.approx(perturbed.mean() + half, abs=0.012)


def test_the_bootstrap_resamples_seeds_and_is_seeded() -> None:
    per_seed = [{"x": np.full(5, v)} for v in (1.0, 2.0, 3.0)]
    reps = hierarchical_bootstrap(per_seed, lambda m: {"x": m["x"]}, resamples=2000, seed=7)["x"]
    assert set(np.round(reps * 3).astype(int)) <= set(range(3, 10))  # sums of three draws of 1..3
    # the mean of three seeds drawn with replacement is 1 (all three the first) with
    # probability 1/27 > 2.5 %: the interval spans the seeds
    assert np.mean(reps == 1.0) == pytest.approx(1 / 27, abs=0.015)
    assert interval(reps) == pytest.approx((1.0, 3.0))
    again = hierarchical_bootstrap(per_seed, lambda m: {"x": m["x"]}, resamples=2000, seed=7)["x"]
    assert np.array_equal(reps, again)


@pytest.mark.parametrize("overrides,extra,changed", [
    (("train.epochs=3",), {}, "epochs"),
    (("data.aug_affine=2",), {}, "augmentation"),
    (("data.erase_prob=0.5",), {}, "augmentation"),
    ((), {"pretrained": "/weights/deit_tiny.pth"}, "pretrained"),
    ((), {"keypoints": {"source": "mediapipe-pose", "coverage": 0.9}}, "keypoints"),
    (("data.synth_ids=20",), {}, "recipe"),
    (("loss.margin=0.5",), {}, "recipe"),
    (("model.depth=2",), {}, "arch"),
])
def test_rows_that_differ_in_what_matters_never_merge(
    tmp_path: Path, overrides: tuple[str, ...], extra: dict, changed: str,
) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "a0", seed=0, mAP=0.5)
    fake_run(runs, "a1", seed=1, mAP=0.7, overrides=overrides, extra=extra)
    board = board_of(tmp_path)
    assert list(board["n_seeds"]) == [1, 1], board[["runs", changed]]
    assert board[changed].nunique() == 2
    assert list(board["mAP_mean"]) == [0.7, 0.5]


def test_same_recipe_other_seeds_merge_and_a_repeated_seed_counts_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "20260101-000000-a", seed=0, mAP=0.5, overrides=("train.device=cpu",))
    fake_run(runs, "20260101-000001-b", seed=1, mAP=0.7)
    fake_run(runs, "20260101-000002-c", seed=1, mAP=0.9)  # seed 1 again: the newer one counts
    board = board_of(tmp_path)
    assert list(board["n_seeds"]) == [2] and board["mAP_mean"][0] == pytest.approx(0.7)
    assert board["runs"][0] == "20260101-000000-a 20260101-000002-c"
    assert "20260101-000001-b: a newer run of the same recipe and seed" in caplog.text


def test_a_subset_of_a_published_dataset_is_marked(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "full", dataset="market1501", counts=(3368, 15913))
    fake_run(runs, "small", dataset="market1501", counts=(16, 80), seed=1)
    board = board_of(tmp_path).set_index("runs")
    assert board.loc["full", "data"] == "full" and board.loc["small", "data"] == "subset"
    assert board.loc["small", "eval_set"] == "16q/80g"


def test_comparison_pairs_seeds_and_says_what_is_beyond_the_noise(project: Path) -> None:
    runs, _ = runs_frame(project / "runs")
    rob = robustness_frame(project / "robustness", set(runs["run_id"]))
    board = task_leaderboard(runs, rob, "reid")
    table = comparison(board, runs, rob, "reid").set_index(["model", "perturbation"])
    kp = table.loc[("kprpe", "rotate")]
    # per seed: 1.0 - 0.625 = 0.375 and 1.0 - 0.75 = 0.25; interval [0.25, 0.375] excludes 0
    assert kp["difference"] == pytest.approx(0.3125) and kp["n_seeds"] == 2
    assert (kp["difference_lo"], kp["difference_hi"]) == pytest.approx((0.25, 0.375))
    assert kp["verdict"] == "higher, beyond noise"
    rp = table.loc[("rpe", "mean")]
    # per seed: 0.375 and 0.0: the interval [0, 0.375] touches 0
    assert (rp["difference_lo"], rp["difference_hi"]) == pytest.approx((0.0, 0.375))
    assert rp["verdict"] == "within noise"
    clean = table.loc[("kprpe", "clean")]
    assert clean["difference"] == pytest.approx(0.0) and clean["verdict"] == "within noise"
    assert "ape" not in table.index.get_level_values("model")
    from reidbench.reporting.leaderboard_display import verdicts

    said = verdicts(table.reset_index())
    assert any(v.startswith("kprpe on synthetic-reid") and "degrades less than ape beyond the noise "
               "under rotate" in v and "(2 seeds)" in v for v in said), said
    assert any(v.startswith("rpe on synthetic-reid") and "cannot be told apart from ape" in v
               for v in said), said


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag in ("img", "script") and a.get("src"):
            self.srcs.append(str(a["src"]))
        if tag in ("a", "link") and a.get("href"):
            self.links.append(str(a["href"]))


def test_leaderboard_command_writes_every_table_and_a_self_contained_page(
    project: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (project / "robustness" / "synthetic-reid-query-examples.png").write_bytes(_png())
    code = cli.main(["-q", "leaderboard", "--runs", str(project / "runs"),
                     "--out", str(project / "leaderboard.csv")])
    assert code == 0, capsys.readouterr().err
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard-reid.csv", "leaderboard-reid.md",
                 "leaderboard-comparison.csv", "leaderboard-comparison.md", "index.html"):
        assert (project / name).is_file(), name
    assert not (project / "leaderboard-verification.csv").exists()  # no verification run
    board = pd.read_csv(project / "leaderboard-reid.csv")
    assert len(board) == 3 and "robustness_mean_lo" in board and "mAP_std" in board
    page = (project / "index.html").read_text()
    parser = Collect()
    parser.feed(page)
    assert {"leaderboard-reid", "comparison", "runs", "curves-reid-0",
            "examples-synthetic-reid-query"} <= set(parser.ids)
    assert parser.srcs and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not parser.links and "http://" not in page and "https://" not in page
    assert "reidbench leaderboard --runs" in page
    md = (project / "leaderboard-reid.md").read_text()
    assert "0.6000 ± 0.1414" in md and "0.688 [0.625, 0.750]" in md


def _png() -> bytes:
    from matplotlib.figure import Figure

    from reidbench.reporting.html_report import _png as render

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    return render(fig)


def test_incomplete_runs_are_named_in_a_warning(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    (project / "runs" / "a0" / "metrics.json").unlink()
    assert cli.main(["leaderboard", "--runs", str(project / "runs"),
                     "--out", str(project / "leaderboard.csv")]) == 0
    assert "skipped 1 incomplete run(s)" in caplog.text and ": a0" in caplog.text


def test_outside_a_project_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-q", "leaderboard"]) == 2
    err = capsys.readouterr().err
    assert "results/runs does not exist" in err and "project folder" in err
    assert not any(tmp_path.rglob("*"))


def test_a_foreign_index_html_is_never_replaced(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "index.html").write_text("<!DOCTYPE html><p>mine</p>")
    code = cli.main(["-q", "leaderboard", "--runs", str(project / "runs"),
                     "--out", str(project / "leaderboard.csv")])
    assert code == 2 and "index.html exists and was not written by reidbench" in capsys.readouterr().err
    assert (project / "index.html").read_text() == "<!DOCTYPE html><p>mine</p>"
    assert not (project / "leaderboard.csv").exists()


def test_publish_is_deterministic(project: Path) -> None:
    first = publish(project / "runs", project / "lb.csv")
    texts = {p: p.read_text() for p in first.paths}
    publish(project / "runs", project / "lb.csv")
    assert {p: p.read_text() for p in first.paths} == texts


def test_with_one_seed_the_comparison_is_the_reports_paired_bootstrap(tmp_path: Path) -> None:
    """One seed: the hierarchical bootstrap reduces to the per-query paired bootstrap of the
    robustness report (``bootstrap_differences``, written and tested independently)."""
    from reidbench.reporting.robustness_scores import bootstrap_differences

    runs = tmp_path / "runs"
    fake_run(runs, "a0", model="ape")
    fake_run(runs, "k0", model="kprpe")
    rng = np.random.default_rng(5)
    arrays, rows = {}, []
    for run, model in (("a0", "ape"), ("k0", "kprpe")):
        clean = rng.random(50)
        arrays[(run, "clean", 0)] = clean
        for pert in ("rotate", "scale"):
            for sev in (0, 1, 2):
                values = clean if sev == 0 else clean * rng.random(50)
                arrays[(run, pert, sev)] = values
                rows.append({"dataset": "synthetic-reid", "task": "reid", "model": model,
                             "run_id": run, "side": "query", "seed": 0, "perturbation": pert,
                             "severity": sev, "parameters": "", "metric": "mAP",
                             "value": values.mean(), "stderr": 0.0, "clean": clean.mean(),
                             "ratio": values.mean() / clean.mean(), "num_samples": 50})
    (tmp_path / "robustness").mkdir()
    (tmp_path / "robustness" / "r.csv").write_text(to_csv(rows))
    (tmp_path / "robustness" / "r-per-sample.npz").write_bytes(per_sample_bytes(arrays))
    frame, _ = runs_frame(runs)
    rob = robustness_frame(tmp_path / "robustness", set(frame["run_id"]))
    board = task_leaderboard(frame, rob, "reid")
    table = comparison(board, frame, rob, "reid").set_index("perturbation")
    expected = bootstrap_differences(arrays, "k0", "a0", ["rotate", "scale"], [0, 1, 2])
    assert expected is not None
    for pert in ("rotate", "scale", "mean"):
        got = (table.at[pert, "difference_lo"], table.at[pert, "difference_hi"])
        assert got == pytest.approx(expected[pert], abs=1e-6), pert


def test_a_task_without_runs_leaves_no_stale_table(project: Path) -> None:
    old = project / "lb-verification.csv"
    old.write_text("dataset,task,model\nsynthetic-faces,verification,ape\n")
    publish(project / "runs", project / "lb.csv")
    assert old.read_text() == "dataset\n"
    assert "No verification run under" in (project / "lb-verification.md").read_text()
