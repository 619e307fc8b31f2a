"""A synthetic person re-ID set written in the exact Market-1501 on-disk layout.

``generate_synthetic_reid(root)`` draws cartoon pedestrians whose identity lives in appearance
placed relative to the body (clothing colours and pattern, proportions, hair, skin, accessory)
and writes them as 64x128 JPEG crops named like Market-1501
(``PPPP_cCsS_FFFFFF_BB.jpg``; junk ``-1_...``) into ``bounding_box_train/``,
``bounding_box_test/`` and ``query/``, plus a ``keypoints.csv`` sidecar with the 10
``BODY_KEYPOINTS`` of every non-junk image and a ``manifest.json`` written last.

Each person is drawn in a canonical body frame defined by its keypoints, then placed into the
crop by one affine matrix (``reidbench.data.geometry``) applied to image and keypoints together.
Six cameras differ in colour cast, background, blur and person scale; each image varies pose
(arm swing, leg spread, stride, lean), view (front or back), placement and lighting.

All randomness comes from ``np.random.SeedSequence(seed).spawn(...)`` streams: one per identity,
camera, distractor, junk image and image, so an identity's attributes depend only on
``(seed, pid)`` and the same seed writes byte-identical files.
"""

from __future__ import annotations

import colorsys
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from reidbench.data import geometry
from reidbench.datasets.base import BODY_KEYPOINTS, DISTRACTOR_PID, JUNK_PID
from reidbench.datasets.keypoints import keypoints_csv_text
from reidbench.datasets.synth_writer import SynthWriter
from reidbench.errors import ConfigError

logger = logging.getLogger(__name__)

SYNTHETIC_REID_VERSION = 1
DEFAULT_IDS = 300
GENERATOR_NAME = "synthetic-reid"

CROP_HW = (128, 64)  # saved image (height, width), as Market-1501 crops
NUM_CAMERAS = 6
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
KEYPOINTS_FILE = "keypoints.csv"
MANIFEST_FILE = "manifest.json"
JPEG_QUALITY = 90

PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots")
ACCESSORIES = ("none", "bag", "backpack", "hat")

_CANVAS_HW = (192, 128)  # canonical body frame (height, width) in pixels
_CANVAS_MARGIN = 8.0  # free pixels above the head and below the feet in the canonical frame
_BACKDROP_HW = (192, 224)  # per-camera scene a crop's background is cut from

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


def _clothing_colour(rng: np.random.Generator) -> RGB:
    """Saturated colours most of the time, greys/black/white otherwise (as in real clothing)."""
    if rng.random() < 0.3:
        v = float(rng.choice([0.1, 0.25, 0.5, 0.75, 0.93])) + float(rng.uniform(-0.05, 0.05))
        return _hsv(float(rng.random()), float(rng.uniform(0.0, 0.12)), min(max(v, 0.05), 0.97))
    return _hsv(float(rng.random()), float(rng.uniform(0.4, 0.95)), float(rng.uniform(0.35, 0.95)))


def _distance(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _contrasting_colour(rng: np.random.Generator, other: RGB, min_distance: float = 110.0) -> RGB:
    for _ in range(32):
        colour = _clothing_colour(rng)
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
    shirt = _clothing_colour(rng)
    shirt2 = _contrasting_colour(rng, shirt)
    trousers = _clothing_colour(rng)
    if rng.random() < 0.4:  # jeans-like blues and dark greys are common
        trousers = _hsv(float(rng.uniform(0.55, 0.65)), float(rng.uniform(0.2, 0.6)),
                        float(rng.uniform(0.2, 0.55)))
    accessory = str(rng.choice(ACCESSORIES, p=[0.4, 0.2, 0.2, 0.2]))
    dark = _hsv(0.0, 0.0, float(rng.uniform(0.05, 0.3)))
    shoes = _clothing_colour(rng) if rng.random() < 0.3 else dark
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
        accessory_colour=_clothing_colour(rng),
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
    h, w = _BACKDROP_HW
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
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=_clothing_colour(rng))
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


# --------------------------------------------------------------------------------------------
# Rendering


