"""``rope`` (axial and mixed), ``cpe`` and ``nope`` train a tiny run on the real mini
Market-1501 (../shared/data/mini_market1501) and record what they were; the synthetic sets are
covered for every registered model by tests/test_zoo_runs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.registry import load_builtins

load_builtins()

TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--epochs", "1",
        "--batch-size", "16", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "data.height=64", "--set", "data.width=32",
        "--set", "train.warmup_epochs=0"]


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize(("model", "extra"), [
    ("rope", []), ("rope", ["--set", "model.rope.mode=mixed"]), ("cpe", []), ("nope", []),
])
def test_tiny_run_on_mini_market(model: str, extra: list[str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "run", "--model", model, "--output", str(tmp_path), *TINY, *extra])
    assert code == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["epochs"] == 1
    cfg = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert cfg["name"] == model and cfg["ape"] == "none"  # the preset: no absolute table
    assert cfg["rope"]["mode"] == ("mixed" if extra else "axial")


@pytest.mark.slow  # four trainings and a sweep: about 30 s on 2 cores (run with -m slow)
def test_bench_sweeps_the_new_encodings_beside_ape(tmp_path: Path) -> None:
    """``bench --models`` accepts rope, cpe and nope, and the robustness report has a row for
    each beside APE's."""
    from reidbench.reporting.robustness import read_csv

    out = tmp_path / "results"
    code = cli.main(["-q", "bench", "--dataset", "synthetic-reid", "--models", "ape,rope,cpe,nope",
                     "--data-root", str(tmp_path / "data"), "--output", str(out),
                     "--epochs", "1", "--batch-size", "8", "--set", "model.depth=1",
                     "--set", "model.embed_dim=32", "--set", "model.num_heads=2",
                     "--set", "train.warmup_epochs=0", "--set", "data.synth_ids=16",
                     "--set", "data.height=64", "--set", "data.width=32",
                     "--perturb", "rotate", "--severities", "0,3"])
    assert code == 0
    rows = read_csv(out / "robustness" / "synthetic-reid-query.csv")
    assert {r["model"] for r in rows} == {"ape", "rope", "cpe", "nope"}
    assert len(rows) == 4 * 1 * 2 * 2  # models x perturbations x severities x metrics
