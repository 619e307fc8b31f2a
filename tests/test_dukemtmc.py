"""DukeMTMC-reID: its original layout, torchreid's records, its 8 cameras and its errors."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import make_market_tree, write_jpeg
from test_market1501 import assert_same_as_torchreid

from reidbench.config import DataConfig
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.dukemtmc import DUKEMTMC, read_dukemtmc
from reidbench.errors import DatasetError

# Duke names: PPPP_cC_fFFFFFFF.jpg; train ids 5, 12, 7140; query/gallery share 1 and 3 across
# cameras 1-8; 0008 is a gallery-only identity (Duke's 408 distractor identities are such).
DUKE_FILES = {
    "bounding_box_train": [
        "0005_c1_f0046182.jpg",
        "0005_c5_f0051372.jpg",
        "0012_c2_f0046937.jpg",
        "0012_c7_f0160512.jpg",
        "7140_c8_f0224501.jpg",
        "7140_c3_f0102233.jpg",
    ],
    "query": ["0001_c2_f0046182.jpg", "0003_c6_f0090001.jpg"],
    "bounding_box_test": [
        "0001_c1_f0045021.jpg",
        "0001_c5_f0048892.jpg",
        "0003_c8_f0123457.jpg",
        "0003_c6_f0091001.jpg",
        "0008_c4_f0077777.jpg",
    ],
}


def duke_tree(root: Path) -> Path:
    return make_market_tree(root, DUKE_FILES)


def records(split: object) -> dict[str, list[tuple[str, int, int]]]:
    return {
        s: sorted((os.path.realpath(r.path), r.pid, r.camid) for r in getattr(split, s))
        for s in ("train", "query", "gallery")
    }


def test_same_records_as_torchreid(tmp_path: Path) -> None:
    tree = duke_tree(tmp_path / "dukemtmc-reid" / "DukeMTMC-reID")  # torchreid's location
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.data.datasets.image.dukemtmcreid import DukeMTMCreID

        theirs = DukeMTMCreID(root=str(tmp_path), verbose=False)
    expected = {
        s: sorted((os.path.realpath(p), pid, cam) for p, pid, cam, _ in getattr(theirs, s))
        for s in ("train", "query", "gallery")
    }
    for root in (tmp_path, tree):  # a data root above it, or the folder itself
        assert_same_as_torchreid(records(read_dukemtmc(root)), expected)


def test_semantics(tmp_path: Path) -> None:
    split = read_dukemtmc(duke_tree(tmp_path / "DukeMTMC-reID"))
    assert split.name == "dukemtmc"
    assert sorted({r.pid for r in split.train}) == [0, 1, 2]
    assert [r.pid for r in split.train if "7140_" in r.path] == [2, 2]  # sorted relabel
    assert {r.camid for r in split.train} == {0, 1, 2, 4, 6, 7}  # camera 8 -> 7
    assert [r.pid for r in split.query] == [1, 3]
    assert 8 in {r.pid for r in split.gallery}
    assert [r.path for r in split.gallery] == sorted(r.path for r in split.gallery)


def test_registered_and_read_from_the_data_root(tmp_path: Path) -> None:
    duke_tree(tmp_path / "DukeMTMC-reID")
    split = build_dataset(DataConfig(name="dukemtmc", root=str(tmp_path)))
    assert len(split.train) == 6 and len(split.gallery) == 5


@pytest.mark.parametrize(
    "name", ["0001_c9_f0000001.jpg", "0001_c0_f0000001.jpg", "0001c1_f0000001.jpg", "abcd_c1_f0000001.jpg"]
)
def test_wrong_file_names_are_named(tmp_path: Path, name: str) -> None:
    tree = duke_tree(tmp_path / "DukeMTMC-reID")
    write_jpeg(tree / "query" / name)
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")) as err:
        read_dukemtmc(tree)
    assert "PPPP_cC_fFFFFFFF.jpg" in str(err.value) or "camera 1..8" in str(err.value)


def test_missing_folder_shows_tree_and_source(tmp_path: Path) -> None:
    tree = duke_tree(tmp_path / "DukeMTMC-reID")
    shutil.rmtree(tree / "bounding_box_test")
    with pytest.raises(DatasetError) as err:
        read_dukemtmc(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and DUKEMTMC.expected_tree() in message
    assert "DukeMTMC-reID_evaluation" in message


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*never downloads"):
        read_dukemtmc(tmp_path / "nope")