class _Painter:
    """Draws filled shapes into an RGB image and its alpha mask; takes continuous-frame points."""

    def __init__(self, hw: tuple[int, int]) -> None:
        self.rgb = Image.new("RGB", (hw[1], hw[0]), (0, 0, 0))
        self.alpha = Image.new("L", (hw[1], hw[0]), 0)
        self._rgb = ImageDraw.Draw(self.rgb)
        self._alpha = ImageDraw.Draw(self.alpha)

    @staticmethod
    def _px(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        # PIL's integer coordinate x is the pixel covering [x, x + 1]: shift by half a pixel.
        return [(x - 0.5, y - 0.5) for x, y in points]

    def polygon(self, points: list[tuple[float, float]], colour: RGB) -> None:
        pts = self._px(points)
        self._rgb.polygon(pts, fill=colour)
        self._alpha.polygon(pts, fill=255)

    def ellipse(self, centre: tuple[float, float], rx: float, ry: float, colour: RGB) -> None:
        (x0, y0), (x1, y1) = self._px([(centre[0] - rx, centre[1] - ry),
                                       (centre[0] + rx, centre[1] + ry)])
        self._rgb.ellipse([x0, y0, x1, y1], fill=colour)
        self._alpha.ellipse([x0, y0, x1, y1], fill=255)

    def limb(self, p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float,
             colour: RGB) -> None:
        """A tapered segment from p0 (width w0) to p1 (width w1) with rounded ends."""
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        norm = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / norm, dx / norm
        self.polygon([
            (p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2), (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2), (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2),
        ], colour)
        self.ellipse(p0, w0 / 2, w0 / 2, colour)
        self.ellipse(p1, w1 / 2, w1 / 2, colour)

    def paste_where(self, mask: np.ndarray, colour: RGB) -> None:
        """Recolour the pixels of a boolean (H, W) mask (already covered by the alpha)."""
        self.rgb.paste(colour, None, Image.fromarray(mask.astype(np.uint8) * 255))


_GRID_Y, _GRID_X = np.mgrid[0:_CANVAS_HW[0], 0:_CANVAS_HW[1]].astype(np.float32) + 0.5


def _pattern_mask(identity: Identity, origin: tuple[float, float]) -> np.ndarray:
    """Where the second shirt colour goes, in body-relative coordinates (origin at the neck)."""
    p = identity.period
    x, y = _GRID_X - origin[0], _GRID_Y - origin[1]
    if identity.pattern == "hstripes":
        return np.floor(y / (p / 2)) % 2 == 1
    if identity.pattern == "vstripes":
        return np.floor(x / (p / 2) + 0.5) % 2 == 1
    if identity.pattern == "checks":
        return (np.floor(y / (p / 2)) + np.floor(x / (p / 2) + 0.5)) % 2 == 1
    if identity.pattern == "dots":
        u, v = (x + p / 2) % p - p / 2, y % p - p / 2
        return u * u + v * v < (0.24 * p) ** 2
    return np.zeros(_CANVAS_HW, dtype=bool)


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def body_keypoints(identity: Identity, pose: Pose) -> np.ndarray:
    """The (10, 2) canonical-frame keypoints of a front-view person, BODY_KEYPOINTS order."""
    canvas_h, canvas_w = _CANVAS_HW
    hb = identity.height * (canvas_h - 2 * _CANVAS_MARGIN)
    cx, feet = canvas_w / 2, canvas_h - _CANVAS_MARGIN
    top = feet - hb
    ry = identity.head * hb
    head = (cx, top + 1.1 * ry)
    neck = (cx, top + 2 * ry + 0.025 * hb)
    shoulder_y = neck[1] + 0.035 * hb
    ankle_y = feet - 0.035 * hb
    hip_y = ankle_y - identity.leg * hb
    arm, leg = 0.36 * hb, ankle_y - hip_y
    points = [head, neck]
    half = identity.shoulder * hb
    shoulders = [(cx - half, shoulder_y), (cx + half, shoulder_y)]
    points += shoulders
    for side, (sx, sy) in zip((-1, 1), shoulders):
        i = 0 if side < 0 else 1
        out, fore = math.radians(pose.arm_out[i]), math.cos(math.radians(pose.arm_swing[i]))
        points.append((sx + side * arm * fore * math.sin(out), sy + arm * fore * math.cos(out)))
    hips = [(cx - identity.hip * hb, hip_y), (cx + identity.hip * hb, hip_y)]
    points += hips
    for side, (hx, hy) in zip((-1, 1), hips):
        i = 0 if side < 0 else 1
        lift = pose.stride * (0.02 if side < 0 else -0.03) * hb
        spread = math.tan(math.radians(pose.leg_spread[i]))
        points.append((hx + side * leg * spread, hy + leg + lift))
    return np.array(points, dtype=np.float64)


def render_person(identity: Identity, pose: Pose, back: bool = False) -> PersonLayer:
    """Draw a person in the canonical frame from its keypoints (front view, or back view).

    The back view is drawn with hair over the face and a visible backpack, then mirrored, so the
    person's right side is on the image right (keypoint labels keep the person's sides).
    """
    kp = body_keypoints(identity, pose)
    head, neck, r_sh, l_sh, r_hand, l_hand, r_hip, l_hip, r_ank, l_ank = (
        (float(x), float(y)) for x, y in kp
    )
    hb = identity.height * (_CANVAS_HW[0] - 2 * _CANVAS_MARGIN)
    ry = identity.head * hb
    rx = 0.8 * ry
    head_c = (head[0], head[1] - 0.1 * ry)  # the head keypoint is the face centre
    paint = _Painter(_CANVAS_HW)

    hair_panel = [(head_c[0] - 1.05 * rx, head_c[1]), (head_c[0] + 1.05 * rx, head_c[1]),
                  (head_c[0] + 1.1 * rx, r_sh[1] + 0.07 * hb),
                  (head_c[0] - 1.1 * rx, r_sh[1] + 0.07 * hb)]
    if identity.long_hair and not back:
        paint.polygon(hair_panel, identity.hair)

    # Legs, trousers and shoes.
    w_top, w_bottom = 0.08 * hb, 0.05 * hb
    for hip, ankle in ((r_hip, r_ank), (l_hip, l_ank)):
        if identity.shorts:
            knee = (hip[0] + 0.45 * (ankle[0] - hip[0]), hip[1] + 0.45 * (ankle[1] - hip[1]))
            paint.limb(knee, ankle, 0.06 * hb, w_bottom * 0.9, identity.skin)
            paint.limb(hip, knee, w_top, 0.068 * hb, identity.trousers)
        else:
            paint.limb(hip, ankle, w_top, w_bottom, identity.trousers)
        paint.ellipse((ankle[0], ankle[1] + 0.018 * hb), 0.042 * hb, 0.022 * hb, identity.shoes)
    paint.polygon([(r_hip[0] - w_top / 2, r_hip[1] - 0.03 * hb),
                   (l_hip[0] + w_top / 2, l_hip[1] - 0.03 * hb),
                   (l_hip[0] + w_top / 2, l_hip[1] + 0.04 * hb), (head[0], l_hip[1] + 0.08 * hb),
                   (r_hip[0] - w_top / 2, r_hip[1] + 0.04 * hb)], identity.trousers)

    # Neck, then torso with its pattern clipped to the torso mask.
    paint.limb((neck[0], head_c[1] + 0.5 * ry), (neck[0], r_sh[1]), 0.6 * rx, 0.7 * rx,
               identity.skin)
    torso = [(r_sh[0] - 0.01 * hb, r_sh[1] - 0.018 * hb),
             (l_sh[0] + 0.01 * hb, l_sh[1] - 0.018 * hb),
             (l_hip[0] + 0.045 * hb, l_hip[1] + 0.035 * hb),
             (r_hip[0] - 0.045 * hb, r_hip[1] + 0.035 * hb)]
    torso_img = Image.new("L", paint.alpha.size, 0)
    ImageDraw.Draw(torso_img).polygon(_Painter._px(torso), fill=255)
    paint.polygon(torso, identity.shirt)
    if identity.pattern != "solid":
        mask = (np.asarray(torso_img) > 0) & _pattern_mask(identity, neck)
        paint.paste_where(mask, identity.shirt2)

    acc = identity.accessory_colour
    if back and identity.long_hair:
        paint.polygon(hair_panel, identity.hair)
    if identity.accessory == "backpack":
        half = 0.8 * identity.shoulder * hb
        if back:
            top_y = r_sh[1] + 0.01 * hb
            bottom_y = top_y + 0.24 * hb
            paint.polygon([(neck[0] - half, top_y), (neck[0] + half, top_y),
                           (neck[0] + half, bottom_y), (neck[0] - half, bottom_y)], acc)
            paint.polygon([(neck[0] - 0.7 * half, top_y + 0.13 * hb),
                           (neck[0] + 0.7 * half, top_y + 0.13 * hb),
                           (neck[0] + 0.7 * half, top_y + 0.21 * hb),
                           (neck[0] - 0.7 * half, top_y + 0.21 * hb)], _shade(acc, 0.75))
        else:
            for sx in (r_sh[0] + 0.035 * hb, l_sh[0] - 0.035 * hb):
                paint.limb((sx, r_sh[1] - 0.005 * hb), (sx, r_sh[1] + 0.2 * hb),
                           0.028 * hb, 0.028 * hb, acc)
    bag_hip = r_hip if identity.bag_side < 0 else l_hip
    bag_c = (bag_hip[0] + identity.bag_side * 0.11 * hb, bag_hip[1] + 0.02 * hb)
    if identity.accessory == "bag":  # cross-body strap from the opposite shoulder
        strap_from = l_sh if identity.bag_side < 0 else r_sh
        paint.limb((strap_from[0] - identity.bag_side * 0.01 * hb, strap_from[1]),
                   bag_c, 0.02 * hb, 0.02 * hb, _shade(acc, 0.8))

    # Arms: sleeve, forearm, hand.
    for shoulder, hand in ((r_sh, r_hand), (l_sh, l_hand)):
        sleeve_end = 1.0 if identity.long_sleeves else 0.4
        elbow = (shoulder[0] + sleeve_end * (hand[0] - shoulder[0]),
                 shoulder[1] + sleeve_end * (hand[1] - shoulder[1]))
        if not identity.long_sleeves:
            paint.limb(elbow, hand, 0.042 * hb, 0.036 * hb, identity.skin)
        paint.limb(shoulder, elbow, 0.06 * hb, 0.048 * hb, identity.shirt)
        paint.ellipse(hand, 0.024 * hb, 0.028 * hb, identity.skin)

    if identity.accessory == "bag":
        bw, bh = 0.07 * hb, 0.06 * hb
        paint.polygon([(bag_c[0] - bw, bag_c[1] - bh), (bag_c[0] + bw, bag_c[1] - bh),
                       (bag_c[0] + bw, bag_c[1] + bh), (bag_c[0] - bw, bag_c[1] + bh)], acc)

    # Head: hair cap and face (front) or hair all over (back); optional hat.
    if back:
        paint.ellipse(head_c, rx, ry, identity.hair)
    else:
        paint.ellipse((head_c[0], head_c[1] - 0.12 * ry), 1.04 * rx, 0.98 * ry, identity.hair)
        paint.ellipse((head_c[0], head[1]), 0.9 * rx, 0.8 * ry, identity.skin)
    if identity.accessory == "hat":
        crown_bottom = head_c[1] - 0.3 * ry
        crown_top = head_c[1] - 1.1 * ry
        paint.polygon([(head_c[0] - 1.02 * rx, crown_bottom), (head_c[0] - 0.9 * rx, crown_top),
                       (head_c[0] + 0.9 * rx, crown_top),
                       (head_c[0] + 1.02 * rx, crown_bottom)], acc)
        paint.ellipse((head_c[0], crown_bottom), 1.4 * rx, 0.18 * ry, _shade(acc, 0.8))

    rgb, alpha = np.asarray(paint.rgb), np.asarray(paint.alpha)
    if back:
        mirror = geometry.hflip(_CANVAS_HW[1])
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        kp = geometry.transform_points(kp, mirror)
    rgb = np.ascontiguousarray(rgb)
    alpha = np.ascontiguousarray(alpha)
    rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
    bbox = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    return PersonLayer(rgb=rgb, alpha=alpha, keypoints=kp, bbox=bbox)


def fit_matrix(
    layer: PersonLayer, height_frac: float, lean: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0), crop_hw: tuple[int, int] = CROP_HW,
    margin: float = 1.0,
) -> np.ndarray:
    """The affine placing a person ``height_frac`` of the crop tall, leaning ``lean`` degrees,
    centred plus ``shift`` pixels, then shrunk/moved just enough that every keypoint lies at
    least ``margin`` pixels inside the crop."""
    x0, y0, x1, y1 = layer.bbox
    height, width = crop_hw
    core = (
        geometry.rotation(lean)
        @ geometry.scaling(height_frac * height / (y1 - y0))
        @ geometry.translation(-(x0 + x1) / 2, -(y0 + y1) / 2)
    )
    pts = geometry.transform_points(layer.keypoints, core)
    span = np.maximum(pts.max(axis=0) - pts.min(axis=0), 1e-6)
    shrink = min(1.0, (width - 2 * margin) / span[0], (height - 2 * margin) / span[1])
    core = geometry.scaling(shrink) @ core
    pts = pts * shrink
    lo, hi = margin - pts.min(axis=0), np.array([width, height]) - margin - pts.max(axis=0)
    tx = float(np.clip(width / 2 + shift[0], lo[0], hi[0]))
    ty = float(np.clip(height / 2 + shift[1], lo[1], hi[1]))
    return geometry.translation(tx, ty) @ core


