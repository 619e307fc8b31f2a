"""Synthetic faces written in the LFW layout, with 5-point ArcFace landmarks.

The generator writes exactly what the LFW reader expects (``lfw/<Name>/<Name>_0001.jpg`` and
the original tab-separated ``pairs.txt``) plus ``landmarks.csv`` and ``manifest.json``, so the
same adapter reads real and synthetic data (DESIGN.md, "Data contracts").

Identity lives in facial geometry and in texture fixed relative to the landmarks: face oval,
eye spacing, size and colour, nose length and width, mouth width and lips, eyebrow shape,
skin tone, hair colour and style, freckles, moles and beard. Each identity is drawn in a
canonical 112x112 frame whose landmarks are the ArcFace template perturbed by that geometry.
Each image then varies expression (smile, open mouth, raised brows), lighting, background,
clothing and alignment: one random similarity transform (rotation up to 20 degrees, scale
0.85-1.15, shift up to 10 px) moves the image and the landmarks together, so the recorded
landmarks are exactly where the warped face features are.

Randomness comes only from ``np.random.SeedSequence(seed)`` spawned per identity and per
image: the same seed writes byte-identical files, and identity ``i`` looks the same whatever
``num_ids`` is.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from reidbench.data.geometry import similarity, transform_points, translation, warp_image
from reidbench.datasets.base import FACE_KEYPOINTS
from reidbench.datasets.keypoints import keypoints_csv_text
from reidbench.datasets.synth_writer import SynthWriter
from reidbench.errors import ConfigError

logger = logging.getLogger(__name__)

SYNTHETIC_FACES_VERSION = 2  # 2: adds the train/ identities
DEFAULT_IDS = 200
DEFAULT_TRAIN_IDS = 300  # disjoint training identities written to train/<Name>/
GENERATOR_NAME = "synthetic-faces"
IMAGE_SIZE = 112
JPEG_QUALITY = 92

# ArcFace's 112x112 alignment template (insightface), in its landmark order: left eye, right
# eye, nose tip, left mouth corner, right mouth corner ("left" = smaller x in the image).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

MAX_DEGREES = 20.0  # alignment: rotation in [-20, 20] degrees
SCALE_RANGE = (0.85, 1.15)  # alignment: scale about the image centre
MAX_SHIFT = 10.0  # alignment: shift in [-10, 10] px per axis, narrowed to keep landmarks inside
LANDMARK_MARGIN = 3.0  # px: landmarks stay at least this far from the border

_PAD = 56  # canonical canvas margin (px at 112 scale) so a rotated / shrunk face shows no edge
_SS = 2  # supersampling factor of the canonical canvas
_SHIFT = 4  # fixed-point fractional bits for OpenCV drawing

_SKIN_TONES = np.array(
    [
        [255, 224, 196], [241, 194, 167], [224, 172, 138], [198, 134, 100],
        [161, 102, 72], [120, 76, 54], [88, 56, 40],
    ],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [
        [22, 18, 16], [55, 36, 24], [98, 64, 40], [140, 66, 36],
        [196, 160, 98], [226, 200, 142], [138, 136, 132], [205, 203, 198],
    ],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.26, 0.22, 0.16, 0.07, 0.09, 0.06, 0.08, 0.06])
_IRIS_COLOURS = np.array(
    [[92, 58, 30], [58, 36, 20], [78, 118, 170], [78, 118, 70], [118, 128, 134], [128, 98, 48]],
    dtype=np.float64,
)
_HAIR_STYLES = ("short", "fringe", "side", "long", "receding")
_BEARDS = ("none", "stubble", "beard")

_ONSETS = (
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
    "br", "ch", "cl", "dr", "gr", "kr", "sh", "st", "th", "tr",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "io", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "nd", "rt", "x")

Colour = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class FaceIdentity:
    """Everything that makes one synthetic person look like themselves.

    Coordinates are in the canonical 112x112 frame (continuous pixels); ``landmarks`` is the
    (5, 2) neutral-expression ArcFace landmarks of this face.
    """

    name: str
    landmarks: np.ndarray  # (5, 2) canonical, neutral expression
    face_half_width: float  # half width of the face oval at the cheekbones
    cheek_y: float  # y of the widest line of the oval
    face_top: float  # y of the top of the forehead
    chin_y: float  # y of the chin
    jaw_power: float  # superellipse exponent of the lower face: 2 round, 3 square
    eye_axes: tuple[float, float]  # half width / half height of the eye opening
    eye_tilt: float  # degrees the outer eye corners are raised
    iris_radius: float
    iris_colour: Colour
    nose_width: float  # distance between the nostrils' outer edges / 2
    mouth_curve: float  # px the mouth middle sits below (+) or above (-) its corners
    lip_thickness: tuple[float, float]  # upper, lower
    lip_colour: Colour
    brow_thickness: float
    brow_arch: float
    brow_gap: float  # brow height above the eye centre
    brow_length: float  # half length
    brow_slant: float  # px the inner end sits above (+) the outer end
    brow_colour: Colour
    skin: Colour
    hair_colour: Colour
    hair_style: str  # one of _HAIR_STYLES
    hairline: float  # px the hairline sits above the eye line
    hair_side: int  # -1 / +1: the side a side-swept fringe comes from
    ear_scale: float
    freckles: np.ndarray  # (F, 3): x, y, radius in the canonical frame
    moles: np.ndarray  # (M, 3): x, y, radius
    beard: str  # one of _BEARDS
    stubble_dots: np.ndarray  # (D, 2) fixed speckle of the stubble / beard texture


@dataclass(frozen=True)
class FaceView:
    """What varies from one image of a person to the next."""

    degrees: float = 0.0  # counter-clockwise on screen, about the image centre
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    smile: float = 0.0  # 0..1: mouth corners out and up
    mouth_open: float = 0.0  # 0..1
    brow_raise: float = 0.0  # px
    light_angle: float = 0.0  # radians: direction light comes from
    light_strength: float = 0.0  # 0..~0.4 relative brightness change across the image
    brightness: float = 0.0  # added to 0..255 values
    contrast: float = 1.0
    background: Colour = (128.0, 128.0, 128.0)
    shirt: Colour = (60.0, 60.0, 90.0)
    blur: float = 0.0  # Gaussian sigma in px; 0 = none
    noise: float = 0.0  # std of additive pixel noise
    seed: int = 0  # background texture and noise

    def matrix(self) -> np.ndarray:
        """The 3x3 similarity (canonical 112 frame -> saved image) of this view."""
        centre = (IMAGE_SIZE / 2.0, IMAGE_SIZE / 2.0)
        return similarity(centre, self.degrees, self.scale, self.shift)


# --------------------------------------------------------------------------------------------
# sampling


def _sample_name(rng: np.random.Generator) -> str:
    def word(min_syl: int, max_syl: int) -> str:
        n = int(rng.integers(min_syl, max_syl + 1))
        parts = [
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(n)
        ]
        parts[-1] += _CODAS[rng.integers(len(_CODAS))]
        return "".join(parts).capitalize()

    return f"{word(1, 3)}_{word(2, 3)}"


def _mix(palette: np.ndarray, rng: np.random.Generator, jitter: float) -> Colour:
    """A colour between two neighbouring palette entries, with a little jitter."""
    i = int(rng.integers(len(palette) - 1))
    t = rng.uniform()
    c = (1 - t) * palette[i] + t * palette[i + 1] + rng.normal(0.0, jitter, 3)
    return _colour(c)


def _colour(c: np.ndarray | tuple[float, ...]) -> Colour:
    arr = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _scaled(c: Colour, factor: float) -> Colour:
    return _colour(np.asarray(c) * factor)


def sample_identity(rng: np.random.Generator, name: str | None = None) -> FaceIdentity:
    """Draw one person's geometry and appearance."""
    name = name if name is not None else _sample_name(rng)
    mid_x = IMAGE_SIZE / 2 + rng.uniform(-0.8, 0.8)
    eye_half = 17.6 + rng.uniform(-2.2, 2.2)
    eye_y = 51.6 + rng.uniform(-2.0, 2.0)
    eye_dy = rng.uniform(-0.5, 0.5)
    nose = (mid_x + rng.uniform(-0.6, 0.6), 71.7 + rng.uniform(-3.0, 3.0))
    mouth_half = 14.6 + rng.uniform(-2.5, 2.5)
    mouth_y = max(92.3 + rng.uniform(-2.5, 2.5), nose[1] + 15.0)
    landmarks = np.array(
        [
            [mid_x - eye_half, eye_y - eye_dy],
            [mid_x + eye_half, eye_y + eye_dy],
            nose,
            [mid_x - mouth_half, mouth_y],
            [mid_x + mouth_half, mouth_y],
        ]
    )
    face_half_width = eye_half + rng.uniform(12.5, 18.5)
    skin = _mix(_SKIN_TONES, rng, 6.0)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)]
    hair_colour = _colour(hair + rng.normal(0.0, 8.0, 3))
    brow_colour = _scaled(hair_colour, 0.75 if hair.mean() < 150 else 0.55)
    lip_base = 0.55 * np.asarray(skin) + 0.45 * np.array([176.0, 72.0, 78.0])
    style = _HAIR_STYLES[rng.integers(len(_HAIR_STYLES))]
    hairline = {
        "short": rng.uniform(24, 30),
        "fringe": rng.uniform(13, 16),
        "side": rng.uniform(15, 19),
        "long": rng.uniform(23, 29),
        "receding": rng.uniform(31, 36),
    }[style]
    face_top = eye_y - rng.uniform(31, 38)
    cheek_y = eye_y + rng.uniform(4, 9)
    chin_y = mouth_y + rng.uniform(11, 17)

    freckles = np.zeros((0, 3))
    if rng.uniform() < 0.25:
        n = int(rng.integers(15, 45))
        freckles = np.stack(
            [
                rng.uniform(mid_x - 0.75 * face_half_width, mid_x + 0.75 * face_half_width, n),
                rng.uniform(eye_y + 4.5, nose[1] + 4.0, n),
                rng.uniform(0.3, 0.6, n),
            ],
            axis=1,
        )
    n_moles = int(rng.choice([0, 0, 1, 1, 2, 3]))
    moles = np.stack(
        [
            mid_x + rng.uniform(-0.8, 0.8, n_moles) * face_half_width,
            rng.uniform(eye_y + 6.0, chin_y - 6.0, n_moles),
            rng.uniform(0.5, 1.1, n_moles),
        ],
        axis=1,
    )
    beard = _BEARDS[rng.choice(3, p=[0.6, 0.2, 0.2])]
    stubble_dots = np.stack(
        [
            rng.uniform(mid_x - face_half_width, mid_x + face_half_width, 160),
            rng.uniform(nose[1] - 4.0, chin_y + 2.0, 160),
        ],
        axis=1,
    )
    eye_h = rng.uniform(2.1, 3.1)
    return FaceIdentity(
        name=name,
        landmarks=landmarks,
        face_half_width=face_half_width,
        cheek_y=cheek_y,
        face_top=face_top,
        chin_y=chin_y,
        jaw_power=rng.uniform(2.0, 3.2),
        eye_axes=(rng.uniform(4.6, 6.4), eye_h),
        eye_tilt=rng.uniform(-8.0, 8.0),
        iris_radius=eye_h * rng.uniform(1.0, 1.25),
        iris_colour=_colour(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 8, 3)),
        nose_width=rng.uniform(3.2, 6.0),
        mouth_curve=rng.uniform(-0.8, 1.0),
        lip_thickness=(rng.uniform(0.9, 2.0), rng.uniform(1.4, 3.0)),
        lip_colour=_colour(lip_base + rng.normal(0.0, 8.0, 3)),
        brow_thickness=rng.uniform(1.0, 3.2),
        brow_arch=rng.uniform(0.5, 3.0),
        brow_gap=rng.uniform(6.5, 9.5),
        brow_length=rng.uniform(6.5, 9.5),
        brow_slant=rng.uniform(-1.5, 1.5),
        brow_colour=brow_colour,
        skin=skin,
        hair_colour=hair_colour,
        hair_style=style,
        hairline=hairline,
        hair_side=int(rng.choice([-1, 1])),
        ear_scale=rng.uniform(0.85, 1.15),
        freckles=freckles,
        moles=moles,
        beard=beard,
        stubble_dots=stubble_dots,
    )


