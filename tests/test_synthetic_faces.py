"""The synthetic face generator: LFW layout, pairs.txt, landmarks, determinism, geometry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidbench.data.geometry import transform_points
from reidbench.datasets.base import FACE_KEYPOINTS
from reidbench.datasets.keypoints import read_keypoints_csv
from reidbench.errors import DatasetError
from reidbench.synthetic.faces import DEFAULT_IDS, SYNTHETIC_FACES_VERSION, generate_synthetic_faces
from reidbench.synthetic.faces_params import IMAGE_SIZE, FaceView, expression_landmarks, sample_identity
from reidbench.synthetic.faces_render import render_face

SMALL = {"num_ids": 24, "folds": 3, "pairs_per_fold": 6, "num_train_ids": 6}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic_faces")
    return root, generate_synthetic_faces(root, seed=3, **SMALL)


def _read_pairs(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_constants() -> None:
    assert SYNTHETIC_FACES_VERSION == 2
    assert DEFAULT_IDS == 200


def test_layout_names_and_manifest(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    assert sorted(p.name for p in root.iterdir()) == [
        "landmarks.csv", "lfw", "manifest.json", "pairs.txt", "train"
    ]
    names = sorted(p.name for p in (root / "lfw").iterdir())
    assert len(names) == len(set(names)) == SMALL["num_ids"]
    total = 0
    for name in names:
        assert re.fullmatch(r"[A-Z][a-z]+_[A-Z][a-z]+", name), name
        files = sorted(p.name for p in (root / "lfw" / name).iterdir())
        assert files == [f"{name}_{k:04d}.jpg" for k in range(1, len(files) + 1)]
        assert 1 <= len(files) <= 8
        total += len(files)
    with Image.open(root / "lfw" / names[0] / f"{names[0]}_0001.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (112, 112)

    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["generator"] == "synthetic-faces" and manifest["version"] == 2
    assert manifest["seed"] == 3 and manifest["num_ids"] == SMALL["num_ids"]
    counts = manifest["counts"]
    assert counts["images"] == total and counts["identities"] == SMALL["num_ids"]
    assert counts["pairs"] == 2 * SMALL["folds"] * SMALL["pairs_per_fold"]


def test_pairs_txt_format(synth: tuple[Path, dict]) -> None:
    root, _ = synth
    folds, n = SMALL["folds"], SMALL["pairs_per_fold"]
    header, rows = _read_pairs(root / "pairs.txt")
    assert header == [str(folds), str(n)]
    assert len(rows) == 2 * folds * n
    fold_people: list[set[str]] = []
    seen: set[frozenset[tuple[str, int]]] = set()
    for f in range(folds):
        block = rows[f * 2 * n : (f + 1) * 2 * n]
        matched, mismatched = block[:n], block[n:]
        assert all(len(r) == 3 for r in matched) and all(len(r) == 4 for r in mismatched)
        people: set[str] = set()
        ends_all = [((r[0], int(r[1])), (r[0], int(r[2]))) for r in matched]
        ends_all += [((r[0], int(r[1])), (r[2], int(r[3]))) for r in mismatched]
        for a, b in ends_all:
            assert a != b
            key = frozenset((a, b))
            assert key not in seen, f"duplicate pair {a} {b}"
            seen.add(key)
            for name, k in (a, b):
                people.add(name)
                assert (root / "lfw" / name / f"{name}_{k:04d}.jpg").is_file()
        assert all(r[0] != r[2] for r in mismatched)
        fold_people.append(people)
    for i in range(folds):
        for j in range(i + 1, folds):
            assert not fold_people[i] & fold_people[j], "folds share an identity"


def test_landmarks_inside_and_in_arcface_order(synth: tuple[Path, dict]) -> None:
    root, manifest = synth
    header = (root / "landmarks.csv").read_text().splitlines()[0]
    assert header.split(",")[1::2] == [f"{n}_x" for n in FACE_KEYPOINTS.names]
    table = read_keypoints_csv(root / "landmarks.csv")
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*/*.jpg"))
    assert sorted(table) == files  # lfw/ and train/ images, each with a row
    counts = manifest["counts"]
    assert len(files) == counts["images"] + counts["train_images"]
    assert len([f for f in files if f.startswith("train/")]) == counts["train_images"]
    kps = np.stack([table[f] for f in files])  # (N, 5, 2)
    assert kps.shape[1:] == (5, 2)
    assert (kps > 0).all() and (kps < 1).all()
    assert (kps[:, 0, 0] < kps[:, 1, 0]).all()  # left eye is the one on the image's left
    assert (kps[:, 3, 0] < kps[:, 4, 0]).all()
    eyes_y, nose_y = kps[:, :2, 1].max(axis=1), kps[:, 2, 1]
    mouth_y = kps[:, 3:, 1].min(axis=1)
    assert (eyes_y < nose_y).all() and (nose_y < mouth_y).all()


def test_same_seed_identical_different_seed_not(tmp_path: Path) -> None:
    args = {"num_ids": 6, "folds": 2, "pairs_per_fold": 2, "num_train_ids": 3}
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic_faces(a, seed=5, **args)
    generate_synthetic_faces(b, seed=5, **args)
    generate_synthetic_faces(c, seed=6, **args)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "pairs.txt").read_text() != (c / "pairs.txt").read_text()
    assert (a / "landmarks.csv").read_text() != (c / "landmarks.csv").read_text()


def test_identity_does_not_depend_on_num_ids(tmp_path: Path) -> None:
    generate_synthetic_faces(tmp_path / "few", seed=1, num_ids=4, folds=1, pairs_per_fold=1, num_train_ids=3)
    generate_synthetic_faces(tmp_path / "more", seed=1, num_ids=6, folds=1, pairs_per_fold=1, num_train_ids=3)
    few = read_keypoints_csv(tmp_path / "few" / "landmarks.csv")
    more = read_keypoints_csv(tmp_path / "more" / "landmarks.csv")
    assert set(few) <= set(more)
    for rel in few:
        np.testing.assert_array_equal(few[rel], more[rel])
        assert (tmp_path / "few" / rel).read_bytes() == (tmp_path / "more" / rel).read_bytes()


def test_overwrites_an_existing_set_cleanly(tmp_path: Path) -> None:
    generate_synthetic_faces(tmp_path, seed=0, num_ids=8, folds=2, pairs_per_fold=2, num_train_ids=3)
    manifest = generate_synthetic_faces(tmp_path, seed=1, num_ids=5, folds=1, pairs_per_fold=2,
                                        num_train_ids=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "landmarks.csv", "lfw", "manifest.json", "pairs.txt", "train"
    ]
    assert len(list((tmp_path / "lfw").iterdir())) == 5
    assert len(list((tmp_path / "lfw").rglob("*.jpg"))) == manifest["counts"]["images"]
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 1


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "lfw" / "Real_Person").mkdir(parents=True)
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        generate_synthetic_faces(tmp_path, num_ids=4, folds=1, pairs_per_fold=1, num_train_ids=3)
    assert (tmp_path / "lfw" / "Real_Person").is_dir()


def test_too_few_identities_for_the_folds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pairs_per_fold"):
        generate_synthetic_faces(tmp_path, num_ids=4, folds=4, pairs_per_fold=5, num_train_ids=3)


@pytest.mark.parametrize(
    "view",
    [
        FaceView(),
        FaceView(degrees=17.0, scale=1.12, shift=(6.0, -5.0)),
        FaceView(degrees=-19.0, scale=0.86, shift=(-8.0, 7.0), smile=0.8),
        FaceView(degrees=8.0, scale=1.0, shift=(3.0, 3.0), mouth_open=0.9),
    ],
)
def test_landmarks_follow_the_recorded_transform(view: FaceView) -> None:
    for k in range(6):
        ident = sample_identity(np.random.default_rng(k))
        image, kps = render_face(ident, view)
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        canonical = expression_landmarks(ident, view.smile, view.mouth_open)
        expected = transform_points(canonical, view.matrix()) / IMAGE_SIZE
        np.testing.assert_allclose(kps, expected, atol=1e-5)
        skin = np.asarray(ident.skin)
        for eye in (0, 1):  # the pupil sits on the eye landmark wherever the face moved
            x, y = (kps[eye] * IMAGE_SIZE).astype(int)
            pixel = image[y, x].astype(float)
            assert pixel.mean() < 70, (k, eye, pixel)
            assert np.abs(pixel - skin).max() > 30, (k, eye, pixel, skin)
