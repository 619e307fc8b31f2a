"""The experiment scripts (scripts/experiments/) import, read the committed records through the
records API, and measure a recorded run from its checkpoint."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO

from reidbench import cli

SCRIPTS = REPO / "scripts" / "experiments"
RUNS = REPO / "results" / "experiments" / "runs"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_code_lives_under_results() -> None:
    assert not list((REPO / "results").rglob("*.py"))
    assert {p.name for p in SCRIPTS.glob("*.py")} >= {"summarize.py", "position_stats.py"}


def test_summarize_gives_the_readme_numbers_of_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    script("summarize").main(RUNS)
    table = {}
    for line in capsys.readouterr().out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d{8}-\d{6}-.*", cells[0]):
            table[cells[0]] = cells
    assert set(table) == {p.name for p in RUNS.iterdir()}
    for run, cells in table.items():
        metrics = json.loads((RUNS / run / "metrics.json").read_text())
        assert cells[5:8] == [f"{metrics[k]:.4f}" for k in ("mAP", "rank1", "mINP")], run
    readme = (REPO / "results" / "experiments" / "README.md").read_text()
    quoted = re.findall(r"\| \**(0\.\d{4})\** \| (0\.\d{4}) \| (0\.\d{4}) \| (\d{8}-\d{6}-\S+) \|", readme)
    assert len(quoted) >= 9
    for m_ap, rank1, minp, run in quoted:
        assert table[run][5:8] == [m_ap, rank1, minp], run


def test_position_stats_measures_a_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    code = cli.main(["-q", "run", "--model", "kprpe", "--dataset", "synthetic-reid", "--data-root",
                     str(tmp_path / "data"), "--output", str(runs), "--epochs", "1", "--batch-size", "64",
                     "--set", "model.depth=1", "--set", "model.embed_dim=32", "--set",
                     "model.num_heads=2", "--set", "data.synth_ids=40", "--set", "data.height=64",
                     "--set", "data.width=32"])
    assert code == 0, capsys.readouterr().err
    target = script("position_stats").main(runs)
    (run,) = runs.iterdir()
    assert target == tmp_path / "position_stats.json"
    stats = json.loads(target.read_text())[run.name]
    assert set(stats) == {"abs_norm", "kprpe_weight_rms", "kprpe_bias_rms", "top8_rel_norm",
                          "top8_d_pos", "top8_d_neg"}
    assert all(v >= 0 for v in stats.values()) and stats["abs_norm"] > 0