def expression_landmarks(identity: FaceIdentity, smile: float, mouth_open: float) -> np.ndarray:
    """(5, 2) canonical landmarks of ``identity`` with the given expression applied."""
    lm = identity.landmarks.copy()
    out = 1.8 * smile - 1.2 * mouth_open  # corners move out when smiling, in when opening
    lm[3, 0] -= out
    lm[4, 0] += out
    lm[3:, 1] += -2.2 * smile + 0.8 * mouth_open
    return lm


def sample_view(identity: FaceIdentity, rng: np.random.Generator) -> FaceView:
    """Draw one image's expression, lighting, background and alignment.

    The shift is drawn from the part of [-10, 10] px that keeps every landmark at least
    ``LANDMARK_MARGIN`` px inside the image after rotation and scaling.
    """
    smile = rng.uniform(0.0, 1.0) if rng.uniform() < 0.5 else 0.0
    mouth_open = rng.uniform(0.2, 1.0) if rng.uniform() < 0.3 else 0.0
    brow_raise = rng.uniform(0.0, 2.5) if rng.uniform() < 0.3 else 0.0
    degrees = rng.uniform(-MAX_DEGREES, MAX_DEGREES)
    scale = rng.uniform(*SCALE_RANGE)
    lm = expression_landmarks(identity, smile, mouth_open)
    centre = (IMAGE_SIZE / 2.0, IMAGE_SIZE / 2.0)
    moved = transform_points(lm, similarity(centre, degrees, scale))
    shift = []
    for axis in range(2):
        low = max(-MAX_SHIFT, LANDMARK_MARGIN - moved[:, axis].min())
        high = min(MAX_SHIFT, IMAGE_SIZE - LANDMARK_MARGIN - moved[:, axis].max())
        shift.append(rng.uniform(low, high) if low < high else 0.5 * (low + high))
    blur = rng.uniform(0.3, 1.0) if rng.uniform() < 0.3 else 0.0
    return FaceView(
        degrees=degrees,
        scale=scale,
        shift=(shift[0], shift[1]),
        smile=smile,
        mouth_open=mouth_open,
        brow_raise=brow_raise,
        light_angle=rng.uniform(0.0, 2 * math.pi),
        light_strength=rng.uniform(0.0, 0.4),
        brightness=rng.uniform(-30.0, 30.0),
        contrast=rng.uniform(0.75, 1.25),
        background=_colour(rng.uniform(30, 225) + rng.normal(0.0, 22.0, 3)),
        shirt=_colour(rng.uniform(10, 230, 3)),
        blur=blur,
        noise=rng.uniform(0.0, 4.0),
        seed=int(rng.integers(2**31)),
    )


