"""folder:<path>: the documented split and pairs on the real ORL faces, sidecars, errors, and
a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ORL_FACES, write_jpeg

from reidbench import cli
from reidbench.config import DataConfig, resolve_config
from reidbench.datasets.base import FACE_KEYPOINTS, ReidSplit
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.folder import read_folder_dataset, read_identity_folders
from reidbench.datasets.keypoints import write_keypoints_csv
from reidbench.engine.run import run_experiment
from reidbench.errors import DatasetError


@pytest.fixture(scope="module")
def orl() -> ReidSplit:
    return read_folder_dataset(ORL_FACES, name="folder:orl")


@pytest.mark.usefixtures("shared_data")
def test_orl_split_counts(orl: ReidSplit) -> None:
    assert [len(orl.train), len(orl.query), len(orl.gallery)] == [200, 20, 180]
    assert orl.num_train_pids == 20 and sorted({r.pid for r in orl.train}) == list(range(20))
    test_ids = {r.pid for r in orl.query}
    assert test_ids == {r.pid for r in orl.gallery} and len(test_ids) == 20
    train_people = {Path(r.path).parent.name for r in orl.train}
    test_people = {Path(r.path).parent.name for r in orl.query}
    assert not train_people & test_people and len(train_people | test_people) == 40
    assert {r.camid for r in orl.query} == {0} and {r.camid for r in orl.gallery} == {1}
    assert all(r.path.endswith(".pgm") for r in orl.train)


@pytest.mark.usefixtures("shared_data")
def test_orl_verification_folds(orl: ReidSplit) -> None:
    vs = orl.verification
    assert vs is not None and vs.num_folds == 10 and len(vs.pairs) == 1800
    pids = np.array([r.pid for r in vs.images])
    same = pids[vs.pairs[:, 0]] == pids[vs.pairs[:, 1]]
    np.testing.assert_array_equal(same, vs.labels == 1)
    np.testing.assert_array_equal(np.bincount(vs.folds), [180] * 10)
    for f in range(10):  # 90 matched then 90 mismatched per fold, as pairs.txt orders them
        np.testing.assert_array_equal(vs.labels[vs.folds == f], [1] * 90 + [0] * 90)
    assert len({tuple(p) for p in vs.pairs.tolist()}) == 1800  # no pair twice
    assert (vs.pairs[:, 0] < vs.pairs[:, 1]).all()
    fold_of_person: dict[int, set[int]] = {}
    for (i, j), f in zip(vs.pairs, vs.folds):
        for k in (i, j):
            fold_of_person.setdefault(int(pids[k]), set()).add(int(f))
    assert all(len(f) == 1 for f in fold_of_person.values())  # identity-disjoint folds
    assert {vs.identities[p] for p in pids} == {Path(r.path).parent.name for r in orl.query}


@pytest.mark.usefixtures("shared_data")
def test_seeded_and_deterministic(orl: ReidSplit) -> None:
    again = read_folder_dataset(ORL_FACES, name="folder:orl")
    assert again.train == orl.train and again.query == orl.query
    np.testing.assert_array_equal(again.verification.pairs, orl.verification.pairs)
    other = read_folder_dataset(ORL_FACES, seed=1)
    assert {r.path for r in other.query} != {r.path for r in orl.query}


@pytest.mark.usefixtures("shared_data")
def test_registered_as_folder_prefix_and_with_data_root() -> None:
    by_prefix = build_dataset(DataConfig(name=f"folder:{ORL_FACES}"))
    by_root = build_dataset(DataConfig(name="folder", root=str(ORL_FACES)))
    assert by_prefix.train == by_root.train and by_prefix.name == f"folder:{ORL_FACES}"
    assert resolve_config(f"folder:{ORL_FACES}").data.height == 112  # the folder preset
    with pytest.raises(DatasetError, match="needs a path"):
        build_dataset(DataConfig(name="folder:"))


def small_tree(root: Path, counts: dict[str, int]) -> Path:
    for person, n in counts.items():
        for k in range(n):
            write_jpeg(root / person / f"{k}.png", seed=k, size=(20, 24))
    return root


def test_small_collections(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "c", {"a": 3, "b": 1, "c": 2, "d": 4, "e": 2})
    (tree / "empty").mkdir()
    (tree / "a" / "notes.txt").write_text("not an image")
    split = read_folder_dataset(tree)
    assert len(split.train) + len(split.query) + len(split.gallery) == 12
    assert split.verification is not None and split.verification.num_folds == 1
    assert read_identity_folders(tree, tree)[-1].pid == 4  # the empty folder is no identity


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ({"a": 2, "b": 2}, "needs at least 3"),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, "no test identity"),
    ],
)
def test_collections_too_small(tmp_path: Path, counts: dict[str, int], match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        read_folder_dataset(small_tree(tmp_path / "c", counts))


def test_missing_and_empty_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*<identity>/<image>"):
        read_folder_dataset(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        read_folder_dataset(tmp_path)


def test_face_landmark_sidecar_turns_on_alignment(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "c", {"a": 2, "b": 2, "c": 2, "d": 2})
    rows = {f"{p}/{k}.png": np.full((5, 2), 0.5) + 0.01 * k for p in "abcd" for k in range(2)}
    write_keypoints_csv(tree / "keypoints.csv", rows, FACE_KEYPOINTS.names)
    split = read_folder_dataset(tree)
    assert split.keypoint_schema == FACE_KEYPOINTS
    assert all(r.align is not None and r.keypoints is not None for r in split.train)
    write_keypoints_csv(tree / "keypoints.csv", {k: np.zeros((3, 2)) for k in rows})
    split = read_folder_dataset(tree)  # any other keypoints: handed on, no alignment
    assert split.keypoint_schema.num_keypoints == 3 and split.train[0].align is None


@pytest.mark.usefixtures("shared_data")
def test_run_end_to_end_on_orl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["model.depth=1", "data.height=56", "data.width=48", "train.batch_size=32"]
    cfg = resolve_config(
        f"folder:{ORL_FACES}",
        "ape",
        flags={"train": {"epochs": 1}, "output": str(tmp_path / "a")},
        overrides=overrides,
    )
    run_dir, metrics = run_experiment(cfg)
    assert metrics["task"] == "reid" and metrics["num_valid_queries"] == 20
    assert (run_dir / "metrics.json").is_file()
    # the command line, with the collection as --data-root
    code = cli.main(
        [
            "-q",
            "run",
            "--model",
            "ape",
            "--dataset",
            "folder",
            "--data-root",
            str(ORL_FACES),
            "--epochs",
            "1",
            "--output",
            str(tmp_path / "b"),
            *[a for o in overrides for a in ("--set", o)],
        ]
    )
    assert code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "b").iterdir()
    assert json.loads((run / "metrics.json").read_text())["num_query"] == 20
