"""Per-sample keypoints (issue 16, item 3): in a batch where some images have keypoints and
others do not, only those without use the model's no-keypoint fallback; flips keep left/right
swapped for the detectors' COCO-17 and 5-point orders.

Before: ``batch_keypoints`` returned None for a mixed batch, so EVERY sample of it ran the
fallback (on real data with 60-95 % coverage, nearly every batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_market_tree
from PIL import Image

from reidbench.config import ModelConfig
from reidbench.data.loader import ImageDataset, batch_keypoints
from reidbench.data.transforms import Transform
from reidbench.datasets.lfw import read_lfw_split
from reidbench.datasets.market1501 import read_market_layout
from reidbench.keypoints import ARCFACE5_KEYPOINTS, COCO17_KEYPOINTS, Detection
from reidbench.keypoints.sidecar import sidecar_text
from reidbench.layers.kprpe import KeypointRPE
from reidbench.models import build_model

MASKED = [1, 3]  # samples of the batch without keypoints
KEPT = [0, 2, 4]


def _model(name: str, k: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, depth=2), (32, 16), k).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # KP-RPE starts at zero (keypoints change nothing): make them matter
        for module in model.modules():
            if isinstance(module, KeypointRPE):
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))
    return model


def _batch(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    images = torch.randn(5, 3, 32, 16, generator=g)
    full = 0.1 + 0.8 * torch.rand(5, k, 2, generator=g)
    mixed = full.clone()
    mixed[MASKED] = float("nan")
    return images, full, mixed


@pytest.mark.parametrize("name, k", [("kprpe", 17), ("kprpe", 5), ("poster", 17), ("poster", 5)])
def test_a_mixed_batch_is_the_fallback_row_by_row_for_masked_samples(name: str, k: int) -> None:
    model = _model(name, k)
    images, full, mixed = _batch(k)
    with torch.no_grad():
        out = model(images, mixed)
        fallback = model(images, None)
        with_kp = model(images, full)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[MASKED], fallback[MASKED], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[KEPT], with_kp[KEPT], rtol=1e-5, atol=1e-5)
    # the test can fail: keypoints do change these samples' output
    assert (with_kp[MASKED] - fallback[MASKED]).abs().max() > 1e-3
    assert (with_kp[KEPT] - fallback[KEPT]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["kprpe", "poster"])
def test_training_on_a_mixed_batch_has_finite_gradients(name: str) -> None:
    model = _model(name, 17).train()
    images, _, mixed = _batch(17)
    model(images, mixed).square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_batch_keypoints_is_per_sample() -> None:
    kps = torch.rand(3, 10, 2)
    has = torch.tensor([True, False, True])
    got = batch_keypoints({"keypoints": kps, "has_keypoints": has}, torch.device("cpu"))
    assert torch.equal(got[has], kps[has]) and torch.isnan(got[1]).all()
    full = {"keypoints": kps, "has_keypoints": torch.tensor([True, True, True])}
    assert torch.equal(batch_keypoints(full, torch.device("cpu")), kps)
    none = {"keypoints": kps, "has_keypoints": torch.tensor([False, False, False])}
    assert batch_keypoints(none, torch.device("cpu")) is None


def _flipped_pair(dataset: ImageDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The keypoints of item ``index`` without and with the flip (same rng seed)."""
    plain = ImageDataset(dataset.records, Transform(32, 16, (0.5,) * 3, (0.5,) * 3, train=True,
                                                    flip_prob=0.0), dataset.num_keypoints)
    return plain[(index, 0)]["keypoints"].numpy(), dataset[(index, 0)]["keypoints"].numpy()


def _swapped(name: str) -> str:
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


