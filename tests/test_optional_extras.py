"""torchreid (with gdown and tensorboard) is an optional extra, ``[cnn]``, needed by the two CNN
baselines only: without it they fail in one line naming the extra, and the default run works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from reidbench import cli

CNN_EXTRA = {"torchreid", "gdown", "tensorboard"}
TINY = ["--epochs", "1", "--batch-size", "8", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "data.synth_ids=16", "--set", "data.height=64",
        "--set", "data.width=32"]


def _name(requirement: str) -> str:
    return requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()


def test_cnn_dependencies_are_the_cnn_extra_and_dev_pulls_it() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not {_name(r) for r in project["dependencies"]} & CNN_EXTRA
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["cnn"]} == CNN_EXTRA
    assert "reidbench[cnn]" in extras["dev"]  # `pip install -e ".[dev]"` (.ci/run) installs all


def test_cnn_model_without_torchreid_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    for module in [m for m in sys.modules if m == "torchreid" or m.startswith("torchreid.")]:
        monkeypatch.setitem(sys.modules, module, None)  # None in sys.modules: import fails
    monkeypatch.setitem(sys.modules, "torchreid", None)
    code = cli.main(["-q", "run", "--model", "osnet", "--dataset", "synthetic-reid", "--data-root",
                     str(tmp_path / "data"), "--output", str(tmp_path / "runs"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip install 'reidbench[cnn]'" in err and "torchreid" in err
    assert not list((tmp_path / "runs").glob("*"))  # the run left nothing behind


def test_the_default_run_needs_no_cnn_extra(tmp_path: Path) -> None:
    """The README's first command, on a tiny set, with torchreid unimportable."""
    argv = ["-q", "run", "--model", "ape", "--dataset", "synthetic-reid", "--data-root",
            str(tmp_path / "data"), "--output", str(tmp_path / "runs"), *TINY]
    code = ("import sys; sys.modules['torchreid'] = None; from reidbench.cli import main; "
            f"sys.exit(main({argv!r}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "runs").glob("*/metrics.json"))) == 1
