"""Dataset registry and data roots: synthetic sets generated on demand, never over real data."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_market_tree

from reidbench import cli
from reidbench.config import DataConfig
from reidbench.datasets.base import FaceSplit, ReidSplit
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
    # the reader finds exactly what the generator says it wrote (junk -1 files left out)
    written = json.loads(manifest.read_text())
    counts, files = written["counts"], written["files"]
    junk = {folder: sum(f.startswith(f"{folder}/-1_") for f in files) for folder in counts}
    assert len(split.train) == counts["bounding_box_train"] - junk["bounding_box_train"]
    assert len(split.query) == counts["query"] - junk["query"]
    assert len(split.gallery) == counts["bounding_box_test"] - junk["bounding_box_test"]
    assert sum(counts.values()) == sum(f.split("/")[0] in counts for f in files)
    train_ids = {r.pid for r in split.train}
    test_ids = {r.pid for r in split.query} | {r.pid for r in split.gallery if r.pid != 0}  # 0: distractors
    assert train_ids == set(range(len(train_ids)))  # relabelled
    assert len(train_ids) + len(test_ids) == written["num_ids"] == 12
    # keypoints are the sidecar's rows, joined by file name
    with (tmp_path / "synthetic-reid" / "keypoints.csv").open() as fh:
        sidecar = {r["path"]: [float(v) for k, v in r.items() if k != "path"] for r in csv.DictReader(fh)}
    for record in split.query + split.gallery[:5]:
        key = Path(record.path).relative_to(tmp_path / "synthetic-reid").as_posix()
        assert record.keypoints.reshape(-1).tolist() == pytest.approx(sidecar[key], abs=1e-6)
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


def test_synthetic_faces_has_train_identities_and_pairs(tmp_path: Path) -> None:
    data = build_dataset(DataConfig(name="synthetic-faces", root=str(tmp_path), synth_ids=24,
                                    synth_train_ids=10))
    assert isinstance(data, FaceSplit) and data.keypoint_schema is not None
    vs = data.verification
    assert vs.pairs.shape[1] == 2 and set(vs.labels.tolist()) == {0, 1}
    assert all(r.keypoints is not None and r.keypoints.shape == (5, 2) for r in data.train)
    train_people = {Path(r.path).parent.name for r in data.train}
    assert not train_people & set(vs.identities)  # training identities are never verified
    assert sorted({r.pid for r in data.train}) == list(range(len(train_people)))
    # the reader finds exactly what the generator says it wrote
    counts = json.loads((tmp_path / "synthetic-faces" / "manifest.json").read_text())["counts"]
    assert (len(data.train), len(train_people)) == (counts["train_images"], counts["train_identities"]) == (
        counts["train_images"], 10)
    assert (len(vs.images), len(vs.identities)) == (counts["images"], counts["identities"])
    assert len(vs.labels) == counts["pairs"] == counts["matched_pairs"] + counts["mismatched_pairs"]
    assert int(vs.labels.sum()) == counts["matched_pairs"]
    per_fold = Counter(zip(vs.folds.tolist(), vs.labels.tolist()))  # LFW: n matched + n mismatched each
    assert per_fold == {(f, y): counts["pairs_per_fold"] for f in range(counts["folds"]) for y in (0, 1)}
    same = [vs.images[a].pid == vs.images[b].pid for a, b in vs.pairs]
    assert same == [bool(y) for y in vs.labels]  # a matched pair is one person, a mismatched two


def test_cli_synth_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("synthetic-reid", "synthetic-faces"):
        root = tmp_path / name
        extra = ["--train-ids", "6"] if name == "synthetic-faces" else []
        assert cli.main(["-q", "data", "synth", name, "--root", str(root), "--ids", "40",
                         "--seed", "3", *extra]) == 0
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


def test_run_on_synthetic_faces_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-q", "run", "--dataset", "synthetic-faces", "--data-root", str(tmp_path),
                     "--set", "data.synth_ids=24", "--set", "data.synth_train_ids=12",
                     "--epochs", "1", "--batch-size", "16",
                     "--set", "model.depth=1", "--output", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "verification" and metrics["num_pairs"] == 600
    assert 0 <= metrics["accuracy"] <= 1 and metrics["num_folds"] == 10
    assert metrics["tar_at_far"]["1e-06"] is None  # 300 negatives cannot resolve FAR 1e-6


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


def test_unspecified_settings_never_regenerate_a_users_set(tmp_path: Path) -> None:
    from reidbench.synthetic.reid import generate_synthetic_reid

    generate_synthetic_reid(tmp_path, seed=3, num_ids=12)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    build_dataset(DataConfig(name="synthetic-reid", root=str(tmp_path)))
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 3
