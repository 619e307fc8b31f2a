"""Extraction and the detector sidecar, without MediaPipe: a scripted detector on the real
mini Market-1501 crops (``reidbench.keypoints.extract``, ``sidecar``, ``detector``)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET
from PIL import Image

from reidbench.data.records import KeypointSchema
from reidbench.datasets.keypoints import read_keypoints_table, schema_for
from reidbench.datasets.lfw import read_lfw_split
from reidbench.datasets.market1501 import read_market_layout
from reidbench.errors import DatasetError, ReidbenchError
from reidbench.keypoints import (
    ARCFACE5_KEYPOINTS,
    COCO17_KEYPOINTS,
    Detection,
    build_detector,
    extract_keypoints,
    images_by_split,
    read_sidecar,
    write_sidecar,
)
from reidbench.keypoints.sidecar import parse_header, provenance_path, read_provenance, sidecar_text

TWO = KeypointSchema(("left_hand", "right_hand"), ((0, 1),))


class ScriptedDetector:
    """Finds nothing on images whose mean grey level is below ``dark``, else two points that
    depend on the image (so a wrong image/row pairing shows); counts its calls."""

    name = "scripted"
    schema = TWO

    def __init__(self, dark: float = 0.0, far: bool = False) -> None:
        self.dark, self.far, self.calls = dark, far, 0

    def detect(self, image: np.ndarray) -> Detection | None:
        self.calls += 1
        m = float(image.mean()) / 255
        if m < self.dark:
            return None
        x = 3.0 if self.far else m
        return Detection(np.array([[x, 0.25], [1 - m, 0.75]]), np.array([0.9, m]))

    def settings(self) -> dict:
        return {"dark": self.dark}

    def close(self) -> None:
        pass


def _mini_market_images() -> dict[str, list[str]]:
    return images_by_split(read_market_layout(MINI_MARKET))


def test_images_by_split_keys_are_paths_under_the_root() -> None:
    images = _mini_market_images()
    assert {k: len(v) for k, v in images.items()} == {"train": 32, "query": 32, "gallery": 32}
    assert images["query"][0].startswith("query/") and images["query"][0].endswith(".jpg")
    assert all((MINI_MARKET / rel).is_file() for keys in images.values() for rel in keys)


def test_images_by_split_of_face_sets(tmp_path: Path) -> None:
    files = ["lfw/Ann_A/Ann_A_0001.jpg", "lfw/Ann_A/Ann_A_0002.jpg", "lfw/Bob_B/Bob_B_0001.jpg"]
    for rel in files + ["train/Cid_C/Cid_C_0001.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    split = read_lfw_split(tmp_path)
    assert images_by_split(split) == {"train": ["train/Cid_C/Cid_C_0001.jpg"], "test": files}
    assert images_by_split(split.verification) == {"test": files}


def test_sidecar_round_trip_with_missing_rows(tmp_path: Path) -> None:
    rows = {
        "b/2.jpg": Detection(np.array([[0.1234567, 0.5], [1.2, -0.1]]), np.array([0.5, 1.0])),
        "a/1.jpg": None,
    }
    path = tmp_path / "kp.csv"
    write_sidecar(path, rows, TWO.names)
    text = path.read_text(encoding="utf-8").splitlines()
    assert text == [
        "path,left_hand_x,left_hand_y,left_hand_c,right_hand_x,right_hand_y,right_hand_c",
        "a/1.jpg,,,,,,",
        "b/2.jpg,0.123457,0.500000,0.5000,1.200000,-0.100000,1.0000",
    ]
    table = read_sidecar(path)
    assert table.names == TWO.names and table.rows["a/1.jpg"] is None
    got = table.rows["b/2.jpg"]
    np.testing.assert_allclose(got.points, [[0.123457, 0.5], [1.2, -0.1]], atol=1e-6)
    np.testing.assert_allclose(got.confidence, [0.5, 1.0])


def test_header_parse_tells_old_and_new_formats_apart() -> None:
    assert parse_header(["path", "a_x", "a_y", "a_c", "b_x", "b_y", "b_c"]) == (("a", "b"), True)
    assert parse_header(["path", "a_x", "a_y", "b_x", "b_y", "c_x"]) == (("a", "b", "c"), False)
    assert parse_header(["img.jpg", "0.5", "0.5"]) is None


@pytest.mark.parametrize("line, problem", [
    ("a.jpg,0.5,0.5,0.9,0.5", "has 4 of 6 values"),
    ("a.jpg,0.5,x,0.9,0.5,0.5,0.9", "non-numeric or non-finite"),
    ("a.jpg,0.5,0.5,1.5,0.5,0.5,0.9", "confidence outside [0, 1]"),
])
def test_malformed_rows_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "kp.csv"
    path.write_text(",".join(["path"] + [f"{n}_{a}" for n in TWO.names for a in "xyc"]) + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=rf"kp\.csv:2: .*{re.escape(problem)}"):
        read_sidecar(path)


def test_extraction_writes_a_row_per_image_and_coverage_per_split(tmp_path: Path) -> None:
    images = _mini_market_images()
    detector = ScriptedDetector(dark=0.42)
    out = tmp_path / "keypoints.csv"
    calls: list[tuple[int, int]] = []
    result = extract_keypoints(MINI_MARKET, images, detector, out, progress=lambda d, t: calls.append((d, t)))
    assert result.processed == 96 and result.reused == 0 and detector.calls == 96
    assert calls[0] == (1, 96) and calls[-1] == (96, 96)
    table = read_sidecar(out)
    assert sorted(table.rows) == sorted(k for keys in images.values() for k in keys)
    # coverage counted from the rows, per split, independently of the result's arithmetic
    for cov in result.coverage:
        found = sum(table.rows[k] is not None for k in images[cov.split])
        assert (cov.images, cov.found) == (32, found)
    assert 0 < sum(c.found for c in result.coverage) < 96  # the threshold splits the set
    provenance = read_provenance(out)
    assert provenance["detector"] == "scripted" and provenance["names"] == list(TWO.names)
    assert provenance["coverage"]["query"]["found"] == result.coverage[1].found


def test_extraction_is_resumable_and_keeps_work_when_interrupted(tmp_path: Path) -> None:
    images = _mini_market_images()
    out = tmp_path / "keypoints.csv"

    def stop_after_ten(done: int, total: int) -> None:
        if done == 10:
            raise KeyboardInterrupt

    first = ScriptedDetector()
    with pytest.raises(KeyboardInterrupt):
        extract_keypoints(MINI_MARKET, images, first, out, progress=stop_after_ten)
    assert len(read_sidecar(out).rows) == 10  # written on the way out
    second = ScriptedDetector()
    result = extract_keypoints(MINI_MARKET, images, second, out)
    assert (second.calls, result.processed, result.reused) == (86, 86, 10)
    before = out.read_bytes()
    third = ScriptedDetector()
    result = extract_keypoints(MINI_MARKET, images, third, out)
    assert (third.calls, result.processed, result.reused) == (0, 0, 96)
    assert out.read_bytes() == before
    # the resumed file equals one written in a single pass
    fresh = tmp_path / "fresh.csv"
    extract_keypoints(MINI_MARKET, images, ScriptedDetector(), fresh)
    assert fresh.read_bytes() == before


def test_out_of_range_detection_is_written_as_missing(tmp_path: Path) -> None:
    images = {"query": _mini_market_images()["query"][:3]}
    result = extract_keypoints(MINI_MARKET, images, ScriptedDetector(far=True), tmp_path / "k.csv")
    assert result.rejected == 3 and result.coverage[0].found == 0
    assert all(v is None for v in read_sidecar(tmp_path / "k.csv").rows.values())


def test_a_file_written_by_something_else_is_never_replaced(tmp_path: Path) -> None:
    images = {"query": _mini_market_images()["query"][:2]}
    old = tmp_path / "old.csv"
    old.write_text("path,left_hand_x,left_hand_y,right_hand_x,right_hand_y\nquery/x.jpg,0.1,0.1,0.2,0.2\n")
    with pytest.raises(DatasetError, match="not a detector sidecar"):
        extract_keypoints(MINI_MARKET, images, ScriptedDetector(), old)
    other = tmp_path / "other.csv"
    write_sidecar(other, {}, ("a", "b", "c"))
    with pytest.raises(DatasetError, match="other keypoints .* left untouched"):
        extract_keypoints(MINI_MARKET, images, ScriptedDetector(), other)
    mine = tmp_path / "mine.csv"
    extract_keypoints(MINI_MARKET, images, ScriptedDetector(), mine)
    provenance_path(mine).write_text('{"detector": "blazepose"}')
    more = {"query": _mini_market_images()["query"][:3]}
    with pytest.raises(DatasetError, match="written by detector 'blazepose'"):
        extract_keypoints(MINI_MARKET, more, ScriptedDetector(), mine)
    assert old.read_text().startswith("path,left_hand_x,left_hand_y,right")


def test_missing_mediapipe_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises ImportError
    for name in ("blazepose", "facemesh"):
        with pytest.raises(ReidbenchError, match=r"reidbench\[keypoints\]") as err:
            build_detector(name)
        assert name in str(err.value) and "not installed" in str(err.value)


def test_mediapipe_without_bundled_models_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    fake = types.ModuleType("mediapipe")
    fake.__file__ = str(tmp_path / "mediapipe" / "__init__.py")
    fake.__version__ = "0.10.30"
    monkeypatch.setitem(sys.modules, "mediapipe", fake)
    expected = r"mediapipe 0\.10\.30 .* no bundled model .*reidbench\[keypoints\]"
    with pytest.raises(ReidbenchError, match=expected):
        build_detector("blazepose")


def test_unknown_detector_lists_the_known_ones() -> None:
    with pytest.raises(ReidbenchError, match="blazepose, facemesh"):
        build_detector("openpose")


def test_schemas_declare_the_flips_the_sidecar_reader_derives_from_names() -> None:
    # the reader of sidecars pairs left_* with right_* by name: same pairs as declared here
    for schema in (COCO17_KEYPOINTS, ARCFACE5_KEYPOINTS):
        derived = schema_for(schema.names, schema.num_keypoints, None)
        assert sorted(derived.flip_pairs) == sorted(schema.flip_pairs)
    perm = COCO17_KEYPOINTS.flip_permutation()
    names = COCO17_KEYPOINTS.names
    assert all(names[perm[i]] == n.replace("left", "@").replace("right", "left").replace("@", "right")
               for i, n in enumerate(names))


def test_market_adapter_reads_a_detector_sidecar(tmp_path: Path) -> None:
    images = _mini_market_images()
    rows: dict[str, Detection | None] = {
        rel: Detection(np.full((17, 2), 0.25 + 0.5 * (i % 2)), np.full(17, 0.5))
        for i, rel in enumerate(images["query"])
    }
    rows[images["query"][0]] = None
    path = tmp_path / "kp.csv"
    path.write_text(sidecar_text(rows, COCO17_KEYPOINTS.names))
    table = read_keypoints_table(path)
    assert table.names == COCO17_KEYPOINTS.names
    split = read_market_layout(MINI_MARKET, keypoints_csv=path)
    by_rel = {Path(r.path).relative_to(MINI_MARKET).as_posix(): r for r in split.query}
    assert by_rel[images["query"][0]].keypoints is None
    np.testing.assert_allclose(by_rel[images["query"][1]].keypoints, np.full((17, 2), 0.75))
    assert split.keypoint_schema.flip_pairs == COCO17_KEYPOINTS.flip_pairs
    # the confidences reach the report, keyed like the records; the "nothing found" row has none
    conf = split.keypoint_report.confidence
    np.testing.assert_allclose(conf[by_rel[images["query"][1]].path], np.full(17, 0.5))
    assert by_rel[images["query"][0]].path not in conf
    assert by_rel[images["query"][0]].path in split.keypoint_report.explicit


def test_confidence_columns_are_read_and_checked(tmp_path: Path) -> None:
    from reidbench.datasets.keypoints import BAD_CONFIDENCE, EXPLICIT

    path = tmp_path / "kp.csv"
    path.write_text(
        "path,left_hand_x,left_hand_y,left_hand_c,right_hand_x,right_hand_y,right_hand_c\n"
        "a.jpg,0.1,0.2,0.9,0.3,0.4,0.05\n"
        "b.jpg,0.1,0.2,1.5,0.3,0.4,0.5\n"
        "c.jpg,,,,,,\n"
    )
    table = read_keypoints_table(path)
    assert table.names == TWO.names and table.num_keypoints == 2
    np.testing.assert_allclose(table.points["a.jpg"], [[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(table.confidence["a.jpg"], [0.9, 0.05])
    assert table.missing == {"b.jpg": BAD_CONFIDENCE, "c.jpg": EXPLICIT}
    # an old two-column file reads as before, without confidences
    path.write_text("path,left_hand_x,left_hand_y,right_hand_x,right_hand_y\na.jpg,0.1,0.2,0.3,0.4\n")
    old = read_keypoints_table(path)
    assert old.num_keypoints == 2 and old.confidence == {}
