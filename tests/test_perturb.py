"""Perturbations: exact matrices, image/keypoint consistency, severity 0, seeding, training
augmentation that moves keypoints with the image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_perturb_distribution import LEVELS

from reidbench.config import RunConfig, from_dict
from reidbench.data import geometry as G
from reidbench.data import perturb as P
from reidbench.data.transforms import Transform
from reidbench.datasets.base import BODY_KEYPOINTS, FACE_KEYPOINTS, ImageRecord, ReidSplit
from reidbench.engine.trainer import train_transform
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.evaluation.robustness import ImageStore, PerturbedDataset
from reidbench.registry import PERTURBATIONS

HW = (128, 64)
GEOMETRIC = ("scale", "rotate", "translate", "affine")


def centre(hw: tuple[int, int] = HW) -> np.ndarray:
    return np.array([hw[1] / 2, hw[0] / 2])


def draws(name: str, severity: int, n: int = 20, hw: tuple[int, int] = HW, k: int = 5
          ) -> list[P.Misalignment]:
    pert = P.build_perturbation(name)
    return [pert.draw(severity, P.sample_rng(0, name, "query", i), hw, k) for i in range(n)]


def test_registry_holds_the_six_perturbations() -> None:
    assert PERTURBATIONS.names() == ["affine", "affine_kpnoise", "kpnoise", "rotate", "scale", "translate"]
    with pytest.raises(ReidbenchError, match="unknown perturbation 'blur'; expected one of: affine"):
        P.build_perturbation("blur")


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_scale_moves_points_exactly_by_the_level(severity: int) -> None:
    d = P.SCALE_LEVELS[severity]
    c = centre()
    pts = np.array([[0.0, 0.0], [64.0, 128.0], [10.0, 90.0], [32.0, 64.0]])
    signs = set()
    for mis in draws("scale", severity):
        out = G.transform_points(pts, mis.matrix)
        factor = (out[0] - c)[0] / (pts[0] - c)[0]
        assert factor == pytest.approx(1 - d) or factor == pytest.approx(1 + d)
        np.testing.assert_allclose(out, c + factor * (pts - c), atol=1e-9)  # about the centre
        signs.add(factor > 1)
        assert mis.keypoint_noise is None
    assert signs == {True, False}  # both zoom in and zoom out are drawn


@pytest.mark.parametrize("severity", [1, 5])
def test_rotate_turns_points_about_the_centre_by_the_level(severity: int) -> None:
    a = P.ROTATE_LEVELS[severity]
    c = centre()
    p = np.array([[c[0] + 20.0, c[1]]])  # 20 px right of the centre
    angles = set()
    for mis in draws("rotate", severity):
        q = G.transform_points(p, mis.matrix)[0] - c
        assert np.hypot(*q) == pytest.approx(20.0)
        # y points down: counter-clockwise on screen is a negative y
        angle = math.degrees(math.atan2(-q[1], q[0]))
        assert abs(angle) == pytest.approx(a)
        angles.add(round(angle, 6))
        np.testing.assert_allclose(G.transform_points(c[None], mis.matrix)[0], c, atol=1e-9)
    assert len(angles) == 2


def test_rotate_known_point() -> None:
    # +40 degrees counter-clockwise about the centre of a 128x64 image, exactly as documented
    m = G.about((32.0, 64.0), G.rotation(40.0))
    t = math.radians(40)
    expected = [32 + 20 * math.cos(t), 64 - 20 * math.sin(t)]
    np.testing.assert_allclose(G.transform_points(np.array([[52.0, 64.0]]), m)[0], expected, atol=1e-12)


@pytest.mark.parametrize("severity", [2, 5])
def test_translate_shifts_by_the_level_of_the_size(severity: int) -> None:
    t = P.TRANSLATE_LEVELS[severity]
    for mis in draws("translate", severity):
        m = mis.matrix
        np.testing.assert_allclose(m[:2, :2], np.eye(2))  # a pure shift
        dx, dy = m[0, 2] / HW[1], m[1, 2] / HW[0]
        assert math.hypot(dx, dy) == pytest.approx(t)


def test_affine_is_a_similarity_within_the_ranges() -> None:
    a, d, t = P.affine_range(4)  # type: ignore[misc]
    for mis in draws("affine", 4, n=50):
        m = mis.matrix
        scale = math.sqrt(abs(np.linalg.det(m[:2, :2])))
        np.testing.assert_allclose(m[:2, :2] @ m[:2, :2].T, scale**2 * np.eye(2), atol=1e-9)
        assert 1 - d - 1e-9 <= scale <= 1 + d + 1e-9
        assert abs(math.degrees(math.atan2(-m[1, 0], m[0, 0]))) <= a + 1e-9
        # the centre moves by the shift only
        shift = G.transform_points(centre()[None], m)[0] - centre()
        assert abs(shift[0]) <= t * HW[1] + 1e-9 and abs(shift[1]) <= t * HW[0] + 1e-9


def test_kpnoise_leaves_the_image_and_has_the_documented_std() -> None:
    mis = draws("kpnoise", 5, n=400, k=10)
    assert all(np.array_equal(m.matrix, np.eye(3)) for m in mis)
    noise = np.stack([m.keypoint_noise for m in mis])  # (400, 10, 2)
    assert noise.std() == pytest.approx(P.KPNOISE_LEVELS[5], rel=0.05)
    assert abs(noise.mean()) < 0.005


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_severity_zero_is_the_identity(name: str) -> None:
    for mis in draws(name, 0, n=5):
        assert mis.is_identity
        assert np.array_equal(mis.matrix, np.eye(3))


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_same_sample_same_direction_at_every_severity(name: str) -> None:
    """Common random numbers: only the magnitude grows with the severity."""
    low, high = draws(name, 1, n=8), draws(name, 5, n=8)
    for a, b in zip(low, high):
        if name in ("kpnoise", "affine_kpnoise"):
            np.testing.assert_allclose(a.keypoint_noise * 5, b.keypoint_noise, rtol=1e-5)
        elif name == "translate":
            np.testing.assert_allclose(a.matrix[:2, 2] * 5, b.matrix[:2, 2], atol=1e-9)
        elif name == "rotate":
            assert np.sign(a.matrix[0, 1]) == np.sign(b.matrix[0, 1])
        elif name == "scale":
            assert (a.matrix[0, 0] > 1) == (b.matrix[0, 0] > 1)


@pytest.mark.parametrize("severity", [1, 5])
def test_affine_kpnoise_is_an_affine_draw_then_kpnoise_at_the_same_severity(severity: int) -> None:
    """Same generator state: the matrix is exactly what ``affine`` draws from it, the noise exactly
    what ``kpnoise`` then draws (so its levels and their documented std hold)."""
    pert = P.build_perturbation("affine_kpnoise")
    for i in range(10):
        rng = P.sample_rng(0, "affine_kpnoise", "query", i)
        mis = pert.draw(severity, rng, HW, 5)
        rng = P.sample_rng(0, "affine_kpnoise", "query", i)
        matrix = P.build_perturbation("affine").draw(severity, rng, HW, 5).matrix
        noise = P.build_perturbation("kpnoise").draw(severity, rng, HW, 5).keypoint_noise
        np.testing.assert_array_equal(mis.matrix, matrix)
        np.testing.assert_array_equal(mis.keypoint_noise, noise)
        assert not np.array_equal(mis.matrix, np.eye(3)) and mis.keypoint_noise.any()
    assert pert.kind == "keypoints"  # skipped on sets without keypoints: it would be affine
    assert pert.describe(0) == "none"
    assert pert.describe(5) == (P.build_perturbation("affine").describe(5) + "; keypoints "
                                + P.build_perturbation("kpnoise").describe(5))


def test_affine_kpnoise_moves_the_image_and_then_the_keypoints_off_it(tmp_path) -> None:
    """The drawn dot lands where the matrix puts the clean keypoint; the keypoint the model gets
    is that place plus the noise (a detector's error on the misaligned image)."""
    records = [dot_record(tmp_path, f"dot{i}", (96, 48), (18 + 3 * i, 40 + 4 * i)) for i in range(6)]
    tf = Transform(128, 64, (0.0,) * 3, (1.0,) * 3)
    ds = PerturbedDataset(ImageStore(records), tf, 1, P.build_perturbation("affine_kpnoise"), 3, seed=3)
    clean = PerturbedDataset(ImageStore(records), tf, 1)
    size = np.array([64, 128])
    checked = 0
    for i in range(len(records)):
        mis = ds.misalignment(i)
        item = ds[i]
        moved = G.transform_points((clean[i]["keypoints"][0].numpy() * size)[None], mis.matrix)[0]
        given = item["keypoints"][0].numpy()
        np.testing.assert_allclose(given, moved / size + mis.keypoint_noise[0], atol=1e-5)
        assert np.abs(given * size - moved).max() > 0.5  # off by the noise
        if 3 < moved[0] < 61 and 3 < moved[1] < 125:
            np.testing.assert_allclose(dot_centroid(item["image"]), moved, atol=0.4)
            checked += 1
    assert checked >= 3


def test_bad_severity_and_names() -> None:
    with pytest.raises(ConfigError, match="severity must be an integer in 0..5"):
        P.build_perturbation("scale").draw(6, np.random.default_rng(0), HW)
    with pytest.raises(ConfigError, match="malformed severities"):
        P.parse_severities("a-b")
    with pytest.raises(ConfigError, match="severity must be"):
        P.parse_severities("0-7")
    with pytest.raises(ReidbenchError, match="unknown perturbation 'zoom'"):
        P.parse_names("scale,zoom")


def test_parse_severities_and_names() -> None:
    assert P.parse_severities(None) == (0, 1, 2, 3, 4, 5)
    assert P.parse_severities("0-5") == (0, 1, 2, 3, 4, 5)
    assert P.parse_severities("1,3,5") == (0, 1, 3, 5)  # clean always included
    assert P.parse_severities("2-3,5") == (0, 2, 3, 5)
    assert P.parse_names(None) == ("scale", "rotate", "translate", "affine", "kpnoise")
    assert P.parse_names("") == P.parse_names(None)  # the default set: single perturbations
    assert P.parse_names("all") == ("scale", "rotate", "translate", "affine", "kpnoise", "affine_kpnoise")
    assert P.parse_names("affine_kpnoise,kpnoise") == ("affine_kpnoise", "kpnoise")
    assert P.parse_names("rotate, scale,rotate") == ("rotate", "scale")


def dot_record(tmp_path, name: str, hw: tuple[int, int], xy: tuple[int, int]) -> ImageRecord:
    """An image with a bright 5x5 dot whose centre is the record's only keypoint."""
    from PIL import Image

    h, w = hw
    x, y = xy
    img = np.zeros((h, w, 3), np.uint8)
    img[y - 2:y + 3, x - 2:x + 3] = 255
    path = tmp_path / f"{name}.png"
    Image.fromarray(img).save(path)
    kps = np.array([[(x + 0.5) / w, (y + 0.5) / h]], np.float32)
    return ImageRecord(str(path), 1, 0, kps)


def dot_centroid(image: torch.Tensor) -> np.ndarray:
    """Intensity centroid (continuous pixel frame) of a (3, H, W) image in [0, 1]."""
    v = image[0].numpy()
    ys, xs = np.nonzero(v > 0.25)
    w = v[ys, xs]
    return np.array([np.average(xs, weights=w), np.average(ys, weights=w)]) + 0.5


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("severity", [2, 5])
def test_keypoint_drawn_on_the_image_lands_where_the_perturbed_keypoint_says(
    tmp_path, name: str, severity: int,
) -> None:
    # source images at another size than the model input: resize and perturbation in one matrix
    records = [dot_record(tmp_path, f"dot{i}", (96, 48), (18 + 3 * i, 40 + 4 * i)) for i in range(6)]
    tf = Transform(128, 64, (0.0,) * 3, (1.0,) * 3)
    ds = PerturbedDataset(ImageStore(records), tf, 1, P.build_perturbation(name), severity, seed=3)
    clean = PerturbedDataset(ImageStore(records), tf, 1)
    checked = 0
    for i in range(len(records)):
        item = ds[i]
        kp = item["keypoints"][0].numpy() * np.array([64, 128])
        # the matrix acts in the model input's pixel frame, after the resize
        clean_kp = clean[i]["keypoints"][0].numpy() * np.array([64, 128])
        np.testing.assert_allclose(kp, G.transform_points(clean_kp[None], ds.misalignment(i).matrix)[0],
                                   atol=1e-4)
        if not (3 < kp[0] < 61 and 3 < kp[1] < 125):
            continue  # moved out of the image: nothing to see
        np.testing.assert_allclose(dot_centroid(item["image"]), kp, atol=0.4)
        checked += 1
    assert checked >= 3


def test_kpnoise_moves_keypoints_not_pixels(tmp_path) -> None:
    records = [dot_record(tmp_path, "dot", (128, 64), (30, 60))]
    tf = Transform(128, 64, (0.0,) * 3, (1.0,) * 3)
    clean = PerturbedDataset(ImageStore(records), tf, 1)[0]
    noisy = PerturbedDataset(ImageStore(records), tf, 1, P.build_perturbation("kpnoise"), 5, seed=0)
    item = noisy[0]
    assert torch.equal(item["image"], clean["image"])
    expected = clean["keypoints"].numpy() + noisy.misalignment(0).keypoint_noise
    np.testing.assert_allclose(item["keypoints"].numpy(), expected, atol=1e-7)
    assert not np.allclose(item["keypoints"].numpy(), clean["keypoints"].numpy())


@pytest.mark.parametrize("name", PERTURBATIONS.names())
def test_severity_zero_gives_exactly_the_clean_sample(tmp_path, name: str) -> None:
    from reidbench.data.loader import ImageDataset

    records = [dot_record(tmp_path, f"d{i}", (100, 50), (20, 30 + i)) for i in range(3)]
    tf = Transform(128, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    plain = ImageDataset(records, tf, 1)
    zero = PerturbedDataset(ImageStore(records), tf, 1, P.build_perturbation(name), 0, seed=9)
    for i in range(3):
        assert torch.equal(plain[i]["image"], zero[i]["image"])
        assert torch.equal(plain[i]["keypoints"], zero[i]["keypoints"])


def test_clean_sample_matches_the_loader_for_aligned_faces(tmp_path) -> None:
    """Faces aligned at load time (datasets.alignment) reach the sweep exactly as the loader
    gives them to `reidbench run`, and the perturbation acts on the aligned image."""
    from PIL import Image

    from reidbench.data.loader import ImageDataset
    from reidbench.datasets.base import FaceAlign

    rng = np.random.default_rng(1)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (150, 130, 3), dtype=np.uint8)).save(path)
    kps = np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.75], [0.62, 0.75]], np.float32)
    records = [ImageRecord(str(path), 0, 0, kps, align=FaceAlign(size=112))]
    tf = Transform(112, 112, (0.5,) * 3, (0.5,) * 3)
    plain = ImageDataset(records, tf, 5)[0]
    clean = PerturbedDataset(ImageStore(records), tf, 5)[0]
    assert torch.equal(plain["image"], clean["image"]) and torch.equal(plain["keypoints"], clean["keypoints"])
    moved = PerturbedDataset(ImageStore(records), tf, 5, P.build_perturbation("rotate"), 3, seed=0)
    expected = G.transform_points(plain["keypoints"].numpy() * 112, moved.misalignment(0).matrix) / 112
    np.testing.assert_allclose(moved[0]["keypoints"].numpy(), expected, atol=1e-5)


