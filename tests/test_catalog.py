"""Dataset registry and data roots: synthetic sets generated on demand, never over real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_market_tree

from reidbench import cli
from reidbench.config import DataConfig
from reidbench.datasets.base import ReidSplit, VerificationSet
from reidbench.datasets.catalog import build_dataset, data_root
from reidbench.errors import DatasetError


def test_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REIDBENCH_DATA", raising=False)
    assert data_root(None) == Path("datasets")
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path))
    assert data_root(None) == tmp_path
    assert data_root("/x") == Path("/x")


def test_synthetic_reid_generated_once_then_reused(tmp_path: Path) -> None:
    cfg = DataConfig(name="synthetic-reid", root=str(tmp_path), synth_ids=12)
    split = build_dataset(cfg)
    assert isinstance(split, ReidSplit) and split.keypoint_schema is not None
    assert all(r.keypoints is not None and r.keypoints.shape == (10, 2) for r in split.train)
    manifest = tmp_path / "synthetic-reid" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path)))  # any size accepted
    assert manifest.stat().st_mtime_ns == stamp
    build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path), synth_ids=14))
    assert json.loads(manifest.read_text())["num_ids"] == 14  # explicit size differs: regenerated


def test_synthetic_root_may_be_the_set_itself(tmp_path: Path) -> None:
    build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path), synth_ids=12))
    split = build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path / "synthetic-reid")))
    assert isinstance(split, ReidSplit) and len(split.query) > 0


def test_synthetic_never_written_over_foreign_data(tmp_path: Path) -> None:
    make_market_tree(tmp_path / "synthetic-reid")
    with pytest.raises(DatasetError, match="refusing"):
        build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path)))


def test_synthetic_faces_is_a_verification_set(tmp_path: Path) -> None:
    vs = build_dataset(DataConfig(name="synthetic-faces", root=str(tmp_path), synth_ids=24))
    assert isinstance(vs, VerificationSet) and vs.keypoint_schema is not None
    assert vs.pairs.shape[1] == 2 and set(vs.labels.tolist()) == {0, 1}


def test_cli_synth_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("synthetic-reid", "synthetic-faces"):
        root = tmp_path / name
        assert cli.main(["-q", "data", "synth", name, "--root", str(root), "--ids", "40",
                         "--seed", "3"]) == 0
        assert json.loads((root / "manifest.json").read_text())["seed"] == 3
        out = tmp_path / f"{name}.png"
        assert cli.main(["-q", "data", "preview", name, "--data-root", str(root), "--out",
                         str(out), "--num", "8"]) == 0
        assert out.stat().st_size > 1000
    assert cli.main(["-q", "data", "list"]) == 0
    assert "synthetic-reid" in capsys.readouterr().out


def test_run_on_synthetic_reid_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "run", "--dataset", "synthetic-reid", "--data-root", str(tmp_path / "d"),
                     "--epochs", "1", "--batch-size", "16", "--output", str(tmp_path / "runs"),
                     "--set", "data.synth_ids=20", "--set", "model.depth=1"])
    assert code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_valid_queries"] > 0 and 0 < metrics["mAP"] <= 1


def test_verification_set_cannot_be_trained_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "run", "--dataset", "synthetic-faces", "--data-root", str(tmp_path),
                     "--set", "data.synth_ids=24", "--output", str(tmp_path / "runs")])
    assert code == 2 and "verification set" in capsys.readouterr().err


def test_synth_arguments_that_cannot_work_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["-q", "data", "synth", "synthetic-faces", "--root", str(tmp_path), "--ids", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("reidbench: error: ") and len(err.splitlines()) == 1


def test_synthetic_generated_beside_a_committed_readme(tmp_path: Path) -> None:
    (tmp_path / "synthetic-reid").mkdir()
    (tmp_path / "synthetic-reid" / "README.md").write_text("docs")
    split = build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path), synth_ids=12))
    assert isinstance(split, ReidSplit)
    assert (tmp_path / "synthetic-reid" / "README.md").read_text() == "docs"
