"""Keypoint sidecars are validated (issue 12, item 9): structural problems are one error naming
file and line; unusable rows (NaN, inf, far outside the image, partly empty) and rows naming no
image become "no keypoints" with ONE warning; an explicit empty row is a first-class "this image
has none"; `data check` reports the coverage; a sample without keypoints never reaches a model's
keypoint path as NaN or zeros (it takes the per-sample fallback, test_keypoint_masking)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MARKET_FILES, MINI_MARKET, make_market_tree

from reidbench import cli
from reidbench.config import ModelConfig
from reidbench.data.loader import ImageDataset
from reidbench.data.transforms import Transform
from reidbench.datasets.keypoints import (
    EXPLICIT,
    NON_FINITE,
    OUT_OF_RANGE,
    TOLERATED_RANGE,
    read_keypoints_table,
)
from reidbench.datasets.market1501 import read_market_layout
from reidbench.errors import DatasetError
from reidbench.evaluation.reid import extract_features
from reidbench.models import build_model

HEADER = "path," + ",".join(f"k{i}_{a}" for i in range(3) for a in "xy")
GOOD = ",".join(["0.5"] * 6)
QUERY = [f"query/{n}" for n in MARKET_FILES["query"]]
GALLERY = [f"bounding_box_test/{n}" for n in MARKET_FILES["bounding_box_test"] if not n.startswith("-1")]


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("lines", "line", "match"),
    [
        ((HEADER, f"a.jpg,{GOOD}", f"b.jpg,{GOOD}", f"a.jpg,{GOOD}"), 4, r"a.jpg is listed twice .first on"),
        ((HEADER, f"a.jpg,{GOOD}", "b.jpg,0.5,0.5,0.5,0.5"), 3, r"4 coordinate values .*header has 3 keypo"),
        ((f"a.jpg,{GOOD}", "b.jpg,0.5,0.5"), 2, r"2 coordinate values .*earlier rows have 3 keypoints"),
        ((HEADER, "a.jpg,0.5,0.5,0.5,0.5,0.5"), 2, "5 coordinate values"),
        ((HEADER, "a.jpg,0.5,0.5,abc,0.5,0.5,0.5"), 2, "non-numeric keypoint value 'abc'"),
        (("path,k0_x,k0_y,k1_x", f"a.jpg,{GOOD}"), 1, "odd number"),
        ((HEADER, f",{GOOD}"), 2, "without an image path"),
    ],
)
def test_structural_problems_are_errors_naming_file_and_line(
    tmp_path: Path, lines: tuple[str, ...], line: int, match: str
) -> None:
    path = write(tmp_path / "k.csv", *lines)
    with pytest.raises(DatasetError, match=match) as err:
        read_keypoints_table(path)
    assert f"{path}:{line}:" in str(err.value)


def test_row_rules(tmp_path: Path) -> None:
    low, high = TOLERATED_RANGE
    path = write(
        tmp_path / "k.csv",
        HEADER,
        f"ok.jpg,{GOOD}",
        f"edge.jpg,{low},{high},0,1,0.5,0.5",  # inside the tolerated range: kept as is
        "nan.jpg,0.5,nan,0.5,0.5,0.5,0.5",
        "inf.jpg,0.5,0.5,inf,0.5,0.5,0.5",
        "far.jpg,0.5,0.5,0.5,0.5,0.5,1.51",
        "pixels.jpg,32,64,30,40,20,90",
        "partial.jpg,0.5,0.5,,,0.5,0.5",
        "none.jpg",
        "none2.jpg,,,,,,",
        r".\win\path.jpg,0.1,0.2,0.3,0.4,0.5,0.6",
    )
    table = read_keypoints_table(path)
    assert table.num_keypoints == 3 and table.names == ("k0", "k1", "k2") and table.rows == 10
    assert set(table.points) == {"ok.jpg", "edge.jpg", "win/path.jpg"}
    np.testing.assert_array_equal(table.points["edge.jpg"], [[low, high], [0, 1], [0.5, 0.5]])
    assert table.missing == {
        "nan.jpg": NON_FINITE, "inf.jpg": NON_FINITE, "far.jpg": OUT_OF_RANGE,
        "pixels.jpg": OUT_OF_RANGE, "partial.jpg": "some coordinates empty",
        "none.jpg": EXPLICIT, "none2.jpg": EXPLICIT,
    }
    assert table.lines["far.jpg"] == 6


def test_a_file_without_one_usable_row_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "k.csv", HEADER, "a.jpg,32,64,30,40,20,90", "b.jpg,10,10,10,10,10,10")
    with pytest.raises(DatasetError, match=r"none of its 2 rows .*line 2, a.jpg.*not pixels"):
        read_keypoints_table(path)
    write(tmp_path / "e.csv", HEADER, "a.jpg", "b.jpg,,,,,,")  # every row explicitly empty: fine
    assert read_keypoints_table(tmp_path / "e.csv").num_keypoints == 3  # K from the header
    write(tmp_path / "e.csv", "a.jpg", "b.jpg,,,,,,")
    assert read_keypoints_table(tmp_path / "e.csv").num_keypoints == 0


def test_invalid_and_unknown_rows_become_missing_with_one_warning(
    market_tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"{rel},{','.join(['0.5'] * 20)}" for rel in QUERY + GALLERY]
    nan = ",".join(["0.5"] * 19 + ["nan"])
    rows[len(QUERY)] = f"{GALLERY[0]},{nan}"  # a NaN keypoint on a gallery row
    rows[len(QUERY) + 1] = f"{GALLERY[1]},{','.join(['0.5'] * 19 + ['7'])}"  # far outside
    rows[len(QUERY) + 2] = GALLERY[2]  # explicit: no keypoints
    rows += [f"query/9999_c1s1_000001_00.jpg,{','.join(['0.5'] * 20)}"]  # no such image
    rows += [f"bounding_box_test/-1_c1s1_000003_01.jpg,{nan}"]  # junk: read, then dropped
    write(market_tree / "keypoints.csv", *rows)
    with caplog.at_level(logging.WARNING):
        split = read_market_layout(market_tree)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "2 row(s) unusable" in text and "1 NaN or infinite value" in text and GALLERY[0] in text
    assert "1 row(s) name no image" in text and "9999_c1s1_000001_00.jpg" in text
    by_rel = {Path(r.path).relative_to(market_tree).as_posix(): r for r in split.gallery}
    assert by_rel[GALLERY[0]].keypoints is None and by_rel[GALLERY[1]].keypoints is None
    assert by_rel[GALLERY[2]].keypoints is None and by_rel[GALLERY[3]].keypoints is not None
    assert all(r.keypoints is not None for r in split.query)
    report = split.keypoint_report
    assert report.num_keypoints == 10 and report.rows == len(rows)
    assert set(report.invalid) == {str(market_tree / GALLERY[0]), str(market_tree / GALLERY[1])}
    assert report.explicit == {str(market_tree / GALLERY[2])}
    assert report.unknown == ("query/9999_c1s1_000001_00.jpg",) and report.unused == 1


def test_a_sidecar_naming_none_of_the_images_is_an_error(market_tree: Path) -> None:
    write(market_tree / "elsewhere.csv", f"Market-1501/query/{MARKET_FILES['query'][0]},{GOOD}")
    with pytest.raises(DatasetError, match="names none of the dataset's images"):
        read_market_layout(market_tree, keypoints_csv=market_tree / "elsewhere.csv")


def test_nan_keypoints_on_gallery_rows_never_reach_the_model(market_tree: Path) -> None:
    """Before validation a NaN keypoint reached KP-RPE (0 * NaN in its zero-initialised map
    makes the patch tokens NaN, and the second block spreads them to the embedding): those
    samples' features were NaN, which silently changed mAP."""
    nan = ",".join(["0.5"] * 19 + ["nan"])
    rows = [f"{rel},{','.join(['0.5'] * 20)}" for rel in QUERY + GALLERY[5:]]
    write(market_tree / "keypoints.csv", *rows, *(f"{rel},{nan}" for rel in GALLERY[:5]))
    split = read_market_layout(market_tree)
    assert sum(r.keypoints is None for r in split.gallery) == 5
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="kprpe", depth=2), (64, 32), 10)
    tf = Transform(64, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    dataset = ImageDataset(split.gallery, tf, 10)
    feats = extract_features(model, dataset, 4, torch.device("cpu"))
    assert np.isfinite(feats.feats).all()
    items = [dataset[i] for i in range(len(dataset))]
    assert [bool(it["has_keypoints"]) for it in items] == [r.keypoints is not None for r in split.gallery]


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["-q", "data", "check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_data_check_reports_keypoint_coverage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    full = ",".join(["0.5"] * 20)
    rows = [f"{rel},{full}" for rel in QUERY[:2] + GALLERY[1:]]
    rows += [f"{GALLERY[0]},{','.join(['0.5'] * 19 + ['inf'])}", QUERY[2], f"query/missing.jpg,{full}"]
    write(tree / "keypoints.csv", *rows)
    code, out, _ = check(capsys, "market1501", "--data-root", str(tmp_path), "--json", "--images", "none")
    assert code == 0
    cov = json.loads(out)["keypoints"]
    assert cov["sidecar"] == str(tree / "keypoints.csv") and cov["num_keypoints"] == 10
    assert cov["rows"] == len(rows)
    keys = ("images", "with_keypoints", "no_row", "empty_row", "invalid")
    assert cov["splits"]["train"] == dict(zip(keys, (6, 0, 6, 0, 0)))
    assert cov["splits"]["query"] == dict(zip(keys, (3, 2, 0, 1, 0)))
    assert cov["splits"]["gallery"] == dict(zip(keys, (8, 7, 0, 0, 1)))
    assert cov["invalid_rows"] == 1 and cov["invalid"][0]["image"] == str(tree / GALLERY[0])
    assert "NaN or infinite" in cov["invalid"][0]["reason"]
    assert cov["unknown_rows"] == 1 and cov["unknown"] == ["query/missing.jpg"]
    code, out, _ = check(capsys, "market1501", "--data-root", str(tmp_path), "--images", "none")
    assert code == 0
    assert f"keypoints: 10 per image from {tree / 'keypoints.csv'} ({len(rows)} rows)" in out
    assert "query              2 / 3 (66.7%)         0          1        0" in out
    assert "1 row(s) dropped as invalid" in out and "1 row(s) name no image of the dataset" in out


@pytest.mark.usefixtures("shared_data")
def test_data_check_without_a_sidecar(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, "market1501", "--data-root", str(MINI_MARKET), "--images", "none")
    assert code == 0 and "keypoints: none (no sidecar)" in out
    code, out, _ = check(capsys, "market1501", "--data-root", str(MINI_MARKET), "--images", "none", "--json")
    cov = json.loads(out)["keypoints"]
    assert cov["sidecar"] is None and cov["splits"]["train"]["with_keypoints"] == 0
    assert cov["splits"]["train"]["no_row"] == cov["splits"]["train"]["images"] == 32


def test_a_malformed_sidecar_is_one_line_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    bad = write(tmp_path / "k.csv", f"{QUERY[0]},{GOOD}", f"{QUERY[0]},{GOOD}")
    code, _, err = check(capsys, "market1501", "--data-root", str(tmp_path), "--keypoints", str(bad))
    assert code == 2 and len(err.splitlines()) == 1 and f"{bad}:2:" in err and "listed twice" in err
    assert tree.is_dir()