def test_same_seed_same_perturbed_batch_in_any_order(tmp_path) -> None:
    rng = np.random.default_rng(0)
    from PIL import Image

    records = []
    for i in range(6):
        path = tmp_path / f"r{i}.png"
        Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), i, 0, rng.random((10, 2)).astype(np.float32)))
    tf = Transform(128, 64, (0.5,) * 3, (0.5,) * 3)
    pert = P.build_perturbation("affine")
    a = PerturbedDataset(ImageStore(records), tf, 10, pert, 3, seed=7)
    b = PerturbedDataset(ImageStore(records), tf, 10, pert, 3, seed=7)
    c = PerturbedDataset(ImageStore(records), tf, 10, pert, 3, seed=8)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["keypoints"], y["keypoints"])
    assert any(not torch.equal(x["image"], c[i]["image"]) for i, x in enumerate(forward))
    # a subset keeps each record's own draw
    sub = PerturbedDataset(ImageStore(records), tf, 10, pert, 3, seed=7, indices=np.array([4, 1]))
    assert torch.equal(sub[0]["image"], forward[4]["image"]) and sub[0]["index"] == 4
    assert len(sub) == 2


# ----------------------------------------------------------------- training augmentation


def channel_centroid(image: torch.Tensor, channel: int) -> np.ndarray | None:
    """Intensity centroid (continuous pixel frame) of one channel of a (3, H, W) image, or None
    when nothing of it is visible."""
    v = image[channel].numpy()
    ys, xs = np.nonzero(v > 0.25)
    if len(xs) == 0:
        return None
    w = v[ys, xs]
    return np.array([np.average(xs, weights=w), np.average(ys, weights=w)]) + 0.5


