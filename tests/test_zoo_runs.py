"""`reidbench run --model M` for every registered model on both synthetic datasets (tiny sizes).

Parametrized over the registry: a newly registered model is covered by adding it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidbench import cli
from reidbench.config import DataConfig
from reidbench.datasets.catalog import build_dataset
from reidbench.registry import MODELS, load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

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
    assert metrics["epochs"] == 1
    # the counts are the generated split's
    split = build_dataset(DataConfig(name=dataset, root=str(data_root)))
    if dataset == "synthetic-reid":
        gallery = [r for r in split.gallery if r.pid != -1]
        valid = [q for q in split.query if any(g.pid == q.pid and g.camid != q.camid for g in gallery)]
        assert (metrics["num_query"], metrics["num_gallery"]) == (len(split.query), len(gallery))
        assert metrics["num_valid_queries"] == len(valid) > 0
        cmc = metrics["cmc"]
        assert all(a <= b for a, b in zip(cmc, cmc[1:]))
        assert [metrics["rank1"], metrics["rank5"], metrics["rank10"]] == [cmc[0], cmc[4], cmc[9]]
    else:
        assert metrics["num_pairs"] == len(split.verification.labels)
    # the recorded config and checkpoint reproduce the recorded metrics to the last digit
    out = tmp_path / "again.json"
    assert cli.main(["-q", "evaluate", "--run", str(run), "--data-root", str(data_root),
                     "--json", str(out)]) == 0, capsys.readouterr().err
    again = json.loads(out.read_text())
    for name, value in metrics.items():
        if name in again and not name.endswith("seconds"):
            assert again[name] == value, name
    assert again[key] == metrics[key]


def test_models_command_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "models", "--set", "model.depth=1"]) == 0
    out = capsys.readouterr().out
    for name in MODELS.names():
        assert name in out
    assert "GFLOPs" in out and "params" in out
