"""Identity, pose and camera parameters of the synthetic re-ID set, drawn from seeded generators
(``reid_render`` draws the images from them).

An identity is everything that makes one person recognisable (proportions, skin, hair, clothing
colours and pattern, accessory) and depends only on its generator; a pose is one image's
articulation; a camera fixes a colour cast, blur, person scale and the scene behind people.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

CROP_HW = (128, 64)  # saved image (height, width), as Market-1501 crops
NUM_CAMERAS = 6
JPEG_QUALITY = 90

PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots")
ACCESSORIES = ("none", "bag", "backpack", "hat")

CANVAS_HW = (192, 128)  # canonical body frame (height, width) in pixels
CANVAS_MARGIN = 8.0  # free pixels above the head and below the feet in the canonical frame
BACKDROP_HW = (192, 224)  # per-camera scene a crop's background is cut from

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Identity, pose and camera parameters


@dataclass(frozen=True)
class Identity:
    """Everything that makes one person recognisable; stable per (seed, pid).

    Lengths are fractions of the body height (top of head to soles).
    """

    height: float  # body height as a fraction of the usable canonical canvas height
    shoulder: float  # half shoulder width
    hip: float  # half hip width
    leg: float  # hip-to-ankle length
    head: float  # head half-height
    skin: RGB
    hair: RGB
    long_hair: bool
    shirt: RGB
    shirt2: RGB  # second colour of the shirt pattern
    pattern: str  # one of PATTERNS
    period: float  # pattern period in canonical pixels
    long_sleeves: bool
    trousers: RGB
    shorts: bool
    shoes: RGB
    accessory: str  # one of ACCESSORIES
    accessory_colour: RGB
    bag_side: int  # -1: the person's right, +1: the person's left


@dataclass(frozen=True)
class Pose:
    """Per-image articulation; angles in degrees, index 0 = the person's right limb."""

    arm_out: tuple[float, float]  # abduction of each arm away from the body
    arm_swing: tuple[float, float]  # forward/backward swing (foreshortens the arm)
    leg_spread: tuple[float, float]  # each leg's angle away from vertical (negative: inward)
    stride: float  # in [-1, 1]: which foot is forward (lower in the image) and by how much


@dataclass(frozen=True, eq=False)
class Camera:
    """Fixed per camera: colour cast, blur, person scale and the scene behind people."""

    index: int  # 1..NUM_CAMERAS, as in the file names
    gains: tuple[float, float, float]  # per-channel colour cast
    blur_sigma: float  # Gaussian blur in crop pixels
    height_frac: float  # person height as a fraction of the crop height
    noise: float  # per-pixel sensor noise (std, 0..255 scale)
    backdrop: np.ndarray  # (Hb, Wb, 3) float32 scene, crops' backgrounds are cut from it


@dataclass(frozen=True, eq=False)
class PersonLayer:
    """A rendered person in the canonical frame: premultiplied by a binary alpha.

    ``keypoints`` are (10, 2) pixel coordinates in the continuous frame of the canvas
    (``BODY_KEYPOINTS`` order); ``bbox`` is (x0, y0, x1, y1) of the drawn pixels.
    """

    rgb: np.ndarray  # (H, W, 3) uint8, zero outside the person
    alpha: np.ndarray  # (H, W) uint8, 0 or 255
    keypoints: np.ndarray  # (10, 2) float64
    bbox: tuple[float, float, float, float]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(255 * r), round(255 * g), round(255 * b))


def clothing_colour(rng: np.random.Generator) -> RGB:
    """Saturated colours most of the time, greys/black/white otherwise (as in real clothing)."""
    if rng.random() < 0.3:
        v = float(rng.choice([0.1, 0.25, 0.5, 0.75, 0.93])) + float(rng.uniform(-0.05, 0.05))
        return _hsv(float(rng.random()), float(rng.uniform(0.0, 0.12)), min(max(v, 0.05), 0.97))
    return _hsv(float(rng.random()), float(rng.uniform(0.4, 0.95)), float(rng.uniform(0.35, 0.95)))


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _contrasting_colour(rng: np.random.Generator, other: RGB, min_distance: float = 110.0) -> RGB:
    for _ in range(32):
        colour = clothing_colour(rng)
        if _distance(colour, other) >= min_distance:
            return colour
    return (235, 235, 235) if sum(other) < 3 * 128 else (25, 25, 25)