def test_training_affine_moves_keypoints_with_the_image_and_swaps_on_flip() -> None:
    """Two keypoints drawn as a red and a green dot: after the training transform (random
    similarity, flip with a left/right swap) each dot lies where its keypoint says, whichever
    way the coin fell; under a flip the red dot's keypoint is listed second."""
    h, w = 128, 64
    flips, checked = set(), 0
    for seed in range(16):
        img = np.zeros((h, w, 3), np.uint8)
        dots = [(16 + seed, 40 + 3 * seed), (44 - seed, 90 - 2 * seed)]
        for channel, (x, y) in enumerate(dots):
            img[y - 2:y + 3, x - 2:x + 3, channel] = 255
        kps = np.array([[(x + 0.5) / w, (y + 0.5) / h] for x, y in dots], np.float32)
        tf = Transform(h, w, (0.0,) * 3, (1.0,) * 3, train=True, flip_prob=0.5,
                       flip_perm=(1, 0), affine=P.affine_range(3))
        out, moved = tf(img, kps, np.random.default_rng(seed))
        moved = moved * np.array([w, h])
        red, green = channel_centroid(out, 0), channel_centroid(out, 1)
        inside = all(3 < v[0] < w - 3 and 3 < v[1] < h - 3 for v in moved)
        if red is None or green is None or not inside:
            continue
        flipped = bool(np.linalg.norm(red - moved[1]) < np.linalg.norm(red - moved[0]))
        np.testing.assert_allclose(red, moved[1 if flipped else 0], atol=0.4)
        np.testing.assert_allclose(green, moved[0 if flipped else 1], atol=0.4)
        flips.add(flipped)
        checked += 1
    assert checked >= 8 and flips == {True, False}


