"""scripts/experiments/misalignment.py: the whole study end to end in its --tiny mode, resumed
from its records without training or sweeping again; the positive-control generator; the
seed intervals against hand-computed values."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import REPO

from reidbench.config import DataConfig
from reidbench.datasets.catalog import build_dataset
from reidbench.errors import ReidbenchError
from reidbench.registry import load_builtins
from reidbench.reporting.records import read_run_config
from reidbench.synthetic.keypoint_control import generate_keypoint_control, render

# each committed study report: the nano study and a larger size in its own folder
STUDY_FOLDERS = sorted(r.parent for r in REPO.glob("results/misalignment*/report.json"))


def script(name: str) -> ModuleType:
    """Import scripts/experiments/<name>.py (registered in sys.modules: it defines dataclasses)."""
    module_name = f"experiment_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = REPO / "scripts" / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # about 20 CPU-seconds: five 1-epoch runs, two sweeps
def test_tiny_study_runs_end_to_end_and_resumes_from_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mis = script("misalignment")
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["--tiny", "--out", str(out), "--data-root", str(data)]
    report = mis.main(argv)
    summary = json.loads((out / "report.json").read_text())
    groups = summary["groups"]
    assert set(groups) == {"reid-main", "control"}
    assert set(groups["reid-main"]["models"]) == {"ape", "kprpe", "ape_aligned"}
    kprpe = groups["reid-main"]["models"]["kprpe"]
    assert {"clean", "affine", "kpnoise", "mean", "kp_sensitivity"} <= set(kprpe)
    assert groups["reid-main"]["models"]["ape"]["kp_sensitivity"]["mean"] == 0.0  # APE ignores keypoints
    assert groups["reid-main"]["models"]["ape_aligned"]["kp_sensitivity"]["mean"] > 0  # it warps with them
    assert set(groups["reid-main"]["kprpe_minus"]) == {"ape", "ape_aligned"}
    recorded_params = json.loads((out / "runs" / "reid-main-kprpe-s0" / "metrics.json").read_text())["params"]
    assert groups["reid-main"]["params"]["kprpe"] == recorded_params > 0
    assert f"| kprpe | {recorded_params} |" in report.read_text()
    assert 0 < groups["reid-main"]["chance"] < 1 and groups["control"]["chance"] < 1
    assert len(list((out / "runs").iterdir())) == 5

    # a second invocation reads every record back: nothing is trained or swept again
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a recorded result")

    monkeypatch.setattr(mis, "run_experiment", refuse)
    monkeypatch.setattr(mis, "extend_sweep", refuse)
    monkeypatch.setattr(mis, "sensitivity_rows", refuse)
    for ckpt in (out / "runs").glob("*/checkpoint.pt"):  # as committed: records without weights
        ckpt.unlink()
    mis.main(argv)
    assert json.loads((out / "report.json").read_text())["groups"] == groups
    # a recorded run is never reused for another recipe
    run = out / "runs" / "control-kprpe-s0"
    recorded = read_run_config(run / "config.yaml")
    other = replace(recorded, train=replace(recorded.train, lr=recorded.train.lr * 2))
    with pytest.raises(ReidbenchError, match="train.lr"):
        mis.train_one(other, run)


@pytest.mark.parametrize("committed", STUDY_FOLDERS, ids=lambda d: d.name)
def test_the_committed_report_is_what_its_records_regenerate(
    committed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """results/misalignment*/report.{md,json} (the nano study; a larger size in its own folder)
    rebuilt from the committed records alone (no checkpoints; nothing trained, swept or measured
    again) with the command the report names."""
    mis = script("misalignment")
    report = json.loads((committed / "report.json").read_text(encoding="utf-8"))
    out = tmp_path / "misalignment"
    shutil.copytree(committed, out)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a recorded result")

    monkeypatch.setattr(mis, "run_experiment", refuse)
    monkeypatch.setattr(mis, "extend_sweep", refuse)
    monkeypatch.setattr(mis, "sensitivity_rows", refuse)
    # the control set is named by its path under the default data root ("folder:datasets/..."):
    # regenerate it there, in a scratch working directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REIDBENCH_DATA", "datasets")
    given = report["command"].split()[2:]  # "python3 scripts/experiments/misalignment.py ..."
    mis.main([*given, "--out", str(out)])
    rebuilt = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rebuilt["groups"] == report["groups"] and rebuilt["runs"] == report["runs"]
    regenerate = report["command"]
    rebuilt_md = (out / "report.md").read_text(encoding="utf-8").splitlines()
    committed_md = (committed / "report.md").read_text(encoding="utf-8").splitlines()
    assert committed_md[2] == f"Regenerate: `{regenerate}` (resumable; reads the records under this folder)."
    assert rebuilt_md[3:] == committed_md[3:]


def test_intervals_are_student_t_over_seeds() -> None:
    mis = script("misalignment")
    got = mis.interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # sd 1, t(0.975, 2 df) = 4.303
    assert got["mean"] == 2.0
    assert got["low"] == pytest.approx(2 - half) and got["high"] == pytest.approx(2 + half)
    assert mis.interval([0.5])["low"] is None
    rows = [{"task": "reid", "metric": "mAP", "run_id": "r", "perturbation": p, "severity": s,
             "clean": 0.8, "ratio": ratio, "value": 0.8 * ratio}
            for p, s, ratio in [("clean", 0, 1.0), ("affine", 0, 1.0), ("affine", 5, 0.5), ("affine", 1, 0.9),
                                ("kpnoise", 1, 1.0), ("kpnoise", 5, 0.8)]]
    rows.append({"task": "reid", "metric": "rank1", "run_id": "r", "perturbation": "affine", "severity": 5,
                 "clean": 0.9, "ratio": 0.1, "value": 0.09})  # not the headline metric: ignored
    scores = mis.scores(rows)["r"]
    assert scores["affine"] == pytest.approx(0.7) and scores["kpnoise"] == pytest.approx(0.9)
    assert scores["mean"] == pytest.approx(0.8) and scores["clean"] == 0.8
    # absolute headline value at the top severity, whatever the row order
    assert scores["top:affine"] == pytest.approx(0.4) and scores["top:kpnoise"] == pytest.approx(0.64)
    assert scores["top:mean"] == pytest.approx(0.52) and "top:clean" not in scores


def test_models_at_chance_are_not_compared() -> None:
    """A robustness ratio of a model that ranks at chance is noise over noise: the report says
    the comparison is not possible instead of declaring a winner (the first control run had
    KP-RPE at mAP 0.032, chance 0.030, "beat" an aligned ViT at 0.93 on robustness)."""
    mis = script("misalignment")
    chance = 0.03
    learned = {"mean": 0.9, "low": 0.85, "high": 0.95, "n": 3}
    noise = {"mean": 0.032, "low": 0.026, "high": 0.038, "n": 3}
    assert mis.at_chance(noise, chance) and not mis.at_chance(learned, chance)
    assert mis.at_chance({"mean": 0.032, "low": None, "high": None, "n": 1}, chance)
    assert not mis.at_chance({"mean": 0.05, "low": None, "high": None, "n": 1}, chance)
    diff = {"mean": 0.39, "low": 0.24, "high": 0.55, "n": 3}
    summary = {"control": {
        "dataset": "folder:x", "recipe": "r.yaml", "overrides": [], "seeds": [0, 1, 2],
        "params": {"kprpe": 10, "irpe": 10, "ape_aligned": 9}, "chance": chance,
        "models": {"kprpe": {"clean": noise, "mean": diff}, "irpe": {"clean": noise},
                   "ape_aligned": {"clean": learned, "mean": diff}},
        "kprpe_minus": {"irpe": {"mean": diff}, "ape_aligned": {"mean": diff}}}}
    text = mis.markdown(summary, "cmd")
    assert "chance level of the clean metric: 0.030" in text
    score = "mean robustness score: +0.390 [+0.240, +0.550]"
    assert f"vs ape_aligned, {score}: not comparable: kprpe ranks at chance" in text
    assert f"vs irpe, {score}: not comparable: kprpe and irpe" in text
    assert "KP-RPE better" not in text
    assert "| control (kprpe and irpe at chance: not comparable) |" in text
    summary["control"]["models"]["kprpe"]["clean"] = learned
    summary["control"]["models"]["irpe"]["clean"] = learned
    assert f"vs ape_aligned, {score}: KP-RPE better" in mis.markdown(summary, "cmd")


def test_control_keypoints_point_at_the_identity_mark_and_only_there(tmp_path: Path) -> None:
    """The identity's mark sits where the keypoints say, decoys elsewhere, so the pixels alone
    cannot say which mark is the identity's."""
    generate_keypoint_control(tmp_path / "kc", num_ids=8, images_per_id=3, size=48, cell=4, patterns=4)
    load_builtins()
    split = build_dataset(DataConfig(name=f"folder:{tmp_path / 'kc'}"))
    assert split.keypoint_schema is not None and split.keypoint_schema.flip_pairs == ()
    records = sorted(split.train + split.query + split.gallery, key=lambda r: r.path)
    from reidbench.data.loader import load_rgb

    by_identity: dict[str, list[np.ndarray]] = {}
    for record in records:
        image = load_rgb(record.path).astype(np.float64)
        x, y = (record.keypoints[0] * 48).round().astype(int)  # top-left corner of the mark
        mark = image[y:y + 8, x:x + 8].reshape(2, 4, 2, 4, 3).mean(axis=(1, 3))  # 2x2 cell colours
        by_identity.setdefault(Path(record.path).parent.name, []).append(mark)
    for marks in by_identity.values():
        for other in marks[1:]:
            assert np.abs(other - marks[0]).max() < 75  # the same mark (colour jitter, std 12, only)
    firsts = [m[0] for m in by_identity.values()]
    assert any(np.abs(a - b).max() > 100 for a in firsts for b in firsts)  # identities differ
    image, kps = render(np.array([0, 1, 2, 3]), np.random.default_rng(0), 48, 4, 4)
    assert image.shape == (48, 48, 3) and kps.shape == (3, 2)