def test_flip_swaps_left_and_right_coco17_from_a_detector_sidecar(tmp_path: Path) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    g = np.random.default_rng(0)
    query = sorted(f"query/{p.name}" for p in (tree / "query").glob("*.jpg"))
    rows: dict[str, Detection | None] = {q: Detection(0.1 + 0.8 * g.random((17, 2)), np.ones(17))
                                         for q in query}
    rows[query[1]] = None  # nothing found: stays "no keypoints" through the flip
    (tree / "keypoints.csv").write_text(sidecar_text(rows, COCO17_KEYPOINTS.names))
    split = read_market_layout(tree)
    perm = tuple(split.keypoint_schema.flip_permutation())
    tf = Transform(32, 16, (0.5,) * 3, (0.5,) * 3, train=True, flip_prob=1.0, flip_perm=perm)
    dataset = ImageDataset(split.query, tf, 17)
    names = COCO17_KEYPOINTS.names
    by_path = {Path(r.path).name: i for i, r in enumerate(split.query)}
    plain, flipped = _flipped_pair(dataset, by_path[Path(query[0]).name])
    for i, name in enumerate(names):  # left_* of the flipped image is the mirrored right_*
        j = names.index(_swapped(name))
        np.testing.assert_allclose(flipped[i], [1 - plain[j, 0], plain[j, 1]], atol=1e-6)
    assert names[5] == "left_shoulder" and not np.allclose(flipped[5], [1 - plain[5, 0], plain[5, 1]])
    item = dataset[(by_path[Path(query[1]).name], 0)]
    assert not item["has_keypoints"] and torch.isnan(item["keypoints"]).all()


def test_flip_swaps_left_and_right_of_the_5_arcface_points(tmp_path: Path) -> None:
    files = ["lfw/Ann_A/Ann_A_0001.jpg", "lfw/Ann_A/Ann_A_0002.jpg", "lfw/Bob_B/Bob_B_0001.jpg"]
    for i, rel in enumerate(files):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 80, 3), dtype=np.uint8)).save(
            tmp_path / rel)
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    # an asymmetric face: eyes, nose, mouth corners (image left first, insightface's order)
    points = np.array([[0.30, 0.40], [0.66, 0.38], [0.50, 0.58], [0.36, 0.76], [0.62, 0.74]])
    rows = {files[0]: Detection(points, np.ones(5)), files[1]: None, files[2]: None}
    (tmp_path / "landmarks.csv").write_text(sidecar_text(rows, ARCFACE5_KEYPOINTS.names))
    split = read_lfw_split(tmp_path)
    records = split.images if hasattr(split, "images") else split.verification.images
    perm = tuple(split.keypoint_schema.flip_permutation())
    tf = Transform(32, 16, (0.5,) * 3, (0.5,) * 3, train=True, flip_prob=1.0, flip_perm=perm)
    dataset = ImageDataset(records, tf, 5)
    plain, flipped = _flipped_pair(dataset, 0)  # aligned on the detected landmarks, then flipped
    names = ARCFACE5_KEYPOINTS.names
    for i, name in enumerate(names):
        j = names.index(_swapped(name))
        np.testing.assert_allclose(flipped[i], [1 - plain[j, 0], plain[j, 1]], atol=1e-6)
    assert perm == (1, 0, 2, 4, 3)
    assert torch.isnan(dataset[(1, 0)]["keypoints"]).all()


def test_ape_aligned_warps_only_the_samples_with_keypoints() -> None:
    model = build_model(ModelConfig(name="ape_aligned", depth=1), (32, 16), 5).backbone
    images, full, mixed = _batch(5)
    model.train()
    model.align(images, mixed)  # the template absorbs the finite rows only
    assert torch.isfinite(model.template).all() and float(model.seen) == len(KEPT)
    model.eval()
    with torch.no_grad():
        aligned = model.align(images, mixed)
        warped = model.align(images, full)
    assert torch.equal(aligned[MASKED], images[MASKED])  # the fallback: no warp
    torch.testing.assert_close(aligned[KEPT], warped[KEPT])
    assert not torch.allclose(warped[KEPT], images[KEPT])