_SKIN_LIGHT = np.array([236.0, 200.0, 172.0])
_SKIN_DARK = np.array([92.0, 60.0, 42.0])
_HAIR = ((20, 16, 14), (58, 38, 24), (110, 72, 40), (196, 160, 96), (150, 150, 150), (140, 52, 28))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's appearance (all attributes from ``rng``, in a fixed order)."""
    t = float(rng.beta(1.6, 1.6))
    skin = tuple(int(round(c)) for c in (1 - t) * _SKIN_LIGHT + t * _SKIN_DARK)
    hair_base = np.array(_HAIR[int(rng.integers(len(_HAIR)))], dtype=np.float64)
    hair = tuple(int(c) for c in np.clip(hair_base + rng.normal(0, 8, 3), 0, 255).round())
    shirt = clothing_colour(rng)
    shirt2 = _contrasting_colour(rng, shirt)
    trousers = clothing_colour(rng)
    if rng.random() < 0.4:  # jeans-like blues and dark greys are common
        trousers = _hsv(float(rng.uniform(0.55, 0.65)), float(rng.uniform(0.2, 0.6)),
                        float(rng.uniform(0.2, 0.55)))
    accessory = str(rng.choice(ACCESSORIES, p=[0.4, 0.2, 0.2, 0.2]))
    dark = _hsv(0.0, 0.0, float(rng.uniform(0.05, 0.3)))
    shoes = clothing_colour(rng) if rng.random() < 0.3 else dark
    return Identity(
        height=float(rng.uniform(0.86, 1.0)),
        shoulder=float(rng.uniform(0.10, 0.135)),
        hip=float(rng.uniform(0.065, 0.085)),
        leg=float(rng.uniform(0.43, 0.49)),
        head=float(rng.uniform(0.062, 0.075)),
        skin=skin,  # type: ignore[arg-type]
        hair=hair,  # type: ignore[arg-type]
        long_hair=bool(rng.random() < 0.3),
        shirt=shirt,
        shirt2=shirt2,
        pattern=str(rng.choice(PATTERNS, p=[0.3, 0.2, 0.15, 0.15, 0.2])),
        period=float(rng.uniform(9.0, 16.0)),
        long_sleeves=bool(rng.random() < 0.5),
        trousers=trousers,
        shorts=bool(rng.random() < 0.25),
        shoes=shoes,
        accessory=accessory,
        accessory_colour=clothing_colour(rng),
        bag_side=int(rng.choice([-1, 1])),
    )


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw a walking/standing pose."""
    swing = float(rng.uniform(-35.0, 35.0))
    return Pose(
        arm_out=(float(rng.uniform(3.0, 18.0)), float(rng.uniform(3.0, 18.0))),
        arm_swing=(swing, -swing + float(rng.normal(0.0, 5.0))),
        leg_spread=(float(rng.uniform(-2.0, 9.0)), float(rng.uniform(-2.0, 9.0))),
        stride=float(rng.uniform(-1.0, 1.0)),
    )


def _smooth_noise(
    rng: np.random.Generator, hw: tuple[int, int], cell: int, channels: int
) -> np.ndarray:
    """Low-frequency noise in [-1, 1]-ish: a coarse random grid upsampled bicubically."""
    coarse = rng.normal(0.0, 1.0, (hw[0] // cell + 2, hw[1] // cell + 2, channels))
    fine = cv2.resize(coarse.astype(np.float32), (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return fine.reshape(hw[0], hw[1], channels)


def _render_backdrop(rng: np.random.Generator) -> np.ndarray:
    """A camera's scene: wall over floor, low-frequency texture and clutter (pillars, windows)."""
    h, w = BACKDROP_HW
    wall = np.array(_hsv(float(rng.random()), float(rng.uniform(0.05, 0.4)),
                         float(rng.uniform(0.35, 0.85))), dtype=np.float32)
    floor = np.array(_hsv(float(rng.random()), float(rng.uniform(0.0, 0.3)),
                          float(rng.uniform(0.25, 0.7))), dtype=np.float32)
    horizon = int(h * rng.uniform(0.45, 0.75))
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:horizon] = wall
    img[horizon:] = floor
    ramp = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.15), h, dtype=np.float32)
    img *= ramp[:, None, None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for y in range(horizon + int(rng.integers(4, 10)), h, int(rng.integers(8, 20))):  # floor tiles
        draw.line([(0, y), (w, y)], fill=tuple(int(c * 0.85) for c in floor), width=1)
    for _ in range(int(rng.integers(4, 12))):  # windows, signs, doors, shelves
        x0, y0 = float(rng.uniform(-20, w)), float(rng.uniform(-20, horizon))
        bw, bh = float(rng.uniform(10, 60)), float(rng.uniform(8, 70))
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=clothing_colour(rng))
    for _ in range(int(rng.integers(1, 4))):  # pillars / poles
        x0, bw = float(rng.uniform(0, w)), float(rng.uniform(3, 24))
        draw.rectangle([x0, 0, x0 + bw, h], fill=_hsv(0, 0, float(rng.uniform(0.2, 0.9))))
    out = np.asarray(pil, dtype=np.float32)
    out = out + float(rng.uniform(6, 20)) * _smooth_noise(rng, (h, w), 24, 1)
    out = out + float(rng.uniform(2, 8)) * _smooth_noise(rng, (h, w), 4, 3)
    return np.clip(out, 0, 255).astype(np.float32)


def sample_camera(rng: np.random.Generator, index: int) -> Camera:
    """Draw camera ``index`` (1..6): colour cast, blur, person scale, noise and scene."""
    gains = tuple(float(g) for g in rng.uniform(0.8, 1.2, 3))
    return Camera(
        index=index,
        gains=gains,  # type: ignore[arg-type]
        blur_sigma=float(rng.uniform(0.3, 1.3)),
        height_frac=float(rng.uniform(0.7, 0.95)),
        noise=float(rng.uniform(1.0, 5.0)),
        backdrop=_render_backdrop(rng),
    )
