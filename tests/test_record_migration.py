"""Records written before issue 15's keys existed read as what those runs did (random
initialisation, fp32); nothing else is ever filled in, and a recorded value is never replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reidbench.config import resolve_config, to_dict
from reidbench.errors import ConfigError
from reidbench.reporting.records import MIGRATIONS, read_run_config


def write(tree: dict, path: Path) -> Path:  # type: ignore[type-arg]
    path.write_text(yaml.safe_dump(tree))
    return path


def test_an_old_record_reads_as_random_init_in_fp32(tmp_path: Path) -> None:
    cfg = resolve_config(dataset="synthetic-reid")
    tree = to_dict(cfg)
    del tree["model"]["pretrained"], tree["model"]["pretrained_grid"], tree["train"]["precision"]
    got = read_run_config(write(tree, tmp_path / "config.yaml"))
    assert got == cfg
    assert (got.model.pretrained, got.model.pretrained_grid, got.train.precision) == (None, (), "fp32")


def test_a_recorded_value_is_kept_and_other_gaps_stay_errors(tmp_path: Path) -> None:
    cfg = resolve_config(dataset="synthetic-reid", overrides=["train.precision=bf16"])
    tree = to_dict(cfg)
    assert read_run_config(write(tree, tmp_path / "a.yaml")).train.precision == "bf16"
    del tree["train"]["lr"]
    with pytest.raises(ConfigError, match="lacks train.lr"):
        read_run_config(write(tree, tmp_path / "b.yaml"))
    assert {"model.pretrained", "model.pretrained_grid", "train.precision"} <= set(MIGRATIONS)
