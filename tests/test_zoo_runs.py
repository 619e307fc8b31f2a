"""`reidbench run --model M` for every registered model on both synthetic datasets (tiny sizes).

Parametrized over the registry: a newly registered model is covered by adding it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reidbench.models  # noqa: F401  (registers models)
from reidbench import cli
from reidbench.registry import MODELS

TINY = ["--epochs", "1", "--batch-size", "8", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "model.size=nano"]
DATA = {
    "synthetic-reid": ["--set", "data.synth_ids=16", "--set", "data.height=64",
                       "--set", "data.width=32"],
    "synthetic-faces": ["--set", "data.synth_ids=24", "--set", "data.synth_train_ids=8",
                        "--set", "data.height=48", "--set", "data.width=48"],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo-data")


@pytest.mark.parametrize("dataset", list(DATA))
@pytest.mark.parametrize("model", MODELS.names())
def test_run_every_model(
    model: str, dataset: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["-q", "run", "--model", model, "--dataset", dataset, "--data-root",
                     str(data_root), "--output", str(tmp_path), *TINY, *DATA[dataset]])
    assert code == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    key = "mAP" if dataset == "synthetic-reid" else "accuracy"
    assert 0.0 <= metrics[key] <= 1.0


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "models", "--set", "model.depth=1"]) == 0
    out = capsys.readouterr().out
    for name in MODELS.names():
        assert name in out
    assert "GFLOPs" in out and "params" in out