def place_person(
    layer: PersonLayer, matrix: np.ndarray, background: np.ndarray, opacity: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the person by ``matrix`` over ``background`` (H, W, 3) float32.

    Returns the composite (H, W, 3) float32 and the (10, 2) keypoints in crop pixels, both
    moved by the same matrix.
    """
    hw = background.shape[:2]
    rgba = np.concatenate([layer.rgb, layer.alpha[..., None]], axis=2)  # (H, W, 4) premultiplied
    warped = geometry.warp_image(rgba, matrix, hw).astype(np.float32)
    alpha = warped[..., 3:] * (opacity / 255.0)
    image = background * (1.0 - alpha) + warped[..., :3] * opacity
    return image, geometry.transform_points(layer.keypoints, matrix)


def _crop_background(camera: Camera, rng: np.random.Generator, hw: tuple[int, int] = CROP_HW,
                     clutter: int = 0) -> np.ndarray:
    """A crop of the camera's scene at a random offset with lighting jitter and extra clutter."""
    bh, bw = camera.backdrop.shape[:2]
    oy, ox = int(rng.integers(0, bh - hw[0] + 1)), int(rng.integers(0, bw - hw[1] + 1))
    crop = camera.backdrop[oy:oy + hw[0], ox:ox + hw[1]] * float(rng.uniform(0.88, 1.12))
    crop = crop + rng.normal(0.0, 6.0, 3).astype(np.float32)
    for _ in range(clutter):
        y0, x0 = int(rng.integers(0, hw[0])), int(rng.integers(-8, hw[1]))
        h, w = int(rng.integers(6, 40)), int(rng.integers(6, 30))
        crop[y0:y0 + h, max(x0, 0):max(x0 + w, 0)] = _clothing_colour(rng)
    return crop.astype(np.float32)


def _finish(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> bytes:
    """Camera colour cast, sensor noise and blur, then JPEG encoding."""
    image = image * np.asarray(camera.gains, dtype=np.float32)
    image = image + rng.normal(0.0, camera.noise, image.shape).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), camera.blur_sigma)
    out = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8)).save(
        out, format="JPEG", quality=JPEG_QUALITY
    )
    return out.getvalue()


