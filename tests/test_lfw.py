"""The LFW reader: real layout (hand-built), the synthetic set, 1-fold headers, every error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidbench import cli
from reidbench.config import DataConfig
from reidbench.data.alignment import load_aligned
from reidbench.datasets.base import FACE_KEYPOINTS, FaceSplit, VerificationSet
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.lfw import LFW_ALIGN, read_lfw, read_lfw_split
from reidbench.errors import DatasetError
from reidbench.synthetic.faces import generate_synthetic_faces

PEOPLE = {"Alice_Smith": 3, "Bob_Jones": 2, "Carol_White": 1, "Dan_Brown": 2}
PAIRS_2_FOLDS = (
    "2\t1\n"
    "Alice_Smith\t1\t2\n"
    "Alice_Smith\t3\tCarol_White\t1\n"
    "Bob_Jones\t1\t2\n"
    "Bob_Jones 2   Dan_Brown 1\n"  # any whitespace separates fields
)


def _tiny_lfw(root: Path, pairs: str = PAIRS_2_FOLDS) -> Path:
    for name, count in PEOPLE.items():
        folder = root / "lfw" / name
        folder.mkdir(parents=True)
        for k in range(1, count + 1):
            Image.new("RGB", (8, 8)).save(folder / f"{name}_{k:04d}.jpg")
    (root / "pairs.txt").write_text(pairs)
    return root


def _index(vs, name: str, number: int) -> int:
    paths = [Path(r.path) for r in vs.images]
    return paths.index(vs.root / "lfw" / name / f"{name}_{number:04d}.jpg")


def test_hand_built_tree_two_folds(tmp_path: Path) -> None:
    vs = read_lfw(_tiny_lfw(tmp_path))
    assert vs.name == "lfw" and vs.root == tmp_path
    assert vs.identities == sorted(PEOPLE)
    assert len(vs.images) == sum(PEOPLE.values())
    assert [Path(r.path).name for r in vs.images] == sorted(
        f"{n}_{k:04d}.jpg" for n, c in PEOPLE.items() for k in range(1, c + 1)
    )
    for record in vs.images:
        assert vs.identities[record.pid] == Path(record.path).parent.name
        assert record.camid == 0 and record.keypoints is None
    assert vs.keypoint_schema is None
    expected = [
        (("Alice_Smith", 1), ("Alice_Smith", 2)),
        (("Alice_Smith", 3), ("Carol_White", 1)),
        (("Bob_Jones", 1), ("Bob_Jones", 2)),
        (("Bob_Jones", 2), ("Dan_Brown", 1)),
    ]
    want = np.array([[_index(vs, *a), _index(vs, *b)] for a, b in expected])
    np.testing.assert_array_equal(vs.pairs, want)
    np.testing.assert_array_equal(vs.labels, [1, 0, 1, 0])
    np.testing.assert_array_equal(vs.folds, [0, 0, 1, 1])
    assert vs.num_folds == 2 and vs.pairs.dtype == np.int64


def test_root_may_be_the_image_folder(tmp_path: Path) -> None:
    _tiny_lfw(tmp_path)
    vs = read_lfw(tmp_path / "lfw")
    assert vs.root == tmp_path and len(vs.pairs) == 4


def test_one_fold_header(tmp_path: Path) -> None:
    pairs = (
        "2\n"
        "Alice_Smith\t1\t3\n"
        "Dan_Brown\t1\t2\n"
        "Alice_Smith\t2\tBob_Jones\t1\n"
        "Carol_White\t1\tDan_Brown\t2\n"
        "\n"
    )
    vs = read_lfw(_tiny_lfw(tmp_path, pairs))
    np.testing.assert_array_equal(vs.labels, [1, 1, 0, 0])
    np.testing.assert_array_equal(vs.folds, [0, 0, 0, 0])


def test_reads_the_synthetic_set(tmp_path: Path) -> None:
    manifest = generate_synthetic_faces(
        tmp_path, seed=2, num_ids=12, folds=2, pairs_per_fold=4, num_train_ids=3
    )
    vs = read_lfw(tmp_path)
    counts = manifest["counts"]
    assert len(vs.images) == counts["images"] and len(vs.identities) == counts["identities"]
    assert len(vs.pairs) == counts["pairs"] and vs.num_folds == 2
    assert vs.keypoint_schema is FACE_KEYPOINTS
    assert all(r.keypoints is not None and r.keypoints.shape == (5, 2) for r in vs.images)
    pids = np.array([r.pid for r in vs.images])
    same = pids[vs.pairs[:, 0]] == pids[vs.pairs[:, 1]]
    np.testing.assert_array_equal(same, vs.labels == 1)
    np.testing.assert_array_equal(np.bincount(vs.folds), [8, 8])
    without = read_lfw(tmp_path, landmarks=None)  # default sidecar is picked up
    assert without.images[0].keypoints is not None


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        read_lfw(tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message
    assert "<root>/lfw/<Name>/<Name>_0001.jpg" in message and "<root>/pairs.txt" in message
    assert "http://vis-www.cs.umass.edu/lfw/" in message and "never downloads" in message


def test_root_without_lfw_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no lfw/ folder"):
        read_lfw(tmp_path)


def test_missing_pairs_txt(tmp_path: Path) -> None:
    _tiny_lfw(tmp_path)
    (tmp_path / "pairs.txt").unlink()
    with pytest.raises(DatasetError) as err:
        read_lfw(tmp_path)
    assert str(tmp_path / "pairs.txt") in str(err.value)
    assert "vis-www.cs.umass.edu" in str(err.value)


def test_missing_landmarks_file(tmp_path: Path) -> None:
    _tiny_lfw(tmp_path)
    with pytest.raises(DatasetError, match="landmarks.csv does not exist"):
        read_lfw(tmp_path, landmarks=tmp_path / "landmarks.csv")


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ("two\t1\n", r"pairs\.txt:1: expected a header"),
        ("1\t1\nAlice_Smith\t1\t2\n", r"header says 1 fold\(s\).*2 pair lines.*has 1"),
        (
            "1\t1\nAlice_Smith\t1\tBob_Jones\t2\nAlice_Smith\t1\tBob_Jones\t1\n",
            r"pairs\.txt:2: fold 1 expects a matched pair",
        ),
        (
            "1\t1\nAlice_Smith\t1\t2\nAlice_Smith\t1\t2\n",
            r"pairs\.txt:3: fold 1 expects a mismatched pair",
        ),
        ("1\t1\nAlice_Smith\t1\tx\nAlice_Smith\t1\tBob_Jones\t1\n", r"pairs\.txt:2: image number"),
        (
            "1\t1\nAlice_Smith\t1\t2\nAlice_Smith\t1\tAlice_Smith\t3\n",
            r"pairs\.txt:3: a mismatched pair names 'Alice_Smith' twice",
        ),
    ],
)
def test_malformed_pairs(tmp_path: Path, pairs: str, match: str) -> None:
    _tiny_lfw(tmp_path, pairs)
    with pytest.raises(DatasetError, match=match):
        read_lfw(tmp_path)


def test_pair_to_a_missing_image(tmp_path: Path) -> None:
    pairs = "1\t1\nAlice_Smith\t1\t4\nAlice_Smith\t1\tBob_Jones\t1\n"
    _tiny_lfw(tmp_path, pairs)
    with pytest.raises(DatasetError) as err:
        read_lfw(tmp_path)
    message = str(err.value)
    assert "pairs.txt:2" in message
    assert str(tmp_path / "lfw" / "Alice_Smith" / "Alice_Smith_0004.jpg") in message


def test_data_root_holding_the_lfw_folder_and_other_image_folder_names(tmp_path: Path) -> None:
    _tiny_lfw(tmp_path / "lfw")  # <data root>/lfw/{lfw/, pairs.txt}, as datasets/lfw/
    assert read_lfw(tmp_path).root == tmp_path / "lfw"
    (tmp_path / "lfw" / "lfw").rename(tmp_path / "lfw" / "lfw-deepfunneled")
    vs = read_lfw(tmp_path / "lfw")
    assert Path(vs.images[0].path).parent.parent.name == "lfw-deepfunneled"


def test_records_carry_the_documented_alignment(tmp_path: Path) -> None:
    vs = read_lfw(_tiny_lfw(tmp_path))
    assert all(r.align == LFW_ALIGN for r in vs.images)
    assert LFW_ALIGN.size == 112 and LFW_ALIGN.center_fraction == 0.6
    image, kps = load_aligned(vs.images[0], np.zeros((250, 250, 3), np.uint8))
    assert image.shape == (112, 112, 3) and kps is None  # no landmarks: centre crop


def test_landmarks_align_onto_the_template(tmp_path: Path) -> None:
    from reidbench.data.alignment import ARCFACE_TEMPLATE, to_normalised, to_pixels
    from reidbench.datasets.keypoints import write_keypoints_csv

    _tiny_lfw(tmp_path)
    lm = ARCFACE_TEMPLATE * 2.0 + 10.0  # pixel landmarks in a 250x250 image
    rows = {f"lfw/{n}/{n}_0001.jpg": to_normalised(lm, (250, 250)) for n in PEOPLE}
    write_keypoints_csv(tmp_path / "landmarks.csv", rows, FACE_KEYPOINTS.names)
    vs = read_lfw(tmp_path)
    record = vs.images[0]
    assert record.keypoints is not None and vs.keypoint_schema is FACE_KEYPOINTS
    _, kps = load_aligned(record, np.zeros((250, 250, 3), np.uint8))
    np.testing.assert_allclose(to_pixels(kps, (112, 112)), ARCFACE_TEMPLATE, atol=1e-3)


def test_other_keypoint_counts_are_kept_as_keypoints(tmp_path: Path) -> None:
    from reidbench.datasets.keypoints import write_keypoints_csv

    _tiny_lfw(tmp_path)
    write_keypoints_csv(tmp_path / "marks.csv", {"lfw/Bob_Jones/Bob_Jones_0001.jpg": np.zeros((3, 2))})
    vs = read_lfw(tmp_path, landmarks=tmp_path / "marks.csv")
    assert vs.keypoint_schema.num_keypoints == 3
    assert sum(r.keypoints is not None for r in vs.images) == 1


def test_train_folder_makes_a_face_split(tmp_path: Path) -> None:
    _tiny_lfw(tmp_path)
    assert isinstance(read_lfw_split(tmp_path), VerificationSet)  # real LFW: test only
    for name in ("Zed_One", "Yan_Two"):
        for k in (1, 2):
            (tmp_path / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(tmp_path / "train" / name / f"{name}_{k:04d}.jpg")
    split = read_lfw_split(tmp_path)
    assert isinstance(split, FaceSplit) and split.num_train_pids == 2
    assert [r.pid for r in split.train] == [0, 0, 1, 1]  # Yan_Two sorts first
    assert all(r.align == LFW_ALIGN for r in split.train)
    assert build_dataset(DataConfig(name="lfw", root=str(tmp_path))).train == split.train


def test_run_on_a_synthetic_faces_root_as_lfw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_synthetic_faces(tmp_path / "sf", seed=0, num_ids=24, num_train_ids=12)
    code = cli.main(
        [
            "-q",
            "run",
            "--model",
            "ape",
            "--dataset",
            "lfw",
            "--data-root",
            str(tmp_path / "sf"),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--set",
            "model.depth=1",
            "--set",
            "data.height=56",
            "--set",
            "data.width=56",
            "--output",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "verification" and metrics["num_folds"] == 10
    assert 0.0 <= metrics["accuracy"] <= 1.0
