"""Identities and per-image views of the synthetic face set, drawn from seeded generators
(``faces_render`` draws the images from them).

Identity lives in facial geometry and in texture fixed relative to the landmarks: face oval,
eye spacing, size and colour, nose length and width, mouth width and lips, eyebrow shape,
skin tone, hair colour and style, freckles, moles and beard. Each identity is drawn in a
canonical 112x112 frame whose landmarks are the ArcFace template
(``reidbench.data.alignment.ARCFACE_TEMPLATE``, to 0.1 px) perturbed by that geometry. A view is what
varies per image: expression (smile, open mouth, raised brows), lighting, background, clothing
and alignment (one random similarity: rotation up to 20 degrees, scale 0.85-1.15, shift up to
10 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reidbench.data.geometry import similarity, transform_points

IMAGE_SIZE = 112

MAX_DEGREES = 20.0  # alignment: rotation in [-20, 20] degrees
SCALE_RANGE = (0.85, 1.15)  # alignment: scale about the image centre
MAX_SHIFT = 10.0  # alignment: shift in [-10, 10] px per axis, narrowed to keep landmarks inside
LANDMARK_MARGIN = 3.0  # px: landmarks stay at least this far from the border

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


def sample_name(rng: np.random.Generator) -> str:
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
    return to_colour(c)


def to_colour(c: np.ndarray | tuple[float, ...]) -> Colour:
    arr = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def scaled_colour(c: Colour, factor: float) -> Colour:
    return to_colour(np.asarray(c) * factor)


def sample_identity(rng: np.random.Generator, name: str | None = None) -> FaceIdentity:
    """Draw one person's geometry and appearance."""
    name = name if name is not None else sample_name(rng)
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
    hair_colour = to_colour(hair + rng.normal(0.0, 8.0, 3))
    brow_colour = scaled_colour(hair_colour, 0.75 if hair.mean() < 150 else 0.55)
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
        iris_colour=to_colour(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] + rng.normal(0, 8, 3)),
        nose_width=rng.uniform(3.2, 6.0),
        mouth_curve=rng.uniform(-0.8, 1.0),
        lip_thickness=(rng.uniform(0.9, 2.0), rng.uniform(1.4, 3.0)),
        lip_colour=to_colour(lip_base + rng.normal(0.0, 8.0, 3)),
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
        background=to_colour(rng.uniform(30, 225) + rng.normal(0.0, 22.0, 3)),
        shirt=to_colour(rng.uniform(10, 230, 3)),
        blur=blur,
        noise=rng.uniform(0.0, 4.0),
        seed=int(rng.integers(2**31)),
    )
