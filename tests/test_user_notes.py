"""What the commands tell the user: `evaluate --run` prints what `run` prints, a missing dataset
names both ways to point at it, the examples grid names its axis, a schedule that never leaves
its warm-up is noted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli
from reidbench.config import DataConfig, TrainConfig
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.schedule_notes import warmup_note
from reidbench.errors import DataNotFound, DatasetError
from reidbench.evaluation.features_eval import run_lines
from reidbench.evaluation.tasks import summary_line
from reidbench.reporting.robustness_plots import examples_figure

REID = {"task": "reid", "model": "ape", "run_id": "r1", "dataset": "market1501", "mAP": 0.5,
        "mINP": 0.25, "rank1": 0.6, "rank5": 0.8, "rank10": 0.9, "num_valid_queries": 20,
        "cmc": [0.6, 0.7, 0.7, 0.75, 0.8, 0.8, 0.85, 0.85, 0.9, 0.9]}


def test_evaluate_run_prints_rank5_rank10_and_minp() -> None:
    lines = run_lines(dict(REID), "r1").lines
    assert "rank5              0.8000" in lines and "rank10             0.9000" in lines
    assert "mINP               0.2500" in lines and "mAP                0.5000" in lines
    # every metric the end of `reidbench run` names is there too
    assert "rank-5 0.8000" in summary_line(REID) and "mINP 0.2500" in summary_line(REID)


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "msmt17", "lfw", "ijbb"])
def test_missing_dataset_names_data_root_and_env(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REIDBENCH_DATA", raising=False)
    with pytest.raises(DataNotFound) as exc:
        build_dataset(DataConfig(name=name, root=str(tmp_path / "nowhere")))
    text = str(exc.value)
    assert "--data-root DIR or $REIDBENCH_DATA=DIR" in text
    assert f"data root in effect: {tmp_path / 'nowhere'}, from --data-root" in text
    # an empty data root: the dataset is not in it, same hint, the root's source named
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path))
    with pytest.raises(DataNotFound) as exc:
        build_dataset(DataConfig(name=name))
    assert f"data root in effect: {tmp_path}, from $REIDBENCH_DATA" in str(exc.value)


def test_missing_dataset_with_no_root_set_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REIDBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # ./datasets does not exist here
    assert cli.main(["-q", "data", "check", "market1501"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "neither --data-root nor $REIDBENCH_DATA is set" in err and "--data-root DIR" in err


def test_an_explicit_folder_path_gets_no_data_root_hint(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        build_dataset(DataConfig(name=f"folder:{tmp_path / 'none'}"))
    assert "does not exist" in str(exc.value) and "--data-root" not in str(exc.value)


def test_examples_grid_columns_say_severity() -> None:
    image = np.full((16, 8, 3), 128, np.uint8)
    examples = {(p, s): (image, None) for p in ("scale", "rotate") for s in range(6)}
    fig = examples_figure(examples)
    titles = [ax.get_title() for ax in fig.axes[:6]]
    assert titles == [f"severity {s}" for s in range(6)]
    assert [ax.get_ylabel() for ax in fig.axes[::6]] == ["scale", "rotate"]


@pytest.mark.parametrize("epochs,warmup,peak", [(2, 5, "40%"), (5, 5, "100%"), (1, 3, "33%")])
def test_warmup_longer_than_training_is_noted(epochs: int, warmup: int, peak: str) -> None:
    note = warmup_note(replace(TrainConfig(), epochs=epochs, warmup_epochs=warmup))
    assert note is not None
    assert f"train.epochs={epochs} <= train.warmup_epochs={warmup}" in note
    assert f"reaches {peak} of train.lr" in note and "never leaves its linear warm-up" in note


@pytest.mark.parametrize("epochs,warmup", [(12, 1), (2, 1), (3, 0)])
def test_a_schedule_that_leaves_warmup_gets_no_note(epochs: int, warmup: int) -> None:
    assert warmup_note(replace(TrainConfig(), epochs=epochs, warmup_epochs=warmup)) is None