# --------------------------------------------------------------------------------------------
# drawing in the canonical frame


def _fixed(points: np.ndarray) -> np.ndarray:
    """Canonical continuous coordinates -> fixed-point pixel-centre coordinates of the canvas."""
    px = (np.asarray(points, dtype=np.float64) + _PAD) * _SS - 0.5
    return np.round(px * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _ellipse(
    centre: tuple[float, float], axes: tuple[float, float], degrees: float = 0.0, n: int = 40
) -> np.ndarray:
    """(n, 2) points of an ellipse rotated by ``degrees`` (y down)."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return _place(np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], axis=1), centre, degrees)


def _place(local: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    """Rotate (N, 2) local points by ``degrees`` and move them to ``centre``."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    x, y = local[:, 0], local[:, 1]
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], axis=1)


class _Canvas:
    """Premultiplied RGB plus coverage, in the padded, supersampled canonical frame."""

    def __init__(self) -> None:
        size = (IMAGE_SIZE + 2 * _PAD) * _SS
        self.rgb = np.zeros((size, size, 3), np.uint8)
        self.mask = np.zeros((size, size), np.uint8)

    def poly(self, points: np.ndarray, colour: Colour, silhouette: bool = False) -> None:
        pts = [_fixed(points)]
        cv2.fillPoly(self.rgb, pts, colour, cv2.LINE_AA, _SHIFT)
        if silhouette:
            cv2.fillPoly(self.mask, pts, 255, cv2.LINE_AA, _SHIFT)

    def line(self, points: np.ndarray, colour: Colour, width: float, closed: bool = False) -> None:
        thickness = max(1, round(width * _SS))
        cv2.polylines(self.rgb, [_fixed(points)], closed, colour, thickness, cv2.LINE_AA, _SHIFT)

    def blend_poly(self, points: np.ndarray, colour: Colour, alpha: float) -> None:
        """Fill a polygon at opacity ``alpha`` over what is already drawn."""
        pts = _fixed(points)
        px = pts.reshape(-1, 2) >> _SHIFT
        size = self.rgb.shape[0]
        x0, y0 = np.clip(px.min(axis=0) - 2, 0, size)
        x1, y1 = np.clip(px.max(axis=0) + 3, 0, size)
        if x1 <= x0 or y1 <= y0:
            return
        roi = self.rgb[y0:y1, x0:x1]
        layer = roi.copy()
        offset = (-int(x0) << _SHIFT, -int(y0) << _SHIFT)
        cv2.fillPoly(layer, [pts + np.array(offset, np.int32)], colour, cv2.LINE_AA, _SHIFT)
        cv2.addWeighted(roi, 1.0 - alpha, layer, alpha, 0.0, dst=roi)

    def dots(self, points: np.ndarray, radius: float | np.ndarray, colour: Colour) -> None:
        radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(points),))
        for (x, y), r in zip(points, radii):
            self.poly(_ellipse((x, y), (r, r), n=10), colour)

    def downsampled(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB and coverage at 1x (the padded 112 frame), area-averaged."""
        size = self.rgb.shape[0] // _SS
        rgb = cv2.resize(self.rgb, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(self.mask, (size, size), interpolation=cv2.INTER_AREA)
        return rgb, mask


def _face_outline(ident: FaceIdentity, grow: float = 0.0, n: int = 64) -> np.ndarray:
    """The face oval: an ellipse above the cheekbone line, a superellipse jaw below it."""
    cx = float(ident.landmarks[:2, 0].mean())
    a = ident.face_half_width + grow
    top = ident.cheek_y - ident.face_top + grow
    bottom = ident.chin_y - ident.cheek_y + grow
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    lower = s > 0
    ex = np.where(lower, 2.0 / ident.jaw_power, 1.0)
    x = cx + a * np.sign(c) * np.abs(c) ** ex
    y = ident.cheek_y + np.where(lower, bottom * np.abs(s) ** ex, top * s)
    return np.stack([x, y], axis=1)


def _hair_cap(ident: FaceIdentity, lower: np.ndarray) -> np.ndarray:
    """Polygon between the top of the head and a hairline given left-to-right as ``lower``."""
    cx = float(ident.landmarks[:2, 0].mean())
    volume = 0.8 if ident.hair_style == "receding" else 3.5  # px of hair above the scalp
    a = ident.face_half_width + volume - 0.5
    b = ident.cheek_y - ident.face_top + volume
    x_l, x_r = lower[0, 0], lower[-1, 0]
    t_l = math.acos(float(np.clip((x_l - cx) / a, -1, 1)))
    t_r = math.acos(float(np.clip((x_r - cx) / a, -1, 1)))
    t = np.linspace(t_l, t_r, 32)  # upper half of the head ellipse, left to right
    top = np.stack([cx + a * np.cos(t), ident.cheek_y - b * np.sin(t)], axis=1)
    top[0, 1] = min(top[0, 1], lower[0, 1])
    top[-1, 1] = min(top[-1, 1], lower[-1, 1])
    return np.concatenate([top, lower[::-1]], axis=0)


def _hairline(ident: FaceIdentity) -> np.ndarray:
    """The lower edge of the front hair, left to right, in canonical coordinates."""
    cx = float(ident.landmarks[:2, 0].mean())
    eye_y = float(ident.landmarks[:2, 1].mean())
    a = ident.face_half_width + (0.2 if ident.hair_style == "receding" else 1.5)
    temple_y = eye_y - 8.0
    u = np.linspace(-1.0, 1.0, 25)
    x = cx + a * u
    line_y = eye_y - ident.hairline
    if ident.hair_style == "fringe":
        y = line_y + 3.5 * u**4 + 0.8 * np.cos(u * 13.0)  # a ragged, almost straight fringe
        y = np.minimum(y, temple_y)
    elif ident.hair_style == "side":
        side = ident.hair_side * u  # 1 on the side the sweep comes from
        y = line_y - 8.0 * (1 - side) / 2 + 2.0 * u**2
        y = np.minimum(y, temple_y)
    elif ident.hair_style == "receding":
        temple_y = eye_y - 15.0
        y = line_y + 6.0 * np.abs(u) ** 0.6 - 5.0 * np.exp(-(((np.abs(u) - 0.5) / 0.2) ** 2))
        y = np.minimum(y, temple_y)
    else:  # short, long
        y = line_y + (temple_y - line_y) * u**4
    y[0] = y[-1] = temple_y
    return np.stack([x, y], axis=1)


def _draw_eye(canvas: _Canvas, ident: FaceIdentity, centre: np.ndarray, side: int) -> None:
    """One eye centred on its landmark; ``side`` -1 for the image-left eye, +1 for the right."""
    ew, eh = ident.eye_axes
    tilt = ident.eye_tilt if side < 0 else -ident.eye_tilt
    c = (float(centre[0]), float(centre[1]))
    canvas.blend_poly(_ellipse(c, (ew + 2.2, eh + 2.6), tilt), _scaled(ident.skin, 0.8), 0.35)
    canvas.poly(_ellipse(c, (ew, eh), tilt), (236.0, 232.0, 226.0))
    t = np.linspace(0.0, 2 * math.pi, 32, endpoint=False)

    def clipped_disc(r: float) -> np.ndarray:
        x, y = r * np.cos(t), r * np.sin(t)
        limit = eh * np.sqrt(np.clip(1.0 - (x / ew) ** 2, 0.0, 1.0))
        return _place(np.stack([x, np.clip(y, -limit, limit)], axis=1), c, tilt)

    canvas.poly(clipped_disc(ident.iris_radius), ident.iris_colour)
    canvas.poly(clipped_disc(0.55 * ident.iris_radius), (18.0, 14.0, 14.0))
    glint = (c[0] + 0.55 * ident.iris_radius, c[1] - 0.55 * ident.iris_radius)
    canvas.poly(_ellipse(glint, (0.3, 0.3), n=8), (250.0, 250.0, 250.0))
    u = np.linspace(math.pi, 2 * math.pi, 16)
    upper = _place(np.stack([ew * np.cos(u), eh * np.sin(u)], axis=1), c, tilt)
    canvas.line(upper, _scaled(ident.brow_colour, 0.6), 0.8)
    lower = _place(np.stack([ew * np.cos(u), -eh * np.sin(u)], axis=1), c, tilt)
    canvas.line(lower, _scaled(ident.skin, 0.75), 0.5)


def _draw_brow(
    canvas: _Canvas, ident: FaceIdentity, eye: np.ndarray, side: int, raise_px: float
) -> None:
    u = np.linspace(-1.0, 1.0, 13)  # -1 inner end, +1 outer end
    x = eye[0] + side * ident.brow_length * u
    base = eye[1] - ident.brow_gap - raise_px
    arch = ident.brow_arch * (1 - ((u - 0.25) / 1.25) ** 2)
    y = base - arch + 0.5 * ident.brow_slant * u
    half = 0.5 * ident.brow_thickness * (1.0 - 0.55 * np.clip(u, 0, 1)) * (0.8 + 0.2 * (u + 1))
    upper = np.stack([x, y - half], axis=1)
    lower = np.stack([x, y + half], axis=1)
    canvas.poly(np.concatenate([upper, lower[::-1]]), ident.brow_colour)


def _draw_nose(canvas: _Canvas, ident: FaceIdentity) -> None:
    nx, ny = ident.landmarks[2]
    eye_y = float(ident.landmarks[:2, 1].mean())
    w = ident.nose_width
    shade = _scaled(ident.skin, 0.78)
    bridge = np.array([[nx - 0.45 * w, eye_y + 5.0], [nx - 0.55 * w, ny - 3.0], [nx - w, ny]])
    canvas.line(bridge, _scaled(ident.skin, 0.88), 0.8)
    for s in (-1, 1):
        u = np.linspace(-0.5, 0.5, 9) * math.pi  # the outer arc of the nose wing
        wing = np.stack([nx + s * (0.55 * w + 1.3 * np.cos(u)), ny + 0.6 + 1.9 * np.sin(u)], 1)
        canvas.line(wing, shade, 0.6)
        canvas.poly(_ellipse((nx + s * 0.5 * w, ny + 1.4), (1.2, 0.7), s * 15.0, 12),
                    _scaled(ident.skin, 0.42))
    canvas.poly(_ellipse((nx, ny - 0.6), (1.3, 1.0), 0.0, 12), _scaled(ident.skin, 1.07))


def _draw_mouth(canvas: _Canvas, ident: FaceIdentity, lm: np.ndarray, view: FaceView) -> None:
    left, right = lm[3], lm[4]
    s = np.linspace(0.0, 1.0, 21)
    bump = np.sin(math.pi * s)
    base_x = left[0] + (right[0] - left[0]) * s
    base_y = left[1] + (right[1] - left[1]) * s + (ident.mouth_curve + 2.4 * view.smile) * bump
    tu, tl = ident.lip_thickness
    opening = 7.0 * view.mouth_open
    top_in = base_y - 0.35 * opening * bump
    bottom_in = base_y + 0.65 * opening * bump
    bow = 1.0 - 0.35 * np.exp(-(((s - 0.5) / 0.08) ** 2))  # cupid's bow
    upper = np.stack([base_x, top_in - tu * bump * bow], axis=1)
    lower = np.stack([base_x, bottom_in + tl * bump], axis=1)
    canvas.poly(np.concatenate([upper, lower[::-1]]), ident.lip_colour)
    if opening > 0.5:
        inner = np.concatenate(
            [np.stack([base_x, top_in], axis=1), np.stack([base_x, bottom_in], axis=1)[::-1]]
        )
        canvas.poly(inner, (70.0, 24.0, 30.0))
        teeth_y = top_in + np.minimum(0.45 * opening, 2.4) * bump
        teeth = np.concatenate(
            [np.stack([base_x, top_in], axis=1), np.stack([base_x, teeth_y], axis=1)[::-1]]
        )
        canvas.poly(teeth[np.r_[2:19, 23:40]], (228.0, 224.0, 212.0))
    else:
        canvas.line(np.stack([base_x, base_y], axis=1), _scaled(ident.lip_colour, 0.5), 0.7)


def _draw_beard(canvas: _Canvas, ident: FaceIdentity, lm: np.ndarray) -> None:
    """Stubble or a full beard: the face below a cheek-to-moustache line, hair-coloured."""
    outline = _face_outline(ident, grow=0.3)
    nose_y = float(ident.landmarks[2, 1])
    cx = float(ident.landmarks[:2, 0].mean())
    jaw = outline[outline[:, 1] > nose_y]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - ident.cheek_y, jaw[:, 0] - cx))]  # R -> L
    upper = np.array(  # left -> right, just under the nose
        [[lm[3, 0] - 4.0, nose_y + 2.5], [cx, nose_y + 3.2], [lm[4, 0] + 4.0, nose_y + 2.5]]
    )
    region = np.concatenate([upper, jaw], axis=0)
    contour = region.astype(np.float32).reshape(-1, 1, 2)
    dots = np.array(
        [p for p in ident.stubble_dots
         if cv2.pointPolygonTest(contour, (float(p[0]), float(p[1])), False) > 0]
    ).reshape(-1, 2)
    skin, hair = np.asarray(ident.skin), np.asarray(ident.hair_colour)
    if ident.beard == "beard":
        canvas.blend_poly(region, _scaled(ident.hair_colour, 0.85), 0.85)
        canvas.dots(dots[::2], 0.35, _scaled(ident.hair_colour, 0.65))
    else:
        canvas.blend_poly(region, _colour(0.3 * skin + 0.7 * hair), 0.3)
        canvas.dots(dots[::3], 0.25, _colour(0.7 * skin + 0.3 * hair))


def _draw_face(ident: FaceIdentity, view: FaceView, lm: np.ndarray) -> _Canvas:
    """Draw the person, expression applied, on a fresh canonical canvas."""
    canvas = _Canvas()
    cx = float(ident.landmarks[:2, 0].mean())
    eye_y = float(ident.landmarks[:2, 1].mean())
    a = ident.face_half_width
    hair = ident.hair_colour
    bottom = IMAGE_SIZE + _PAD - 1.0

    if ident.hair_style in ("long", "side"):  # hair behind the head
        back = _ellipse((cx, ident.cheek_y - 6.0), (a + 7.0, ident.cheek_y - ident.face_top + 8.0))
        canvas.poly(back, _scaled(hair, 0.8), silhouette=True)
    if ident.hair_style == "long":
        drape = np.array(
            [[cx - a - 7.0, ident.cheek_y - 8], [cx + a + 7.0, ident.cheek_y - 8],
             [cx + a + 10.0, ident.chin_y + 22.0], [cx - a - 10.0, ident.chin_y + 22.0]]
        )
        canvas.poly(drape, _scaled(hair, 0.8), silhouette=True)
    neck_w = 0.58 * a
    neck = np.array(
        [[cx - neck_w, ident.cheek_y + 10], [cx + neck_w, ident.cheek_y + 10],
         [cx + neck_w + 2, bottom], [cx - neck_w - 2, bottom]]
    )
    canvas.poly(neck, _scaled(ident.skin, 0.8), silhouette=True)
    shoulders = _ellipse((cx, ident.chin_y + 48.0), (a * 2.6, 34.0), 0.0, 48)
    canvas.poly(shoulders, view.shirt, silhouette=True)
    collar = np.array(
        [[cx - neck_w - 1, ident.chin_y + 14.0], [cx + neck_w + 1, ident.chin_y + 14.0],
         [cx, ident.chin_y + 24.0]]
    )
    canvas.poly(collar, _scaled(ident.skin, 0.8), silhouette=True)
    for s in (-1, 1):  # ears
        ear_c = (cx + s * (a - 1.0), eye_y + 9.0)
        axes = (3.6 * ident.ear_scale, 8.0 * ident.ear_scale)
        canvas.poly(_ellipse(ear_c, axes, s * 8.0), _scaled(ident.skin, 0.9), silhouette=True)
        canvas.poly(_ellipse((ear_c[0] + s, ear_c[1]), (1.4, 5.0), s * 8.0),
                    _scaled(ident.skin, 0.75))

    outline = _face_outline(ident)
    canvas.poly(outline, ident.skin, silhouette=True)
    canvas.blend_poly(_face_outline(ident, grow=-4.0), _scaled(ident.skin, 1.06), 0.5)
    canvas.dots(ident.freckles[:, :2], ident.freckles[:, 2], _scaled(ident.skin, 0.78))
    canvas.dots(ident.moles[:, :2], ident.moles[:, 2], (70.0, 45.0, 35.0))
    if ident.beard != "none":
        _draw_beard(canvas, ident, lm)
    _draw_nose(canvas, ident)
    _draw_mouth(canvas, ident, lm, view)
    for k, side in ((0, -1), (1, 1)):
        _draw_eye(canvas, ident, lm[k], side)
        _draw_brow(canvas, ident, lm[k], side, view.brow_raise)

    cap = _hair_cap(ident, _hairline(ident))
    if ident.hair_style == "receding":  # thin hair: the scalp shows through
        hair = _colour(0.45 * np.asarray(ident.skin) + 0.55 * np.asarray(hair))
    canvas.poly(cap, hair, silhouette=True)
    if ident.hair_style == "long":
        for s in (-1, 1):
            curtain = np.array(
                [[cx + s * (a - 5.0), eye_y - 16.0], [cx + s * (a + 4.0), eye_y - 10.0],
                 [cx + s * (a + 6.0), ident.chin_y + 8.0], [cx + s * (a - 1.0), ident.chin_y],
                 [cx + s * (a - 3.5), eye_y + 6.0]]
            )
            canvas.poly(curtain, hair, silhouette=True)
    strands = _hairline(ident)[2:-2:3]
    for x, y in strands:
        canvas.line(np.array([[x, y - 1.0], [cx + 0.6 * (x - cx), ident.face_top + 2.0]]),
                    _scaled(hair, 0.8), 0.5)
    return canvas


# --------------------------------------------------------------------------------------------
# the saved image

_GRID_Y, _GRID_X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5


def _background(view: FaceView, rng: np.random.Generator) -> np.ndarray:
    """(112, 112, 3) float32 background: a colour, low-frequency blotches and a few shapes."""
    base = np.array(view.background, dtype=np.float32)
    blotches = rng.normal(0.0, 18.0, (4, 4, 3)).astype(np.float32)
    bg = base + cv2.resize(blotches, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 3))):
        x0, y0 = rng.uniform(-20, IMAGE_SIZE, 2)
        w, h = rng.uniform(10, 60, 2)
        colour = _colour(rng.uniform(20, 235) + rng.normal(0.0, 25.0, 3))
        cv2.rectangle(bg, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), colour, -1)
    return cv2.GaussianBlur(bg, (0, 0), 1.5)


def render_face(identity: FaceIdentity, view: FaceView) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of ``identity``.

    Returns the (112, 112, 3) uint8 RGB image and its (5, 2) float32 landmarks normalised to
    [0, 1] (ArcFace order). The canonical drawing and its landmarks are moved by one matrix,
    ``view.matrix()`` (expressed on the padded canvas), so the landmarks follow the pixels.
    """
    lm = expression_landmarks(identity, view.smile, view.mouth_open)
    rgb, mask = _draw_face(identity, view, lm).downsampled()
    m = view.matrix() @ translation(-_PAD, -_PAD)  # padded 1x canvas -> saved image
    hw = (IMAGE_SIZE, IMAGE_SIZE)
    face = warp_image(rgb, m, hw).astype(np.float32)
    alpha = warp_image(mask, m, hw).astype(np.float32)[..., None] / 255.0
    rng = np.random.default_rng(view.seed)
    img = face + _background(view, rng) * (1.0 - alpha)  # face is premultiplied by coverage

    a = view.light_angle
    ramp = ((_GRID_X - 56.0) * math.cos(a) + (_GRID_Y - 56.0) * math.sin(a)) / 56.0
    img = img * (1.0 + view.light_strength * ramp)[..., None]
    img = (img - 128.0) * view.contrast + 128.0 + view.brightness
    if view.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), view.blur)
    if view.noise > 0:
        img = img + rng.normal(0.0, view.noise, img.shape).astype(np.float32)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    keypoints = transform_points(lm + _PAD, m) / IMAGE_SIZE
    return image, keypoints.astype(np.float32)