def test_local_control_keeps_the_identity_mark_near_the_centre_and_decoys_anywhere() -> None:
    """control-local's generator: the identity mark's centre within +-spread pixels of the image
    centre on each axis, reaching both ends of that range; without spread it goes anywhere."""
    size, cell, spread = 64, 6, 12
    rng = np.random.default_rng(0)
    centres = []
    for _ in range(300):
        _, kps = render(np.array([0, 1, 2, 3]), rng, size, cell, 5, spread)
        tl, tr, bottom = kps * size
        centres.append(((tl[0] + tr[0]) / 2, (tl[1] + bottom[1]) / 2))  # the mark's centre
    offsets = np.array(centres) - size / 2
    assert np.abs(offsets).max() <= spread
    assert offsets.min() <= -spread + 1 and offsets.max() >= spread - 1  # the whole range is used
    rng = np.random.default_rng(0)
    anywhere = np.array([render(np.array([0, 1, 2, 3]), rng, size, cell, 5)[1][0] * size
                         for _ in range(300)])
    assert np.abs(anywhere + cell - size / 2).max() > 2 * spread  # control: far from the centre too
    # (that the control set itself is unchanged: the committed report's test regenerates it)


def test_models_option_keeps_the_named_models_and_the_report_names_the_rest(tmp_path: Path) -> None:
    """--models (a budget cut) trains only the named models, in every group or, as GROUP=..., in
    one; each group's report section lists the planned models it left out; unknown names and
    repeated groups are refused."""
    mis = script("misalignment")
    groups = mis.plan(tmp_path / "kc", "nano", tiny=False)
    kept = mis.keep_models(groups, mis.parse_models(["kprpe,ape_aligned"]))
    by_name = {g.name: g for g in kept}
    assert by_name["faces-main"].models == ("kprpe", "ape_aligned")
    planned = set(mis.ENCODINGS) - {"kprpe", "ape_aligned"}
    assert set(by_name["faces-main"].skipped) == planned
    assert by_name["faces-cls"].models == ("kprpe", "ape_aligned")
    assert by_name["faces-cls"].skipped == ("irpe",)
    assert by_name["control-cls"].skipped == ()
    assert [g.name for g in mis.keep_models(groups, {None: {"ape", "rpe"}})] == [
        "faces-main", "reid-main", "control", "control-local"]  # groups left empty are dropped
    chosen = mis.parse_models(["ape,irpe,kprpe,ape_aligned", "reid-main=kprpe, ape_aligned"])
    assert chosen == {None: {"ape", "irpe", "kprpe", "ape_aligned"}, "reid-main": {"kprpe", "ape_aligned"}}
    by_name = {g.name: g for g in mis.keep_models(groups, chosen)}
    assert by_name["reid-main"].models == ("kprpe", "ape_aligned")
    assert by_name["faces-main"].models == ("ape", "irpe", "kprpe", "ape_aligned")
    assert by_name["control"].skipped == ()
    only = {g.name: g for g in mis.keep_models(groups, mis.parse_models(["reid-main=kprpe"]))}
    assert only["reid-main"].models == ("kprpe",) and only["faces-main"] == next(g for g in groups
                                                                                 if g.name == "faces-main")
    with pytest.raises(ReidbenchError, match=r"--models: unknown models \['vit'\]"):
        mis.keep_models(groups, mis.parse_models(["kprpe,vit"]))
    with pytest.raises(ReidbenchError, match=r"--models: unknown groups \['faces'\]"):
        mis.keep_models(groups, mis.parse_models(["faces=kprpe"]))
    for bad, message in [(["kprpe", "ape"], "the default is given twice"),
                         (["reid-main=kprpe", "reid-main=ape"], "group reid-main is given twice"),
                         (["=kprpe"], "expected GROUP=MODEL"), (["reid-main= ,"], "no model named")]:
        with pytest.raises(ReidbenchError, match=message):
            mis.parse_models(bad)
    summary = {"faces-main": {"dataset": "synthetic-faces", "recipe": "r.yaml", "overrides": [], "seeds": [0],
                              "params": {}, "chance": 0.5, "skipped": ["rpe", "rope"],
                              "models": {"kprpe": {}}, "kprpe_minus": {}}}
    assert "Planned but not run in this record (--models): rpe, rope." in mis.markdown(summary, "cmd")
    summary["faces-main"]["skipped"] = []
    assert "Planned but not run" not in mis.markdown(summary, "cmd")


