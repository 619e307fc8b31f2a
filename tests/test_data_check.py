"""`reidbench data check` and `data list`: counts per split against the published statistics,
subsets reported as subsets, unreadable images, one-line errors; keypoint sidecar schemas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET, ORL_FACES, make_market_tree
from test_ijb import ijb_tree

from reidbench import cli
from reidbench.datasets.base import BODY_KEYPOINTS, FACE_KEYPOINTS
from reidbench.datasets.catalog import dataset_info
from reidbench.datasets.checks import compare_published, unreadable_images
from reidbench.datasets.keypoints import read_sidecar, write_keypoints_csv
from reidbench.datasets.market1501 import read_market_layout


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["-q", "data", "check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.usefixtures("shared_data")
def test_mini_market_is_a_subset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, "market1501", "--data-root", str(MINI_MARKET), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["splits"]["train"] == {"images": 32, "ids": 16, "cams": 6}
    assert report["published"]["train"] == {"images": 12936, "ids": 751, "cams": 6}
    assert report["status"] == {"train": "subset", "query": "subset", "gallery": "subset"}
    assert report["images_checked"] == 96 and report["unreadable"] == []
    code, table, _ = check(capsys, "market1501", "--data-root", str(MINI_MARKET))
    assert code == 0 and "subset (published: images 12,936, ids 751, cams 6)" in table


def test_compare_published() -> None:
    published = {"train": {"images": 10, "ids": 2, "cams": 2}, "test": {"pairs": 6}}
    counts = {
        "train": {"images": 10, "ids": 2, "cams": 2},
        "test": {"images": 3, "pairs": 7},
        "query": {"images": 1},
    }
    assert compare_published(counts, published) == {"train": "full", "test": "differs", "query": "n/a"}
    counts["train"]["images"] = 9
    assert compare_published(counts, published)["train"] == "subset"


@pytest.mark.usefixtures("shared_data")
def test_face_and_template_sets_report_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, f"folder:{ORL_FACES}", "--json", "--images", "none")
    report = json.loads(out)
    assert code == 0 and report["splits"]["pairs"]["pairs"] == 1800
    assert report["splits"]["pairs"]["folds"] == 10 and report["status"]["train"] == "n/a"
    ijb_tree(tmp_path / "IJBB")
    code, out, _ = check(capsys, "ijbb", "--data-root", str(tmp_path), "--json")
    test = json.loads(out)["splits"]["test"]
    assert code == 0 and test["templates"] == 5 and test["pairs"] == 6 and test["ids"] is None
    assert test["media"] == 7 and test["genuine"] == 2
    assert json.loads(out)["status"]["test"] == "subset"


def test_corrupt_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    (tree / "query" / "0001_c1s1_001051_00.jpg").write_bytes(b"not a jpeg at all")
    gallery = tree / "bounding_box_test" / "0001_c1s1_001101_01.jpg"
    data = gallery.read_bytes()
    gallery.write_bytes(data[: len(data) * 6 // 10])  # truncated: the header still parses
    code, out, err = check(capsys, "market1501", "--data-root", str(tmp_path))
    assert code == 2 and "1 unreadable" in out and "0001_c1s1_001051_00.jpg" in out
    assert err.startswith("reidbench: error: market1501: 1 unreadable") and len(err.splitlines()) == 1
    code, out, _ = check(capsys, "market1501", "--data-root", str(tmp_path), "--images", "decode")
    assert code == 2 and "2 unreadable" in out and gallery.name in out
    code, _, _ = check(capsys, "market1501", "--data-root", str(tmp_path), "--images", "none")
    assert code == 0
    paths = [str(tree / "query" / "0003_c3s2_012345_00.jpg")]
    assert unreadable_images(paths, "decode") == []


@pytest.mark.parametrize("name", ["market1501", "dukemtmc", "msmt17", "lfw", "ijbb", "ijbc"])
def test_missing_tree_is_one_line_naming_path_tree_and_source(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    code, _, err = check(capsys, name, "--data-root", str(tmp_path / "absent"))
    assert code == 2 and len(err.splitlines()) == 1
    assert str(tmp_path / "absent") in err and "never downloads" in err
    assert dataset_info(name).source.split(" ")[0] in err


def test_list_shows_every_dataset_with_its_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("market1501", "dukemtmc", "msmt17", "lfw", "ijbb", "ijbc", "folder"):
        assert name in out and dataset_info(name).tree in out


def test_sidecar_schema_from_its_header(tmp_path: Path) -> None:
    names = ("nose", "left_eye", "right_eye", "left_hip", "right_hip", "tail")
    path = tmp_path / "k.csv"
    write_keypoints_csv(path, {"a.jpg": np.zeros((6, 2))}, names)
    _, schema = read_sidecar(path, BODY_KEYPOINTS)
    assert schema.names == names and schema.flip_pairs == ((1, 2), (3, 4))
    write_keypoints_csv(path, {"a.jpg": np.zeros((5, 2))})  # no header, K = 5
    assert read_sidecar(path, FACE_KEYPOINTS)[1] is FACE_KEYPOINTS
    assert read_sidecar(path, BODY_KEYPOINTS)[1].names == tuple(f"kp{i}" for i in range(5))


def test_market_accepts_any_detector_keypoints(market_tree: Path) -> None:
    names = tuple(f"{side}_{part}" for part in ("eye", "ear", "knee") for side in ("left", "right"))
    write_keypoints_csv(
        market_tree / "keypoints.csv", {"query/0001_c1s1_001051_00.jpg": np.full((6, 2), 0.5)}, names
    )
    split = read_market_layout(market_tree)
    assert split.keypoint_schema.num_keypoints == 6
    assert split.keypoint_schema.flip_pairs == ((0, 1), (2, 3), (4, 5))