# --------------------------------------------------------------------------------------------
# the data set


def _images_per_identity(rng: np.random.Generator) -> int:
    """A long tail like LFW's, but enough images per person to train on (mean ~4.9)."""
    p = np.array([0.05, 0.10, 0.13, 0.15, 0.16, 0.15, 0.14, 0.12])
    return int(rng.choice(np.arange(1, 9), p=p))


def _train_images_per_identity(rng: np.random.Generator) -> int:
    """Training identities get 4-10 images, as face training sets have several per person."""
    return int(rng.integers(4, 11))


@dataclass(frozen=True, eq=False)
class _Person:
    """One planned identity: who, where, how many images and the seed of those images."""

    split: str  # "lfw" or "train"
    identity: FaceIdentity
    count: int
    images_seq: np.random.SeedSequence

    def files(self) -> list[str]:
        name = self.identity.name
        return [f"{self.split}/{name}/{name}_{k:04d}.jpg" for k in range(1, self.count + 1)]


def _plan_identity(
    split: str, id_seq: np.random.SeedSequence, taken: set[str],
    images_per_identity: Callable[[np.random.Generator], int],
) -> _Person:
    """Draw one person (unique name), their look and their number of images."""
    look_seq, images_seq = id_seq.spawn(2)
    rng = np.random.default_rng(look_seq)
    name = _sample_name(rng)
    while name in taken:
        name = _sample_name(rng)
    taken.add(name)
    identity = sample_identity(rng, name)
    return _Person(split, identity, images_per_identity(rng), images_seq)


