"""The training recipe of ``data.augment`` (reidbench/data/augment.py): keypoints drawn as dots
move with the image under every geometric step, a flip swaps left/right pairs, draws are
seeded, and the default transform is untouched."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from reidbench.config import RunConfig, resolve_config, to_dict
from reidbench.data import augment
from reidbench.data.augment import AugmentSpec
from reidbench.data.records import BODY_KEYPOINTS, FACE_KEYPOINTS
from reidbench.data.transforms import Transform
from reidbench.errors import ConfigError
from reidbench.reporting.records import read_run_config

H, W = 112, 112
# 5 face keypoints (normalised), each drawn in its own colour
# at pixel centres, so that a 3x3 dot is centred exactly on its keypoint
KPS = ((np.array([[38, 45], [74, 47], [56, 62], [41, 81], [70, 78]]) + 0.5) / [W, H]).astype(np.float32)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]], np.uint8)
NO_JITTER = dict(photometric_ops=0, blur_prob=0.0, cutout_prob=0.0)


def dots_image() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for (x, y), colour in zip(KPS * [W, H], COLOURS):
        cx, cy = int(x), int(y)  # the pixel containing the keypoint: centre at (cx + .5, cy + .5)
        img[cy - 1:cy + 2, cx - 1:cx + 2] = colour  # a 3x3 dot centred on that pixel
    return img


def centroid(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Centre (continuous frame) of the dot of ``colour``: each pixel weighted by how much of
    that colour it holds (its weakest "on" channel minus its strongest "off" one), which bilinear
    blending with the black background scales linearly, so the weighted centre is exact."""
    img = image.astype(np.float64)
    on = colour > 0
    weight = img[..., on].min(axis=2) - (img[..., ~on].max(axis=2) if (~on).any() else 0.0)
    weight = np.clip(weight, 0.0, None)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    total = weight.sum()
    assert total > 0, "dot vanished"
    return np.array([(weight * (xs + 0.5)).sum() / total, (weight * (ys + 0.5)).sum() / total])


def transform(spec: AugmentSpec, flip_perm: tuple[int, ...] | None = None) -> Transform:
    return Transform(H, W, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=True,
                     flip_perm=flip_perm or tuple(int(i) for i in FACE_KEYPOINTS.flip_permutation()),
                     augment=spec)


def pixels(tensor) -> np.ndarray:  # noqa: ANN001 - (3, H, W) float in [0, 1] back to uint8
    return (tensor.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,spec", [
    ("scale", AugmentSpec(scale=(0.8, 1.2), rot_prob=0.0, flip_prob=0.0, extra_offset=0.0, **NO_JITTER)),
    ("rotate", AugmentSpec(scale=(1.0, 1.0), rot_prob=1.0, max_rot=20.0, flip_prob=0.0,
                           extra_offset=0.0, **NO_JITTER)),
    ("offset", AugmentSpec(scale=(1.0, 1.0), rot_prob=0.0, flip_prob=0.0, extra_offset=0.1, **NO_JITTER)),
    ("all", AugmentSpec(rot_prob=1.0, flip_prob=0.5, **NO_JITTER)),
])
def test_keypoint_dots_move_with_the_image(name: str, spec: AugmentSpec) -> None:
    tf = transform(spec)
    image = dots_image()
    moved_any = False
    for seed in range(6):
        out, kps = tf(image, KPS, np.random.default_rng(seed))
        assert kps is not None
        _, flipped = tf.matrix((H, W), np.random.default_rng(seed))
        perm = np.array(tf.flip_perm) if flipped else np.arange(5)
        got = pixels(out)
        for i in range(5):
            # keypoint i now is the point that was keypoint perm[i]: its dot has that colour
            found = centroid(got, COLOURS[perm[i]])
            np.testing.assert_allclose(found, kps[i] * [W, H], atol=0.35,
                                       err_msg=f"{name} seed {seed} kp {i}")
        moved_any |= bool(np.abs(kps - KPS).max() > 0.01)
    assert moved_any, f"{name}: the geometric step never moved anything"


def test_flip_mirrors_and_swaps_left_right_pairs() -> None:
    spec = AugmentSpec(scale=(1.0, 1.0), rot_prob=0.0, flip_prob=1.0, extra_offset=0.0, **NO_JITTER)
    tf = transform(spec)
    # extra_offset 0 and scale 1: the shift is |c/s - c| = 0, so this is a pure mirror
    _, kps = tf(dots_image(), KPS, np.random.default_rng(0))
    mirrored = np.stack([1.0 - KPS[:, 0], KPS[:, 1]], axis=1)
    np.testing.assert_allclose(kps, mirrored[[1, 0, 2, 4, 3]], atol=1e-6)  # eyes and mouth swapped
    # the left eye (index 0) is still on the image's left after the flip
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]


def test_body_flip_uses_the_schema_pairs() -> None:
    spec = AugmentSpec(scale=(1.0, 1.0), rot_prob=0.0, flip_prob=1.0, extra_offset=0.0, **NO_JITTER)
    perm = tuple(int(i) for i in BODY_KEYPOINTS.flip_permutation())
    assert perm == (0, 1, 3, 2, 5, 4, 7, 6, 9, 8)
    tf = Transform(128, 64, (0.0,) * 3, (1.0,) * 3, train=True, flip_perm=perm, augment=spec)
    kps_in = np.random.default_rng(1).uniform(0.1, 0.9, (10, 2)).astype(np.float32)
    _, kps = tf(np.zeros((128, 64, 3), np.uint8), kps_in, np.random.default_rng(0))
    mirrored = np.stack([1.0 - kps_in[:, 0], kps_in[:, 1]], axis=1)
    np.testing.assert_allclose(kps, mirrored[list(perm)], atol=1e-6)