def _view(
    rng: np.random.Generator, identity: Identity, camera: Camera
) -> tuple[PersonLayer, np.ndarray]:
    """Pose, view and placement of one ordinary image of ``identity`` in ``camera``."""
    layer = render_person(identity, sample_pose(rng), back=bool(rng.random() < 0.35))
    frac = float(np.clip(camera.height_frac + rng.normal(0.0, 0.03), 0.62, 0.98))
    matrix = fit_matrix(layer, frac, lean=float(rng.uniform(-4.0, 4.0)),
                        shift=(float(rng.normal(0.0, 2.5)), float(rng.normal(0.0, 3.0))))
    return layer, matrix


# --------------------------------------------------------------------------------------------
# The dataset plan: which image goes where under which name


@dataclass(frozen=True, eq=False)
class _Job:
    rel: str  # path relative to the root, forward slashes
    kind: str  # "person", "faint" (distractor), "partial" / "background" (junk)
    identity: Identity  # the person drawn (a random stranger for distractors and junk)
    camera: int  # 0-based
    seed: np.random.SeedSequence


def _name(pid: int, cam: int, seq: int, frame: int, bbox: int) -> str:
    prefix = str(pid) if pid == JUNK_PID else f"{pid:04d}"
    return f"{prefix}_c{cam}s{seq}_{frame:06d}_{bbox:02d}.jpg"


