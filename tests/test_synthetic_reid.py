"""The synthetic re-ID generator: Market-1501 layout, protocol properties, keypoints, determinism."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidbench.data import geometry
from reidbench.datasets.base import BODY_KEYPOINTS
from reidbench.datasets.keypoints import read_keypoints_csv
from reidbench.errors import DatasetError
from reidbench.synthetic.reid import DEFAULT_IDS, SPLITS, SYNTHETIC_REID_VERSION, generate_synthetic_reid
from reidbench.synthetic.reid_params import CROP_HW, Identity, Pose, sample_identity, sample_pose
from reidbench.synthetic.reid_render import fit_matrix, place_person, render_person

NAME = re.compile(r"^(-1|\d{4})_c([1-6])s[1-6]_\d{6}_\d{2}\.jpg$")
NUM_IDS = 16
SEED = 3


@dataclasses.dataclass(frozen=True)
class Item:
    rel: str
    split: str
    pid: int
    cam: int


def _items(root: Path) -> list[Item]:
    out = []
    for split in SPLITS:
        for path in sorted((root / split).iterdir()):
            match = NAME.match(path.name)
            assert match is not None, path.name
            rel = f"{split}/{path.name}"
            out.append(Item(rel, split, int(match.group(1)), int(match.group(2))))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[Item]]:
    root = tmp_path_factory.mktemp("synthetic") / "synthetic-reid"
    manifest = generate_synthetic_reid(root, seed=SEED, num_ids=NUM_IDS)
    return root, manifest, _items(root)


def test_constants() -> None:
    assert SYNTHETIC_REID_VERSION == 1
    assert DEFAULT_IDS == 300


def test_layout_names_and_images(dataset: tuple[Path, dict, list[Item]]) -> None:
    root, _, items = dataset
    assert sorted(p.name for p in root.iterdir()) == sorted([*SPLITS, "keypoints.csv",
                                                             "manifest.json"])
    names = [Path(item.rel).name for item in items]
    assert len(names) == len(set(names))  # unique file names across splits
    for item in items:
        with Image.open(root / item.rel) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (CROP_HW[1], CROP_HW[0]) == (64, 128)
    assert any(n.startswith("-1_") for n in names)  # junk keeps Market's unpadded pid


def test_junk_and_distractors_only_in_gallery(dataset: tuple[Path, dict, list[Item]]) -> None:
    _, _, items = dataset
    special = Counter((item.split, item.pid) for item in items if item.pid <= 0)
    assert set(special) == {("bounding_box_test", 0), ("bounding_box_test", -1)}
    assert special[("bounding_box_test", 0)] == round(NUM_IDS / 3)
    assert special[("bounding_box_test", -1)] == round(NUM_IDS / 6)


def test_identities_split_cameras_and_counts(dataset: tuple[Path, dict, list[Item]]) -> None:
    _, _, items = dataset
    train = {i.pid for i in items if i.split == "bounding_box_train"}
    test = {i.pid for i in items if i.split != "bounding_box_train" and i.pid > 0}
    assert not train & test
    assert train | test == set(range(1, NUM_IDS + 1))
    assert len(train) == len(test) == NUM_IDS // 2
    per_cam: dict[int, Counter] = defaultdict(Counter)
    for item in items:
        if item.pid > 0:
            per_cam[item.pid][item.cam] += 1
    for counts in per_cam.values():
        assert 2 <= len(counts) <= 4
        assert all(1 <= n <= 3 for n in counts.values())


def test_query_protocol(dataset: tuple[Path, dict, list[Item]]) -> None:
    _, _, items = dataset
    queries = [i for i in items if i.split == "query"]
    gallery = [i for i in items if i.split == "bounding_box_test" and i.pid > 0]
    assert queries
    assert all(i.pid > 0 for i in queries)
    per_pid = Counter(q.pid for q in queries)
    assert max(per_pid.values()) <= 2
    assert len({(q.pid, q.cam) for q in queries}) == len(queries)  # one query per camera
    same_camera = 0
    for q in queries:
        assert any(g.pid == q.pid and g.cam != q.cam for g in gallery), q.rel
        same_camera += sum(g.pid == q.pid and g.cam == q.cam for g in gallery)
    assert same_camera > 0  # Market has these; the protocol removes them


def test_keypoints_sidecar(dataset: tuple[Path, dict, list[Item]]) -> None:
    root, _, items = dataset
    header = (root / "keypoints.csv").read_text().splitlines()[0].split(",")
    assert header == ["path"] + [f"{n}_{a}" for n in BODY_KEYPOINTS.names for a in "xy"]
    rows = read_keypoints_csv(root / "keypoints.csv")
    assert set(rows) == {i.rel for i in items if i.pid != -1}
    for kps in rows.values():
        assert kps.shape == (BODY_KEYPOINTS.num_keypoints, 2)
        assert kps.min() >= 0.0 and kps.max() <= 1.0
    # Pose and placement vary per image: two images of one identity have different keypoints.
    by_pid = defaultdict(list)
    for item in items:
        if item.pid > 0:
            by_pid[item.pid].append(rows[item.rel])
    multi = [v for v in by_pid.values() if len(v) > 1]
    assert all(not np.allclose(v[0], v[1]) for v in multi)


def test_manifest(dataset: tuple[Path, dict, list[Item]]) -> None:
    root, manifest, items = dataset
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["generator"] == "synthetic-reid"
    assert manifest["version"] == SYNTHETIC_REID_VERSION
    assert (manifest["seed"], manifest["num_ids"]) == (SEED, NUM_IDS)
    assert manifest["counts"] == dict(Counter(i.split for i in items))


def _snapshot(root: Path) -> dict[str, bytes]:
    files = sorted(p for split in SPLITS for p in (root / split).iterdir())
    snap = {p.relative_to(root).as_posix(): p.read_bytes() for p in files}
    snap["keypoints.csv"] = (root / "keypoints.csv").read_bytes()
    return snap


def test_same_seed_is_byte_identical_and_other_seed_differs(
    dataset: tuple[Path, dict, list[Item]], tmp_path: Path
) -> None:
    root, _, _ = dataset
    generate_synthetic_reid(tmp_path / "again", seed=SEED, num_ids=NUM_IDS)
    assert _snapshot(tmp_path / "again") == _snapshot(root)
    generate_synthetic_reid(tmp_path / "other", seed=SEED + 1, num_ids=NUM_IDS)
    other = _snapshot(tmp_path / "other")
    assert other["keypoints.csv"] != _snapshot(root)["keypoints.csv"]
    assert set(other) != set(_snapshot(root))


def test_regenerating_replaces_the_set(tmp_path: Path) -> None:
    root = tmp_path / "set"
    generate_synthetic_reid(root, seed=0, num_ids=12)
    manifest = generate_synthetic_reid(root, seed=1, num_ids=6)
    items = _items(root)
    assert manifest["counts"] == dict(Counter(i.split for i in items))
    assert max(i.pid for i in items) <= 6
    assert set(read_keypoints_csv(root / "keypoints.csv")) == {i.rel for i in items if i.pid != -1}
    assert sorted(p.name for p in root.iterdir()) == sorted([*SPLITS, "keypoints.csv",
                                                             "manifest.json"])


def test_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "0001_c1s1_000001_01.jpg").write_bytes(b"real data")
    with pytest.raises(DatasetError, match="refusing"):
        generate_synthetic_reid(tmp_path, num_ids=4)
    assert (tmp_path / "query" / "0001_c1s1_000001_01.jpg").read_bytes() == b"real data"


def test_rejects_bad_num_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_ids"):
        generate_synthetic_reid(tmp_path, num_ids=1)


def _person() -> tuple[Identity, Pose]:
    identity = dataclasses.replace(
        sample_identity(np.random.default_rng(0)),
        skin=(230, 180, 140), hair=(10, 10, 10), shirt=(20, 40, 220), pattern="solid",
        accessory="none", long_hair=False, long_sleeves=False,
    )
    pose = Pose(arm_out=(12.0, 8.0), arm_swing=(20.0, -15.0), leg_spread=(5.0, 3.0), stride=0.5)
    return identity, pose


def test_keypoints_move_with_the_affine() -> None:
    identity, pose = _person()
    layer = render_person(identity, pose)
    x0, y0, x1, y1 = layer.bbox
    matrix = geometry.similarity(((x0 + x1) / 2, (y0 + y1) / 2), degrees=12.0, scale=0.55,
                                 shift=(32 - (x0 + x1) / 2, 64 - (y0 + y1) / 2))
    background = np.zeros((*CROP_HW, 3), dtype=np.float32)
    image, keypoints = place_person(layer, matrix, background)
    np.testing.assert_allclose(keypoints, geometry.transform_points(layer.keypoints, matrix))

    def colour_at(point: np.ndarray) -> np.ndarray:
        return image[int(point[1]), int(point[0])]

    head, neck = keypoints[0], keypoints[1]
    np.testing.assert_allclose(colour_at(head), identity.skin, atol=2)
    np.testing.assert_allclose(colour_at((neck + keypoints[6:8].mean(0)) / 2), identity.shirt,
                               atol=2)
    # The head lies above the neck along the rotated body axis (12 degrees counter-clockwise).
    axis = head - neck
    assert np.degrees(np.arctan2(-axis[0], -axis[1])) == pytest.approx(12.0, abs=0.5)


def test_back_view_mirrors_sides_and_shows_hair() -> None:
    identity, pose = _person()
    front, back = render_person(identity, pose), render_person(identity, pose, back=True)
    names = BODY_KEYPOINTS.names
    right, left = names.index("right_shoulder"), names.index("left_shoulder")
    assert front.keypoints[right, 0] < front.keypoints[left, 0]
    assert back.keypoints[right, 0] > back.keypoints[left, 0]
    hx, hy = back.keypoints[0]
    np.testing.assert_array_equal(back.rgb[int(hy), int(hx)], identity.hair)


def test_fit_matrix_keeps_keypoints_inside_the_crop() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        identity, pose = sample_identity(rng), sample_pose(rng)
        layer = render_person(identity, pose, back=bool(rng.random() < 0.5))
        matrix = fit_matrix(layer, height_frac=0.98, lean=float(rng.uniform(-8, 8)),
                            shift=(float(rng.normal(0, 20)), float(rng.normal(0, 40))))
        points = geometry.transform_points(layer.keypoints, matrix)
        assert points.min() >= 1.0 - 1e-9
        assert (points <= np.array([CROP_HW[1], CROP_HW[0]]) - 1.0 + 1e-9).all()