def _plan(
    seed: int, num_ids: int, num_train_ids: int
) -> tuple[list[_Person], list[_Person], np.random.SeedSequence]:
    """The verification people, the training people (drawn after them, so names never repeat)
    and the seed of the pairs; no image is rendered."""
    # the third child leaves the first two (and so the LFW part) as in version 1
    ids_seq, pairs_seq, train_seq = np.random.SeedSequence(seed).spawn(3)
    taken: set[str] = set()
    people = [_plan_identity("lfw", s, taken, _images_per_identity) for s in ids_seq.spawn(num_ids)]
    train = [
        _plan_identity("train", s, taken, _train_images_per_identity)
        for s in train_seq.spawn(num_train_ids)
    ]
    return people, train, pairs_seq


def _render_person(person: _Person, writer: SynthWriter, landmarks: dict[str, np.ndarray]) -> None:
    """Render and write one planned person's images; their landmarks go to ``landmarks``."""
    for rel, img_seq in zip(person.files(), person.images_seq.spawn(person.count)):
        view = sample_view(person.identity, np.random.default_rng(img_seq))
        image, kps = render_face(person.identity, view)
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
        writer.write(rel, out.getvalue())
        landmarks[rel] = kps


_FIXED_FILES = ("pairs.txt", "landmarks.csv")


