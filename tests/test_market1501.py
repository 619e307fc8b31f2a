"""Market-1501 adapter: exact layout, torchreid semantics, the real mini set, clear errors."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import MARKET_FILES, MINI_MARKET, make_market_tree, write_jpeg

from reidbench.datasets.keypoints import write_keypoints_csv
from reidbench.datasets.market1501 import find_layout_root, read_market_layout
from reidbench.errors import DatasetError


def torchreid_records(root: Path) -> dict[str, list[tuple[str, int, int]]]:
    """torchreid's own Market1501 on ``root/market1501`` (its expected location)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.data.datasets.image.market1501 import Market1501

        ds = Market1501(root=str(root), verbose=False)
    return {
        split: sorted((os.path.realpath(p), pid, cam) for p, pid, cam, _ in getattr(ds, split))
        for split in ("train", "query", "gallery")
    }


def our_records(root: Path) -> dict[str, list[tuple[str, int, int]]]:
    split = read_market_layout(root)
    return {
        name: sorted((os.path.realpath(r.path), r.pid, r.camid) for r in getattr(split, name))
        for name in ("train", "query", "gallery")
    }


def test_semantics_on_exact_layout(market_tree: Path) -> None:
    split = read_market_layout(market_tree)
    # junk dropped everywhere
    assert all(r.pid != -1 for recs in (split.train, split.query, split.gallery) for r in recs)
    assert len(split.train) == 6 and len(split.gallery) == 8
    # train pids 2, 7, 10 relabelled in sorted order
    assert sorted({r.pid for r in split.train}) == [0, 1, 2]
    assert [r.pid for r in split.train if "0010_" in r.path] == [2, 2]
    # distractors kept in the gallery with pid 0; cameras 0-indexed
    assert sum(r.pid == 0 for r in split.gallery) == 2
    assert {r.camid for r in split.gallery} <= set(range(6))
    assert [r.camid for r in split.query] == [0, 2, 4]
    # sorted file lists
    assert [r.path for r in split.gallery] == sorted(r.path for r in split.gallery)


def assert_same_as_torchreid(ours: dict, theirs: dict) -> None:
    """Equal records, except that train labels may be numbered differently: torchreid numbers
    them in ``set`` iteration order, we in sorted pid order. The relabelling must be a bijection
    consistent over all images, and ours must be the sorted one."""
    assert ours["query"] == theirs["query"]
    assert ours["gallery"] == theirs["gallery"]
    assert [(p, c) for p, _, c in ours["train"]] == [(p, c) for p, _, c in theirs["train"]]
    bijection = {(a, b) for (_, a, _), (_, b, _) in zip(ours["train"], theirs["train"])}
    assert len({a for a, _ in bijection}) == len({b for _, b in bijection}) == len(bijection)
    raw = {label: int(Path(p).name.split("_")[0]) for p, label, _ in ours["train"]}
    assert [raw[label] for label in sorted(raw)] == sorted(raw.values())


def test_same_records_as_torchreid(tmp_path: Path) -> None:
    tree = make_market_tree(tmp_path / "market1501" / "Market-1501-v15.09.15")
    assert_same_as_torchreid(our_records(tree), torchreid_records(tmp_path))


@pytest.mark.usefixtures("shared_data")
def test_real_mini_market_matches_torchreid(tmp_path: Path) -> None:
    (tmp_path / "market1501").symlink_to(MINI_MARKET.resolve())
    ours = our_records(MINI_MARKET)
    assert_same_as_torchreid(ours, torchreid_records(tmp_path))
    assert [len(ours[s]) for s in ("train", "query", "gallery")] == [32, 32, 32]


@pytest.mark.usefixtures("shared_data")
def test_real_mini_market_protocol_drops_same_camera_only_queries() -> None:
    from reidbench.metrics.rank import evaluate_ranking

    split = read_market_layout(MINI_MARKET)
    q, g = split.query, split.gallery
    scores = np.zeros((len(q), len(g)))
    r = evaluate_ranking(scores, np.array([x.pid for x in q]), np.array([x.pid for x in g]),
                         np.array([x.camid for x in q]), np.array([x.camid for x in g]),
                         higher_is_better=True)
    assert r.num_skipped == 2  # documented in shared/data/README.md


@pytest.mark.parametrize("layout", ["itself", "parent", "torchreid"])
def test_root_forms(tmp_path: Path, layout: str) -> None:
    inner = {
        "itself": tmp_path / "anything",
        "parent": tmp_path / "Market-1501-v15.09.15",
        "torchreid": tmp_path / "market1501" / "Market-1501-v15.09.15",
    }[layout]
    make_market_tree(inner)
    root = inner if layout == "itself" else tmp_path
    assert find_layout_root(root, _spec()) == inner


def _spec():
    from reidbench.datasets.market1501 import MARKET1501

    return MARKET1501


def test_keypoint_sidecar_is_attached(market_tree: Path) -> None:
    rows = {f"query/{n}": np.full((10, 2), 0.5) for n in MARKET_FILES["query"]}
    write_keypoints_csv(market_tree / "keypoints.csv", rows)
    split = read_market_layout(market_tree)
    assert all(r.keypoints is not None and r.keypoints.shape == (10, 2) for r in split.query)
    assert all(r.keypoints is None for r in split.train)
    assert split.keypoint_schema is not None


def test_missing_root_names_path_and_tree(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*bounding_box_train.*never downloads"):
        read_market_layout(tmp_path / "nope")


def test_empty_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no bounding_box_train/"):
        read_market_layout(tmp_path)


def test_missing_split_folder(market_tree: Path) -> None:
    shutil.rmtree(market_tree / "query")
    with pytest.raises(DatasetError, match="no bounding_box_train/, bounding_box_test/ and query/"):
        read_market_layout(market_tree)


def test_empty_split_folder(market_tree: Path) -> None:
    for p in (market_tree / "query").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match="query holds no .jpg"):
        read_market_layout(market_tree)


@pytest.mark.parametrize("name", ["abc_c1s1_000001_01.jpg", "0001_x1s1_000001_01.jpg",
                                  "0001_c7s1_000001_01.jpg", "1502_c1s1_000001_01.jpg"])
def test_malformed_file_name_is_named(market_tree: Path, name: str) -> None:
    write_jpeg(market_tree / "bounding_box_test" / name)
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")):
        read_market_layout(market_tree)


def test_non_jpg_files_are_ignored(market_tree: Path) -> None:
    (market_tree / "query" / "Thumbs.db").write_bytes(b"x")
    assert len(read_market_layout(market_tree).query) == 3
