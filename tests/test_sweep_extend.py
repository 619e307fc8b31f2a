"""Extending a recorded robustness report (reidbench/engine/sweep_extend.py): the extended report
equals a full sweep of everything, row for row; recorded rows are kept byte for byte; nothing is
evaluated when nothing is missing; a record whose clean metrics do not reproduce, or that was
swept at other severities, is refused with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.engine import sweep as sweep_module
from reidbench.engine.sources import ModelSource, source_from_run
from reidbench.engine.sweep import sweep_models
from reidbench.engine.sweep_extend import extend_sweep, merge_rows, missing_blocks
from reidbench.errors import ReidbenchError
from reidbench.evaluation.robustness import SweepSpec
from reidbench.reporting.robustness import read_csv, read_per_sample, report_paths

TINY = ["--set", "model.depth=1", "--set", "model.embed_dim=32", "--set", "model.num_heads=2",
        "--set", "data.synth_ids=30", "--set", "data.height=64", "--set", "data.width=32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ModelSource], Path]:
    root = tmp_path_factory.mktemp("extend")
    out, data = root / "runs", root / "data"
    for model in ("ape", "kprpe"):
        code = cli.main(["-q", "run", "--model", model, "--dataset", "synthetic-reid", "--data-root",
                         str(data), "--output", str(out), "--epochs", "1", "--batch-size", "32", *TINY])
        assert code == 0
    return [source_from_run(p) for p in sorted(out.iterdir())], data


def spec(*perturbations: str) -> SweepSpec:
    return SweepSpec(perturbations, (0, 3), "query", 0)


def test_extension_equals_a_full_sweep_and_keeps_the_recorded_rows(runs, tmp_path: Path) -> None:
    sources, data = runs
    ape, kprpe = sources
    sweep_models([ape], spec("affine"), tmp_path, report_id="r", data_root=str(data))
    paths = report_paths(tmp_path, "r")
    before = paths["csv"].read_text().splitlines()
    result = extend_sweep([ape, kprpe], spec("affine", "affine_kpnoise"), tmp_path, report_id="r",
                          data_root=str(data), command="test")
    full = sweep_models([ape, kprpe], spec("affine", "affine_kpnoise"), tmp_path, report_id="full",
                        data_root=str(data))
    assert paths["csv"].read_text() == report_paths(tmp_path, "full")["csv"].read_text()
    assert result.rows == read_csv(paths["csv"]) and len(full.rows) == len(result.rows)
    after = paths["csv"].read_text().splitlines()
    assert after[:len(before)] == before  # ape's affine rows, byte for byte, still first
    extended = read_per_sample(paths["per_sample"])
    whole = read_per_sample(report_paths(tmp_path, "full")["per_sample"])
    assert extended.keys() == whole.keys()
    for key in whole:
        np.testing.assert_array_equal(extended[key], whole[key])
    meta = json.loads(paths["meta"].read_text())
    assert [m["run_id"] for m in meta["models"]] == [ape.run_id, kprpe.run_id]
    assert set(meta["perturbations"]) == {"affine", "affine_kpnoise"}
    (part,) = meta["extended"]
    assert part["command"] == "test" and part["added"] == {ape.run_id: ["affine_kpnoise"],
                                                            kprpe.run_id: ["affine", "affine_kpnoise"]}
    assert "affine_kpnoise" in paths["markdown"].read_text()
    # nothing missing: nothing evaluated, nothing rewritten
    stamp = {p: p.stat().st_mtime_ns for p in paths.values() if p.exists()}
    again = extend_sweep([ape, kprpe], spec("affine"), tmp_path, report_id="r", data_root=str(data))
    assert again.seconds == {} and {p: p.stat().st_mtime_ns for p in stamp} == stamp


def test_without_a_record_it_is_a_sweep_that_builds_the_dataset_once(
        runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources, data = runs
    built: list[str] = []
    real = sweep_module.build_dataset

    def counting(cfg):
        built.append(cfg.name)
        return real(cfg)

    monkeypatch.setattr(sweep_module, "build_dataset", counting)
    result = extend_sweep(sources[:1], spec("affine"), tmp_path / "new", report_id="r", data_root=str(data))
    assert built == ["synthetic-reid"]
    whole = sweep_models(sources[:1], spec("affine"), tmp_path / "whole", report_id="r", data_root=str(data))
    assert result.rows == whole.rows and "extended" not in json.loads(result.paths["meta"].read_text())


def test_a_record_whose_clean_metric_does_not_reproduce_is_not_extended(runs, tmp_path: Path) -> None:
    sources, data = runs
    ape = sources[0]
    sweep_models([ape], spec("affine"), tmp_path, report_id="r", data_root=str(data))
    path = report_paths(tmp_path, "r")["csv"]
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        if row["severity"] == "0" and row["metric"] == "mAP":
            row["value"] = f"{float(row['value']) + 0.01:.6f}"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tampered = {p: p.read_bytes() for p in report_paths(tmp_path, "r").values() if p.exists()}
    with pytest.raises(ReidbenchError, match="weights or data changed"):
        extend_sweep([ape], spec("affine", "kpnoise"), tmp_path, report_id="r", data_root=str(data))
    assert {p: p.read_bytes() for p in tampered} == tampered
    with pytest.raises(ReidbenchError, match="swept with severities"):
        extend_sweep([ape], SweepSpec(("kpnoise",), (0, 5), "query", 0), tmp_path, report_id="r",
                     data_root=str(data))


def test_missing_blocks_and_merge_order() -> None:
    def row(run: str, pert: str, sev: int) -> dict[str, object]:
        return {"run_id": run, "perturbation": pert, "severity": sev}

    recorded = [row("a", "kpnoise", 0), row("a", "kpnoise", 5), row("b", "kpnoise", 0)]
    assert missing_blocks(recorded, ["a", "b", "c"], ("affine", "kpnoise")) == {
        "a": ("affine",), "b": ("affine",), "c": ("affine", "kpnoise")}
    assert missing_blocks(recorded, ["a"], ("kpnoise",)) == {}
    new = [row("c", "kpnoise", 0), row("a", "affine", 0), row("a", "affine", 5)]
    merged = merge_rows(recorded, new)
    assert [(r["run_id"], r["perturbation"], r["severity"]) for r in merged] == [
        ("a", "affine", 0), ("a", "affine", 5), ("a", "kpnoise", 0), ("a", "kpnoise", 5),
        ("b", "kpnoise", 0), ("c", "kpnoise", 0)]


def test_cli_extend_adds_a_model_and_refuses_with_overwrite(
    runs, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    sources, data = runs
    run_dirs = [src.checkpoint.parent for src in sources]
    base = ["-q", "robustness", "--runs", str(run_dirs[0].parent), "--data-root", str(data),
            "--severities", "3", "--output", str(tmp_path), "--id", "mine"]
    assert cli.main([*base, "--run", run_dirs[0].name, "--perturb", "kpnoise"]) == 0
    code = cli.main([*base, "--run", ",".join(p.name for p in run_dirs), "--perturb", "kpnoise",
                     "--extend", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "--extend keeps the recorded rows" in err and "Traceback" not in err
    assert cli.main([*base, "--run", ",".join(p.name for p in run_dirs), "--perturb", "kpnoise",
                     "--extend"]) == 0
    rows = read_csv(report_paths(tmp_path, "mine")["csv"])
    first, second = (p.name for p in run_dirs)
    assert [r["run_id"] for r in rows if r["metric"] == "mAP"] == [first, first, second, second]
    meta = json.loads(report_paths(tmp_path, "mine")["meta"].read_text())
    assert "--extend" in meta["extended"][0]["command"]
