"""Config layering, --set parsing and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reidbench.config import RunConfig, from_dict, parse_override, resolve_config, to_dict
from reidbench.errors import ConfigError
from reidbench.reporting.records import write_run_config


def test_presets_apply_in_order(tmp_path: Path) -> None:
    user = tmp_path / "exp.yaml"
    user.write_text("train:\n  lr: 1.0e-3\n  epochs: 3\n")
    cfg = resolve_config("market1501", "ape", user, {"train": {"epochs": 5}}, ["train.epochs=7"])
    assert cfg.data.height == 256 and cfg.model.patch_size == 16  # dataset preset
    assert cfg.train.lr == 1e-3  # user file over presets
    assert cfg.train.epochs == 7  # --set over flags over file


def test_synthetic_defaults() -> None:
    cfg = resolve_config()
    assert (cfg.data.name, cfg.model.name) == ("synthetic-reid", "ape")
    assert (cfg.data.height, cfg.data.width, cfg.model.patch_size) == (128, 64, 8)


def test_set_values_are_typed() -> None:
    cfg = resolve_config(overrides=["train.lr=3e-4", "loss.terms=ce,triplet", "loss.weights=1,0.5",
                                    "train.grad_clip=null", "data.cache_images=false"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.loss.terms == ("ce", "triplet") and cfg.loss.weights == (1.0, 0.5)
    assert cfg.train.grad_clip is None and cfg.data.cache_images is False


@pytest.mark.parametrize("text,match", [
    ("train.lr", "expected key=value"),
    ("=3", "expected key=value"),
    ("train..lr=1", "expected key=value"),
    ("train.nope=1", "unknown config key train.nope"),
    ("train.epochs=many", "train.epochs expects int"),
    ("train.epochs=1.5", "train.epochs expects int"),
    ("train=3", "train must be a mapping"),
])
def test_malformed_overrides(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_config(overrides=[text])


def test_parse_override_nests() -> None:
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve_config(overrides=["train.epochs=2"])
    write_run_config(cfg, tmp_path / "c.yaml")
    assert from_dict(RunConfig, yaml.safe_load((tmp_path / "c.yaml").read_text())) == cfg
    assert to_dict(cfg)["train"]["epochs"] == 2


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(config_file=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(config_file=tmp_path / "missing.yaml")