def _unique_name(used: set[str], pid: int, rng: np.random.Generator) -> tuple[str, int]:
    """A random plausible name for a distractor/junk image, its frame bumped until unused."""
    cam, seq = int(rng.integers(1, NUM_CAMERAS + 1)), int(rng.integers(1, 7))
    frame, bbox = int(rng.integers(100, 250000)), int(rng.integers(1, 9))
    while _name(pid, cam, seq, frame, bbox) in used:
        frame += 1
    name = _name(pid, cam, seq, frame, bbox)
    used.add(name)
    return name, cam - 1


def _plan(seed: int, num_ids: int) -> tuple[list[_Job], list[Camera]]:
    root_ss = np.random.SeedSequence(seed)
    split_ss, identity_root, camera_root, distractor_root, junk_root = root_ss.spawn(5)
    cameras = [sample_camera(np.random.default_rng(ss), i + 1)
               for i, ss in enumerate(camera_root.spawn(NUM_CAMERAS))]

    pids = np.arange(1, num_ids + 1)
    shuffled = np.random.default_rng(split_ss).permutation(pids)
    train_pids = {int(p) for p in shuffled[: num_ids // 2]}

    jobs: list[_Job] = []
    used: set[str] = set()
    same_camera_gallery = 0  # gallery images sharing a query's pid and camera, so far
    for pid, identity_ss in zip(pids.tolist(), identity_root.spawn(num_ids)):
        attr_ss, plan_ss, image_root = identity_ss.spawn(3)
        identity = sample_identity(np.random.default_rng(attr_ss))
        rng = np.random.default_rng(plan_ss)
        num_cams = int(rng.integers(2, 5))
        cams = sorted(int(c) for c in rng.choice(NUM_CAMERAS, size=num_cams, replace=False))
        counts = [int(rng.integers(1, 4)) for _ in cams]
        is_train = pid in train_pids
        query_cams: set[int] = set()
        if not is_train:
            # Up to 2 query cameras, always leaving one gallery-only camera (cross-camera match).
            num_query = min(2, num_cams - 1)
            query_cams = {int(c) for c in rng.choice(cams, size=num_query, replace=False)}
            if same_camera_gallery == 0 and all(counts[cams.index(c)] == 1 for c in query_cams):
                counts[cams.index(min(query_cams))] = 2  # Market has same-camera matches
        image_ss = iter(image_root.spawn(sum(counts)))
        for cam, count in zip(cams, counts):
            seq = int(rng.integers(1, 7))
            frame = int(rng.integers(100, 200000))
            query_index = int(rng.integers(count)) if cam in query_cams else -1
            if query_index >= 0 and count > 1:
                same_camera_gallery += count - 1
            for k in range(count):
                frame += int(rng.integers(5, 90))
                name = _name(pid, cam + 1, seq, frame, int(rng.integers(1, 7)))
                split = "bounding_box_train" if is_train else (
                    "query" if k == query_index else "bounding_box_test"
                )
                jobs.append(_Job(f"{split}/{name}", "person", identity, cam, next(image_ss)))
                used.add(name)

    # gallery-only strangers: (pid, seed root, count, kind drawn with probability p, else other)
    strangers = (
        (DISTRACTOR_PID, distractor_root, num_ids / 3, "faint", 0.4, "person"),
        (JUNK_PID, junk_root, num_ids / 6, "partial", 0.6, "background"),
    )
    for pid, seed_root, count, kind_p, p, kind_else in strangers:
        for ss in seed_root.spawn(max(1, round(count))):
            rng = np.random.default_rng(ss)
            kind = kind_p if rng.random() < p else kind_else
            stranger = sample_identity(rng)
            name, cam = _unique_name(used, pid, rng)
            jobs.append(_Job(f"bounding_box_test/{name}", kind, stranger, cam, ss.spawn(1)[0]))
    jobs.sort(key=lambda job: job.rel)
    return jobs, cameras


def _render_job(job: _Job, camera: Camera) -> tuple[bytes, np.ndarray | None]:
    """JPEG bytes and (10, 2) normalised keypoints (None for junk) of one planned image."""
    rng = np.random.default_rng(job.seed)
    height, width = CROP_HW
    keypoints: np.ndarray | None
    if job.kind == "person":
        layer, matrix = _view(rng, job.identity, camera)
        image, keypoints = place_person(layer, matrix, _crop_background(camera, rng))
    elif job.kind == "faint":  # background-like distractor: small, low-contrast, cluttered
        layer = render_person(job.identity, sample_pose(rng), back=bool(rng.random() < 0.5))
        matrix = fit_matrix(layer, float(rng.uniform(0.45, 0.7)), float(rng.uniform(-6.0, 6.0)),
                            (float(rng.uniform(-12, 12)), float(rng.uniform(-25, 25))))
        background = _crop_background(camera, rng, clutter=int(rng.integers(2, 6)))
        image, keypoints = place_person(layer, matrix, background, float(rng.uniform(0.35, 0.7)))
    elif job.kind == "partial":  # junk: a body part filling the crop
        layer = render_person(job.identity, sample_pose(rng), back=bool(rng.random() < 0.5))
        x0, y0, x1, y1 = layer.bbox
        scale = float(rng.uniform(1.6, 2.6)) * height / (y1 - y0)
        focus = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        matrix = geometry.translation(width / 2, height / 2) @ geometry.scaling(scale) @ (
            geometry.translation(-focus[0], -focus[1]))
        image, _ = place_person(layer, matrix, _crop_background(camera, rng))
        keypoints = None
    else:  # junk: mostly background, a sliver of someone at the edge at most
        layer = render_person(job.identity, sample_pose(rng))
        matrix = fit_matrix(layer, float(rng.uniform(0.7, 0.95)))
        edge = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.75, 1.1)) * width
        background = _crop_background(camera, rng, clutter=int(rng.integers(1, 5)))
        image, _ = place_person(layer, geometry.translation(edge, 0.0) @ matrix, background)
        keypoints = None
    data = _finish(image, camera, rng)
    if keypoints is not None:
        keypoints = keypoints / np.array([width, height], dtype=np.float64)
    return data, keypoints


