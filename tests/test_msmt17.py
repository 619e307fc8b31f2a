"""MSMT17: list files in the V1 and V2 layouts, torchreid's records, every malformed line."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jpeg

from reidbench.config import DataConfig
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.keypoints import write_keypoints_csv
from reidbench.datasets.msmt17 import read_msmt17, read_msmt17_lists
from reidbench.errors import DatasetError

# (folder, list, [(relative path, pid)]): the lists relabel pids themselves (train 0..P-1,
# test 0..Q-1), independent of the folder names, as the real ones do.
LISTS = {
    "list_train.txt": (
        "train",
        [
            ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
            ("0000/0000_001_05_0303noon_0120_1.jpg", 0),
            ("0003/0003_000_15_0302afternoon_0001_0.jpg", 1),
            ("0003/0003_004_02_0303morning_0788_2.jpg", 1),
            ("0007/0007_002_11_0113morning_0022_0.jpg", 2),
        ],
    ),
    "list_val.txt": (
        "train",
        [
            ("0000/0000_002_03_0303morning_0099_0.jpg", 0),
            ("0007/0007_003_12_0113noon_0321_1.jpg", 2),
        ],
    ),
    "list_query.txt": (
        "test",
        [
            ("0000/0000_000_01_0303morning_0008_0.jpg", 0),
            ("0001/0001_000_07_0114morning_0101_0.jpg", 1),
        ],
    ),
    "list_gallery.txt": (
        "test",
        [
            ("0000/0000_001_04_0303noon_0555_0.jpg", 0),
            ("0000/0000_002_01_0303noon_0560_1.jpg", 0),
            ("0001/0001_001_09_0114noon_0431_0.jpg", 1),
            ("0002/0002_000_13_0114noon_0002_0.jpg", 2),
        ],
    ),
}


def msmt_tree(version_dir: Path, v2: bool = False) -> Path:
    dirs = {"train": "mask_train_v2" if v2 else "train", "test": "mask_test_v2" if v2 else "test"}
    for list_name, (part, rows) in LISTS.items():
        for i, (rel, _) in enumerate(rows):
            write_jpeg(version_dir / dirs[part] / rel, seed=i)
        (version_dir / list_name).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    return version_dir


def torchreid_records(root: Path) -> dict[str, list[tuple[str, int, int]]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.data.datasets.image.msmt17 import MSMT17

        ds = MSMT17(root=str(root), verbose=False)
    return {
        s: [(os.path.realpath(p), pid, cam) for p, pid, cam, _ in getattr(ds, s)]
        for s in ("train", "query", "gallery")
    }


def our_records(split: object) -> dict[str, list[tuple[str, int, int]]]:
    return {
        s: [(os.path.realpath(r.path), r.pid, r.camid) for r in getattr(split, s)]
        for s in ("train", "query", "gallery")
    }


@pytest.mark.parametrize("v2", [False, True])
def test_same_records_as_torchreid_in_list_order(tmp_path: Path, v2: bool) -> None:
    version = msmt_tree(tmp_path / "msmt17" / ("MSMT17_V2" if v2 else "MSMT17_V1"), v2)
    theirs = torchreid_records(tmp_path)
    for root in (tmp_path, tmp_path / "msmt17", version):
        assert our_records(read_msmt17(root)) == theirs


def test_val_is_read_but_not_trained_on(tmp_path: Path) -> None:
    msmt_tree(tmp_path / "MSMT17_V1")
    _, lists, _ = read_msmt17_lists(tmp_path)
    assert [len(lists[s]) for s in ("train", "val", "query", "gallery")] == [5, 2, 2, 4]
    split = read_msmt17(tmp_path)
    assert len(split.train) == 5 and split.num_train_pids == 3
    assert [r.camid for r in split.train] == [0, 4, 14, 1, 10]


def test_trimmed_train_list_is_relabelled(tmp_path: Path) -> None:
    version = msmt_tree(tmp_path / "MSMT17_V1")
    rows = LISTS["list_train.txt"][1]
    (version / "list_train.txt").write_text("".join(f"{r} {p}\n" for r, p in rows if p != 1))
    split = read_msmt17(tmp_path)
    assert sorted({r.pid for r in split.train}) == [0, 1]  # pids 0, 2 -> 0, 1


def test_registered_with_keypoint_sidecar(tmp_path: Path) -> None:
    version = msmt_tree(tmp_path / "msmt17" / "MSMT17_V1")
    rows = {f"test/{LISTS['list_query.txt'][1][0][0]}": np.full((17, 2), 0.5)}
    write_keypoints_csv(version / "keypoints.csv", rows)
    split = build_dataset(DataConfig(name="msmt17", root=str(tmp_path)))
    assert split.keypoint_schema is not None and split.keypoint_schema.num_keypoints == 17
    assert split.query[0].keypoints is not None and split.query[1].keypoints is None


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0000/0000_000_01_0303morning_0015_0.jpg", r"list_train\.txt:3: expected"),  # truncated
        ("0000/0000_000_01_0303morning_0015_0.jpg 0 extra", r"list_train\.txt:3: expected"),
        ("0000/0000_000_01_0303morning_0015_0.jpg x", r"list_train\.txt:3: expected"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", r"list_train\.txt:3:.*camera 01\.\.15"),
        ("0000/0000.jpg 0", r"list_train\.txt:3:.*is not"),
        ("0000/0000_000_01_0303morning_9999_0.jpg 0", r"list_train\.txt:3: image .* does not exist"),
    ],
)
def test_malformed_list_lines(tmp_path: Path, line: str, match: str) -> None:
    version = msmt_tree(tmp_path / "MSMT17_V1")
    rows = [f"{r} {p}" for r, p in LISTS["list_train.txt"][1]]
    rows.insert(2, line)
    (version / "list_train.txt").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=match):
        read_msmt17(tmp_path)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    version = msmt_tree(tmp_path / "MSMT17_V1")
    text = (version / "list_query.txt").read_text()
    (version / "list_query.txt").write_text("\n" + text.replace("\n", "\n\n"))
    assert len(read_msmt17(tmp_path).query) == 2


def test_missing_list_file(tmp_path: Path) -> None:
    version = msmt_tree(tmp_path / "MSMT17_V1")
    (version / "list_gallery.txt").unlink()
    with pytest.raises(DatasetError, match=r"list_gallery\.txt does not exist.*list_train\.txt"):
        read_msmt17(tmp_path)


def test_missing_folders_show_tree_and_source(tmp_path: Path) -> None:
    (tmp_path / "msmt17" / "MSMT17_V1" / "train").mkdir(parents=True)  # no test/
    with pytest.raises(DatasetError) as err:
        read_msmt17(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "list_query.txt" in message and "pkuvmc" in message
    with pytest.raises(DatasetError, match="does not exist"):
        read_msmt17(tmp_path / "nope")