def legacy_files(manifest: dict) -> list[str]:
    """The files an older generator (manifest without ``files``) wrote for ``manifest``'s seed
    and sizes (version 1 had no train/): the plan depends on nothing else (``synth_writer``)."""
    counts = manifest.get("counts", {})
    num_train = int(counts.get("num_train_ids", 0)) if int(manifest["version"]) >= 2 else 0
    people, train, _ = _plan(int(manifest["seed"]), int(manifest["num_ids"]), num_train)
    return [rel for person in people + train for rel in person.files()] + list(_FIXED_FILES)


def _make_pairs(
    names: list[str], counts: list[int], folds: int, per_fold: int, rng: np.random.Generator
) -> list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]:
    """Identity-disjoint folds, each with ``per_fold`` matched and mismatched pairs.

    Identities are dealt to folds greedily (most same-person pairs first, random tie order; a
    fold with fewer than two people first) so every fold can hold its matched and mismatched
    pairs. Image numbers are 1-based, as in pairs.txt.
    """
    order = rng.permutation(len(names))
    capacity = [counts[i] * (counts[i] - 1) // 2 for i in range(len(names))]
    order = sorted(order, key=lambda i: -capacity[i])  # stable: random among equals
    members: list[list[int]] = [[] for _ in range(folds)]
    fold_capacity = [0] * folds
    for i in order:
        f = min(range(folds), key=lambda k: (len(members[k]) >= 2, fold_capacity[k]))
        members[f].append(i)
        fold_capacity[f] += capacity[i]
    out = []
    for f, ids in enumerate(members):
        if fold_capacity[f] < per_fold or len(ids) < 2:
            raise ConfigError(
                f"synthetic-faces: fold {f} has {len(ids)} identities and {fold_capacity[f]} "
                f"possible same-person pairs, fewer than pairs_per_fold={per_fold}; raise "
                f"num_ids (now {len(names)}) or lower folds / pairs_per_fold"
            )
        sizes = np.array([counts[i] for i in ids])
        cross = (int(sizes.sum()) ** 2 - int((sizes**2).sum())) // 2
        if cross < per_fold:
            raise ConfigError(
                f"synthetic-faces: fold {f} allows only {cross} different-person pairs, fewer "
                f"than pairs_per_fold={per_fold}; raise num_ids or lower folds / pairs_per_fold"
            )
        ids = sorted(ids, key=lambda i: names[i])
        candidates = [
            (names[i], a, b)
            for i in ids
            for a in range(1, counts[i] + 1)
            for b in range(a + 1, counts[i] + 1)
        ]
        pick = rng.choice(len(candidates), size=per_fold, replace=False)
        matched = sorted(candidates[k] for k in pick)
        seen: set[tuple[str, int, str, int]] = set()
        while len(seen) < per_fold:
            i, j = rng.choice(ids, size=2, replace=False)
            if names[i] > names[j]:
                i, j = j, i
            seen.add(
                (names[i], int(rng.integers(1, counts[i] + 1)),
                 names[j], int(rng.integers(1, counts[j] + 1)))
            )
        out.append((matched, sorted(seen)))
    return out


def _pairs_text(
    blocks: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]], n: int
) -> str:
    lines = [f"{len(blocks)}\t{n}"]
    for matched, mismatched in blocks:
        lines.extend("\t".join(str(v) for v in row) for row in matched)
        lines.extend("\t".join(str(v) for v in row) for row in mismatched)
    return "\n".join(lines) + "\n"


