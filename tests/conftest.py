"""Shared fixtures: paths to the real data beside the repo and tiny trees in original layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MINI_MARKET = SHARED_DATA / "mini_market1501"
ORL_FACES = SHARED_DATA / "orl_faces"


def require_shared_data(*folders: Path) -> None:
    """Skip the calling test, saying what is missing, unless the real data it reads is there:
    ``../shared/data`` beside the checkout (a Market-1501 subset and the ORL faces), which a
    plain clone of the repository does not have."""
    missing = [str(f) for f in folders or (MINI_MARKET, ORL_FACES) if not f.is_dir()]
    if missing:
        pytest.skip(f"needs the shared real-data folders beside the checkout, absent here: "
                    f"{', '.join(missing)} (../shared/data: mini_market1501, orl_faces)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that read it are skipped with the reason when it is absent
    (session scope: checked before any module fixture that reads the data is built)."""
    require_shared_data()
    return SHARED_DATA


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (64, 128)) -> None:
    """A small random RGB JPEG (width, height)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


# A Market-1501 tree with junk (-1), distractors (0000), same-camera and cross-camera matches and
# a query whose only match is in its own camera.
MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c2s3_070952_01.jpg",
        "0007_c3s3_071002_02.jpg", "0010_c6s4_002452_02.jpg", "0010_c1s1_002301_01.jpg",
        "-1_c1s1_000401_03.jpg",
    ],
    "query": [
        "0001_c1s1_001051_00.jpg", "0003_c3s2_012345_00.jpg", "0005_c5s3_065432_00.jpg",
    ],
    "bounding_box_test": [
        "0001_c1s1_001101_01.jpg", "0001_c2s1_001201_02.jpg", "0001_c4s2_021201_01.jpg",
        "0003_c3s2_012401_01.jpg",  # the only match of query 0003 is same-camera: dropped
        "0005_c6s3_066001_01.jpg", "0005_c5s3_065501_02.jpg",
        "0000_c1s1_000001_01.jpg", "0000_c3s1_000002_02.jpg",
        "-1_c1s1_000003_01.jpg", "-1_c4s1_000004_01.jpg",
    ],
}


def make_market_tree(root: Path, files: dict[str, list[str]] = MARKET_FILES) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            write_jpeg(root / folder / name, seed=i)
    return root


@pytest.fixture
def market_tree(tmp_path: Path) -> Path:
    return make_market_tree(tmp_path / "Market-1501-v15.09.15")