# --------------------------------------------------------------------------------------------
# Writing


def _planned_files(jobs: list[_Job]) -> list[str]:
    return [job.rel for job in jobs] + [KEYPOINTS_FILE]


def legacy_files(manifest: dict) -> list[str]:
    """The files an older generator (manifest without ``files``) wrote for ``manifest``'s seed
    and size: the plan depends on nothing else (``synth_writer``)."""
    jobs, _ = _plan(int(manifest["seed"]), int(manifest["num_ids"]))
    return _planned_files(jobs)


def generate_synthetic_reid(root: Path, seed: int = 0, num_ids: int = DEFAULT_IDS) -> dict:
    """Write the synthetic re-ID set to ``root`` in the Market-1501 layout; return its manifest.

    Identities 1..num_ids are split in half (seeded shuffle) into train and test. Each appears
    in 2-4 of the 6 cameras with 1-3 images per camera. A test identity has one query image in
    each of up to two cameras (never all of its cameras, so every query has a gallery match in
    another camera); its other images are gallery images. ``bounding_box_test`` also holds about
    num_ids/3 distractors (pid 0) and num_ids/6 junk images (pid -1, no keypoints). Images are
    written first, then ``keypoints.csv``, then ``manifest.json``: a manifest means a complete
    set. An existing synthetic set in ``root`` is replaced, through ``synth_writer.SynthWriter``:
    only files this generator wrote are deleted or overwritten, anything else is kept, and a
    folder that may hold real data is refused.

    Args:
        root: dataset folder; created if missing.
        seed: everything (identities, cameras, split, images) derives from it.
        num_ids: number of identities, 2..9999.

    Returns:
        ``{"generator", "version", "seed", "num_ids", "counts": {split folder: images},
        "files": {relative path: sha256}}``.
    """
    if not 2 <= num_ids <= 9999:
        raise ConfigError(f"num_ids must be in 2..9999 (4-digit Market pids), got {num_ids}")
    root = Path(root)
    start = time.perf_counter()
    jobs, cameras = _plan(seed, num_ids)
    writer = SynthWriter(root, GENERATOR_NAME, legacy_files)
    writer.begin(_planned_files(jobs))
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
    rows: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(SPLITS, 0)
    for job in jobs:
        data, keypoints = _render_job(job, cameras[job.camera])
        writer.write(job.rel, data)
        counts[job.rel.split("/", 1)[0]] += 1
        if keypoints is not None:
            rows[job.rel] = keypoints
    writer.write(KEYPOINTS_FILE, keypoints_csv_text(rows, BODY_KEYPOINTS.names).encode("utf-8"))
    manifest = writer.finish({
        "generator": GENERATOR_NAME,
        "version": SYNTHETIC_REID_VERSION,
        "seed": seed,
        "num_ids": num_ids,
        "counts": counts,
    })
    logger.info("synthetic-reid: wrote %d images (%s) to %s in %.1fs", len(jobs), counts, root,
                time.perf_counter() - start)
    return manifest