def test_each_group_names_its_head_once(tmp_path: Path) -> None:
    """The report prints a group's overrides in its title: each group names one head (the
    *-cls groups CLS, the others the authors' flattened head), never both."""
    mis = script("misalignment")
    for tiny in (False, True):
        for g in mis.plan(tmp_path / "kc", "nano", tiny=tiny):
            heads = [o for o in g.overrides if o.startswith("model.head=")]
            assert heads == (["model.head=cls"] if g.name.endswith("-cls") else ["model.head=flatten"]), g


def test_report_compares_absolute_metrics_at_the_top_severity() -> None:
    """A model can keep its robustness ratio by being bad on clean images too: the report also
    gives the headline metric at the top severity and KP-RPE minus each model there, with a
    verdict (the paper's comparison: who is better when alignment fails)."""
    mis = script("misalignment")
    cell = {"mean": 0.5, "low": 0.45, "high": 0.55, "n": 3}
    diff = {"mean": 0.1, "low": 0.05, "high": 0.15, "n": 3}
    summary = {"reid-main": {
        "dataset": "synthetic-reid", "recipe": "r.yaml", "overrides": [], "seeds": [0, 1, 2], "chance": 0.01,
        "params": {}, "skipped": [],
        "models": {"kprpe": {"clean": cell, "kpnoise": cell, "top:kpnoise": cell, "top:mean": cell},
                   "ape_aligned": {"clean": cell, "kpnoise": cell, "top:kpnoise": cell, "top:mean": cell}},
        "kprpe_minus": {"ape_aligned": {"clean": diff, "top:kpnoise": diff,
                                        "top:mean": {"mean": -0.1, "low": -0.3, "high": 0.1, "n": 3}}}}}
    text = mis.markdown(summary, "cmd")
    assert "Headline metric at the top severity (absolute, not a ratio):" in text
    assert "| ape_aligned | +0.100 [+0.050, +0.150] | +0.100 [+0.050, +0.150] |" in text
    assert ("- vs ape_aligned, headline metric at the top severity, under keypoint noise: "
            "+0.100 [+0.050, +0.150]: KP-RPE better, beyond the seed noise.") in text
    assert "mean over perturbations: -0.100 [-0.300, +0.100]: within the seed noise." in text