def generate_synthetic_faces(
    root: Path, seed: int = 0, num_ids: int = DEFAULT_IDS, folds: int = 10,
    pairs_per_fold: int = 30, num_train_ids: int = DEFAULT_TRAIN_IDS,
) -> dict:
    """Write a synthetic face verification set in the LFW layout under ``root``.

    Writes ``lfw/<Name>/<Name>_NNNN.jpg`` (112x112 RGB), ``pairs.txt`` (original LFW format,
    ``folds`` identity-disjoint folds of ``pairs_per_fold`` matched then ``pairs_per_fold``
    mismatched lines), ``landmarks.csv`` (5 ArcFace points per image, normalised) and, last,
    ``manifest.json``. Beside the LFW part it writes a training set of ``num_train_ids`` other
    people in the folder-per-identity layout of face training sets (CASIA-WebFace style),
    ``train/<Name>/<Name>_NNNN.jpg``, 4-10 images each, landmarks in the same CSV; no training
    identity appears in ``lfw/``. An existing synthetic set at ``root`` is replaced through
    ``synth_writer.SynthWriter``: only files this generator wrote are deleted or overwritten,
    anything else is kept, and a folder that may hold real LFW is refused. Returns the manifest
    (with ``files``: every file written and its SHA-256).
    """
    if folds < 1 or pairs_per_fold < 1 or num_ids < 2 * folds:
        raise ConfigError(
            f"synthetic-faces: need folds >= 1, pairs_per_fold >= 1 and num_ids >= 2 * folds "
            f"(two people per fold at least); got num_ids={num_ids}, folds={folds}, "
            f"pairs_per_fold={pairs_per_fold}"
        )
    start = time.perf_counter()
    root = Path(root)
    people, train, pairs_seq = _plan(seed, num_ids, num_train_ids)
    names = [person.identity.name for person in people]
    counts = [person.count for person in people]
    blocks = _make_pairs(names, counts, folds, pairs_per_fold, np.random.default_rng(pairs_seq))
    writer = SynthWriter(root, GENERATOR_NAME, legacy_files)
    writer.begin([rel for person in people + train for rel in person.files()] + list(_FIXED_FILES))
    landmarks: dict[str, np.ndarray] = {}
    for person in people + train:
        _render_person(person, writer, landmarks)
    writer.write("pairs.txt", _pairs_text(blocks, pairs_per_fold).encode("utf-8"))
    writer.write("landmarks.csv", keypoints_csv_text(landmarks, FACE_KEYPOINTS.names).encode("utf-8"))
    train_counts = [person.count for person in train]
    manifest = writer.finish({
        "generator": GENERATOR_NAME,
        "version": SYNTHETIC_FACES_VERSION,
        "seed": seed,
        "num_ids": num_ids,
        "counts": {
            "identities": num_ids,
            "images": int(sum(counts)),
            "single_image_identities": int(sum(c == 1 for c in counts)),
            "folds": folds,
            "pairs_per_fold": pairs_per_fold,
            "matched_pairs": folds * pairs_per_fold,
            "mismatched_pairs": folds * pairs_per_fold,
            "pairs": 2 * folds * pairs_per_fold,
            "train_identities": num_train_ids,
            "num_train_ids": num_train_ids,
            "train_images": int(sum(train_counts)),
        },
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "landmarks": list(FACE_KEYPOINTS.names),
    })
    logger.info(
        "synthetic-faces: %d identities, %d images, %d pairs written to %s in %.1f s",
        num_ids, sum(counts), 2 * folds * pairs_per_fold, root, time.perf_counter() - start,
    )
    return manifest