def test_training_affine_option_leaves_the_flip_and_pad_draws_alone() -> None:
    """A zero-range similarity (still drawn) gives the keypoints of the recipe without it: adding
    the option does not change which images are flipped or how far they are shifted."""
    img = np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)
    kps = np.random.default_rng(1).random((10, 2)).astype(np.float32)
    kw = dict(train=True, pad=8, erase_prob=0.5, flip_perm=tuple(range(9, -1, -1)))
    base = Transform(128, 64, (0.5,) * 3, (0.5,) * 3, **kw)  # type: ignore[arg-type]
    zero = Transform(128, 64, (0.5,) * 3, (0.5,) * 3, affine=(0.0, 0.0, 0.0), **kw)  # type: ignore[arg-type]
    some = Transform(128, 64, (0.5,) * 3, (0.5,) * 3, affine=P.affine_range(2), **kw)  # type: ignore[arg-type]
    for seed in range(10):
        _, ka = base(img, kps, np.random.default_rng(seed))
        _, kz = zero(img, kps, np.random.default_rng(seed))
        _, ks = some(img, kps, np.random.default_rng(seed))
        np.testing.assert_allclose(kz, ka, atol=1e-6)
        assert not np.allclose(ks, ka)


# (flipped, tx, ty) of the default recipe's training transform (pad 8, flip 0.5, erasing 0.5) for
# np.random.default_rng(seed), seeds 0..5. Recorded runs (results/runs) are reproducible to the
# last digit only while the augmentation stream stays the same: this pins it by its effect.
DEFAULT_RECIPE_DRAWS = [(False, 0, -4), (False, 4, 8), (True, -7, -3), (True, -5, -4), (False, 6, 0),
                        (False, -8, 5)]