def test_a_run_killed_before_its_first_checkpoint_is_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A study process killed (SIGTERM, no clean-up) during a run's first epoch leaves its
    config.yaml and environment.json but no checkpoint: the next invocation removes those and
    trains the run again instead of failing to resume it; a file no run wrote stops it."""
    from reidbench.config import resolve_config
    from reidbench.reporting.records import write_run_config

    mis = script("misalignment")
    load_builtins()
    cfg = resolve_config("synthetic-reid", "ape", None, {"output": str(tmp_path)}, [])
    run = tmp_path / "reid-main-ape-s0"
    run.mkdir()
    write_run_config(cfg, run / "config.yaml")
    (run / "environment.json").write_text("{}", encoding="utf-8")
    calls: list[tuple[Path | None, bool]] = []

    def fake_run(cfg: object, run_dir: Path | None = None, resume: bool = False) -> None:
        assert run_dir is not None and not run_dir.exists()  # created afresh, as a new run
        calls.append((run_dir, resume))

    monkeypatch.setattr(mis, "run_experiment", fake_run)
    assert mis.train_one(cfg, run) == run
    assert calls == [(run, False)]
    run.mkdir()
    write_run_config(cfg, run / "config.yaml")
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ReidbenchError, match="holds files no run wrote"):
        mis.train_one(cfg, run)
    assert (run / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.slow  # about 15 CPU-seconds: three 1-epoch runs, two sweeps of one perturbation
def test_a_model_added_to_a_swept_group_is_evaluated_alone_and_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A study that grows (more models in a group after its sweep) pays for the new model only:
    its sweep and sensitivity rows are merged into the group's records, the recorded rows kept."""
    mis = script("misalignment")
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["--tiny", "--only", "reid-main", "--out", str(out), "--data-root", str(data)]
    mis.main([*argv, "--models", "ape,kprpe"])
    csv_path = out / "robustness" / "reid-main-s0.csv"
    before = csv_path.read_text().splitlines()
    sens_before = json.loads((out / "sensitivity" / "reid-main-s0.json").read_text())
    mis.main(argv)
    after = csv_path.read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    assert meta["extended"][0]["added"] == {"reid-main-ape_aligned-s0": ["affine", "kpnoise"]}
    sens = json.loads((out / "sensitivity" / "reid-main-s0.json").read_text())
    assert sens["rows"][:len(sens_before["rows"])] == sens_before["rows"]
    assert [r["model"] for r in sens["rows"]][-1] == "ape_aligned"
    assert sens["meta"]["created_utc"] == sens_before["meta"]["created_utc"]  # the first write's
    assert len(sens["meta"]["extended"]) == 1
    report = json.loads((out / "report.json").read_text())["groups"]["reid-main"]
    assert set(report["models"]) == {"ape", "kprpe", "ape_aligned"} and report["skipped"] == []