def test_geometry_follows_the_published_ranges() -> None:
    spec = AugmentSpec()
    scales, angles, flips, shifts = [], [], [], []
    c = np.array([W / 2, H / 2])
    for seed in range(400):
        m, flipped = spec.geometric(np.random.default_rng(seed), (H, W))
        lin = m[:2, :2]
        s = float(np.sqrt(abs(np.linalg.det(lin))))
        scales.append(s)
        angles.append(np.degrees(np.arctan2(lin[1, 0], abs(lin[0, 0]))))
        flips.append(flipped)
        assert (np.linalg.det(lin) < 0) == flipped
        shifts.append(np.abs(np.linalg.solve(lin, c - m[:2, 2]) - c))  # source point sent to the centre
    scales, angles = np.array(scales), np.abs(np.array(angles))
    assert 0.8 <= scales.min() and scales.max() <= 1.2 and scales.max() - scales.min() > 0.35
    assert angles.max() <= 20.0 + 1e-6 and angles.max() > 15
    assert 0.12 < np.mean(angles > 1e-6) < 0.28  # rotation with probability 0.2
    assert 0.4 < np.mean(flips) < 0.6
    bound = np.abs(c / 0.8 - c) + 0.1 * c
    assert (np.array(shifts) <= bound + 1e-6).all()


def test_seeded_same_seed_same_sample_other_seed_other_sample() -> None:
    tf = transform(AugmentSpec(cutout_prob=0.5, blur_prob=0.5))
    image = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    a, ka = tf(image, KPS, np.random.default_rng(11))
    b, kb = tf(image, KPS, np.random.default_rng(11))
    c, kc = tf(image, KPS, np.random.default_rng(12))
    assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(ka, kb)
    assert not np.array_equal(a.numpy(), c.numpy()) and not np.array_equal(ka, kc)


def test_appearance_steps_change_pixels_not_keypoints() -> None:
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    cut = augment.cutout(image, rng, prob=1.0)
    assert (cut == 0).all(axis=2).sum() > 0 and cut.shape == image.shape
    assert not np.array_equal(augment.blur(image, np.random.default_rng(0), prob=1.0), image)
    assert np.array_equal(augment.blur(image, np.random.default_rng(0), prob=0.0), image)
    jittered = augment.photometric(image, np.random.default_rng(1), 2, (5, 23))
    assert jittered.dtype == np.uint8 and jittered.shape == image.shape
    geo_only = replace(AugmentSpec(), photometric_ops=0, blur_prob=0.0, cutout_prob=0.0)
    full = AugmentSpec(cutout_prob=1.0, blur_prob=1.0)
    for seed in range(3):
        _, k1 = transform(geo_only)(image, KPS, np.random.default_rng(seed))
        _, k2 = transform(full)(image, KPS, np.random.default_rng(seed))
        np.testing.assert_array_equal(k1, k2)  # the same geometry: appearance draws come after


def test_default_transform_is_unchanged_by_the_new_field() -> None:
    image = np.random.default_rng(0).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    kps = np.random.default_rng(1).uniform(0, 1, (10, 2)).astype(np.float32)
    base = Transform(128, 64, (0.5,) * 3, (0.25,) * 3, train=True, pad=4, erase_prob=0.5)
    with_none = Transform(128, 64, (0.5,) * 3, (0.25,) * 3, train=True, pad=4, erase_prob=0.5,
                          augment=augment.recipe("none"))
    for seed in range(4):
        a, ka = base(image, kps, np.random.default_rng(seed))
        b, kb = with_none(image, kps, np.random.default_rng(seed))
        assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(ka, kb)


def test_recipe_is_a_config_key() -> None:
    cfg = resolve_config("synthetic-faces", "kprpe", overrides=["data.augment=cvlface"])
    assert augment.recipe(cfg.data.augment) == AugmentSpec()
    assert resolve_config("synthetic-faces", "kprpe").data.augment == "none"
    with pytest.raises(ConfigError, match="data.augment"):
        resolve_config("synthetic-faces", "kprpe", overrides=["data.augment=cvlfce"])
    with pytest.raises(ConfigError, match="data.aug_affine"):
        resolve_config("synthetic-faces", "kprpe", overrides=["data.augment=cvlface", "data.aug_affine=2"])
    from reidbench.config_rules import AUGMENT_RECIPES

    assert AUGMENT_RECIPES == tuple(augment.RECIPES)


def test_records_from_before_the_recipe_and_head_keys_read_as_what_they_ran(tmp_path: Path) -> None:
    """Run records written before ``data.augment`` and ``model.head`` existed ran with no recipe
    and the CLS head: that is what reading them gives (an explicit migration, not a default)."""
    data = to_dict(RunConfig())
    del data["data"]["augment"], data["model"]["head"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = read_run_config(path)
    assert (cfg.data.augment, cfg.model.head) == ("none", "cls")