def test_default_training_transform_is_a_flip_and_an_integer_shift_per_seed() -> None:
    w, h = 64, 128
    kps = np.array([[0.25, 0.5], [0.75, 0.125]], np.float32)
    tf = Transform(h, w, (0.5,) * 3, (0.5,) * 3, train=True, pad=8, erase_prob=0.5, flip_perm=(1, 0))
    pts = kps * np.array([w, h])
    for seed, (flipped, tx, ty) in enumerate(DEFAULT_RECIPE_DRAWS):
        _, moved = tf(np.zeros((h, w, 3), np.uint8), kps, np.random.default_rng(seed))
        expected = np.stack([w - pts[:, 0], pts[:, 1]], 1)[::-1] if flipped else pts  # x -> W - x, swapped
        np.testing.assert_allclose(moved * np.array([w, h]), expected + [tx, ty], atol=1e-4)


def test_config_aug_affine_reaches_the_training_transform() -> None:
    split = ReidSplit("s", None, [], [], [], BODY_KEYPOINTS)  # type: ignore[arg-type]
    assert train_transform(RunConfig(), split).affine is None  # the default recipe is unchanged
    cfg = from_dict(RunConfig, {"data": {"aug_affine": 3, "aug_affine_prob": 0.5}})
    tf = train_transform(cfg, split)
    # the sweep's "affine" ranges at severity 3: the rotate, scale and translate levels the
    # perturbation module's table documents
    documented = tuple(LEVELS[name][2] for name in ("rotate", "scale", "translate"))
    assert tf.affine == P.affine_range(3) == pytest.approx(documented) and tf.affine_prob == 0.5
    assert tf.flip_perm == tuple(BODY_KEYPOINTS.flip_permutation())
    with pytest.raises(ConfigError, match=r"data.aug_affine must be an integer in 0..5"):
        train_transform(from_dict(RunConfig, {"data": {"aug_affine": 9}}), split)  # refused by the config


def test_face_flip_permutation_under_eval_perturbation(tmp_path) -> None:
    """A perturbed face keeps its landmark order (no flip at evaluation)."""
    records = [dot_record(tmp_path, "f", (112, 112), (40, 50))]
    kps = np.array([[0.35, 0.45], [0.65, 0.45], [0.5, 0.6], [0.38, 0.75], [0.62, 0.75]], np.float32)
    records = [ImageRecord(records[0].path, 0, 0, kps)]
    tf = Transform(112, 112, (0.0,) * 3, (1.0,) * 3)
    ds = PerturbedDataset(ImageStore(records), tf, FACE_KEYPOINTS.num_keypoints,
                          P.build_perturbation("rotate"), 2, seed=0)
    out = ds[0]["keypoints"].numpy()
    expected = G.transform_keypoints(kps, ds.misalignment(0).matrix, (112, 112), (112, 112))
    np.testing.assert_allclose(out, expected, atol=1e-6)
