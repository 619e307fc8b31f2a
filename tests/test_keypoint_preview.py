"""`reidbench data preview` (issue 16, item 5): draws the detected keypoints so a person can
judge them, and labels each image with the identity its file names (a training split's pids
are relabelled 0..P-1, which matches nothing a person can look up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.data.records import ImageRecord
from reidbench.datasets.market1501 import read_market_layout
from reidbench.keypoints import COCO17_KEYPOINTS, Detection, images_by_split, write_sidecar
from reidbench.reporting import preview
from reidbench.reporting.preview import PALETTE, default_label, draw_tile, file_identity


def test_labels_name_the_files_identity_not_the_training_id() -> None:
    assert file_identity(ImageRecord("x/bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0)) == "0002"
    assert file_identity(ImageRecord("x/lfw/Ann_A/Ann_A_0001.jpg", 3, 0)) == "Ann_A"
    assert file_identity(ImageRecord("orl_faces/s12/1.pgm", 0, 0)) == "s12"
    record = ImageRecord("bounding_box_train/0007_c3s3_071002_02.jpg", 1, 2, np.full((2, 2), 0.5))
    assert default_label(record) == "id 0007 cam 3"
    assert default_label(ImageRecord(record.path, 1, 2)) == "id 0007 cam 3 no kp"


def test_a_tile_draws_each_keypoint_in_its_colour(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "0001_c1s1_000001_01.jpg"
    Image.new("RGB", (64, 128), (128, 128, 128)).save(path)
    points = np.array([[0.25, 0.25], [0.75, 0.75]], dtype=np.float32)
    tile = np.asarray(draw_tile(ImageRecord(str(path), 0, 0, points), 128, "x"))
    assert tuple(tile[32, 16]) == PALETTE[0] and tuple(tile[96, 48]) == PALETTE[1]
    plain = np.asarray(draw_tile(ImageRecord(str(path), 0, 0), 128, "x"))
    assert abs(int(plain[32, 16, 0]) - 128) < 8  # nothing drawn without keypoints


@pytest.mark.usefixtures("shared_data")
def test_preview_of_a_training_split_with_a_detector_sidecar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    images = images_by_split(read_market_layout(MINI_MARKET))
    rows = {k: Detection(np.full((17, 2), 0.5), np.ones(17)) for k in images["train"]}
    sidecar = tmp_path / "kp.csv"
    write_sidecar(sidecar, rows, COCO17_KEYPOINTS.names)
    drawn: list[tuple[ImageRecord, str]] = []
    real = preview.draw_tile
    monkeypatch.setattr(preview, "draw_tile", lambda r, h, lab: (drawn.append((r, lab)), real(r, h, lab))[1])
    out = tmp_path / "grid.png"
    code = cli.main(["-q", "data", "preview", "market1501", "--data-root", str(MINI_MARKET), "--out",
                     str(out), "--num", "6", "--keypoints", str(sidecar)])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and len(drawn) == 6
    for record, label in drawn:
        assert record.keypoints is not None  # the sidecar given on the command line is used
        assert label.startswith(f"id {Path(record.path).name[:4]} ")  # not the relabelled pid
    assert any(not lab.startswith(f"id {r.pid:04d} ") for r, lab in drawn)  # relabelled differs
