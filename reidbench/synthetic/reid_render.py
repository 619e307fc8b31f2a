"""Rendering of the synthetic re-ID set's images (``reidbench.synthetic.reid`` plans and writes).

Cartoon pedestrians whose identity lives in appearance placed relative to the body (clothing
colours and pattern, proportions, hair, skin, accessory). Each person is drawn in a canonical
body frame defined by its 10 ``BODY_KEYPOINTS``, then placed into a 64x128 crop by one affine
matrix (``reidbench.data.geometry``) applied to image and keypoints together. Six cameras
differ in colour cast, background, blur and person scale; each image varies pose (arm swing,
leg spread, stride, lean), view (front or back), placement and lighting. Every function draws
only from the generator or seed it is given.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

from reidbench.data import geometry
from reidbench.synthetic.reid_params import (
    CANVAS_HW,
    CANVAS_MARGIN,
    CROP_HW,
    JPEG_QUALITY,
    RGB,
    Camera,
    Identity,
    PersonLayer,
    Pose,
    clothing_colour,
    sample_pose,
)


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


_GRID_Y, _GRID_X = np.mgrid[0:CANVAS_HW[0], 0:CANVAS_HW[1]].astype(np.float32) + 0.5


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
    return np.zeros(CANVAS_HW, dtype=bool)


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def body_keypoints(identity: Identity, pose: Pose) -> np.ndarray:
    """The (10, 2) canonical-frame keypoints of a front-view person, BODY_KEYPOINTS order."""
    canvas_h, canvas_w = CANVAS_HW
    hb = identity.height * (canvas_h - 2 * CANVAS_MARGIN)
    cx, feet = canvas_w / 2, canvas_h - CANVAS_MARGIN
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
    hb = identity.height * (CANVAS_HW[0] - 2 * CANVAS_MARGIN)
    ry = identity.head * hb
    rx = 0.8 * ry
    head_c = (head[0], head[1] - 0.1 * ry)  # the head keypoint is the face centre
    paint = _Painter(CANVAS_HW)

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
        mirror = geometry.hflip(CANVAS_HW[1])
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
        crop[y0:y0 + h, max(x0, 0):max(x0 + w, 0)] = clothing_colour(rng)
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


def render_image(
    kind: str, identity: Identity, camera: Camera, seed: np.random.SeedSequence,
) -> tuple[bytes, np.ndarray | None]:
    """JPEG bytes and (10, 2) normalised keypoints (None for junk) of one image of ``kind``:
    "person" (an ordinary image of ``identity``), "faint" (a background-like distractor),
    "partial" or "background" (junk); every draw comes from ``seed``."""
    rng = np.random.default_rng(seed)
    height, width = CROP_HW
    keypoints: np.ndarray | None
    if kind == "person":
        layer, matrix = _view(rng, identity, camera)
        image, keypoints = place_person(layer, matrix, _crop_background(camera, rng))
    elif kind == "faint":  # background-like distractor: small, low-contrast, cluttered
        layer = render_person(identity, sample_pose(rng), back=bool(rng.random() < 0.5))
        matrix = fit_matrix(layer, float(rng.uniform(0.45, 0.7)), float(rng.uniform(-6.0, 6.0)),
                            (float(rng.uniform(-12, 12)), float(rng.uniform(-25, 25))))
        background = _crop_background(camera, rng, clutter=int(rng.integers(2, 6)))
        image, keypoints = place_person(layer, matrix, background, float(rng.uniform(0.35, 0.7)))
    elif kind == "partial":  # junk: a body part filling the crop
        layer = render_person(identity, sample_pose(rng), back=bool(rng.random() < 0.5))
        x0, y0, x1, y1 = layer.bbox
        scale = float(rng.uniform(1.6, 2.6)) * height / (y1 - y0)
        focus = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
        matrix = geometry.translation(width / 2, height / 2) @ geometry.scaling(scale) @ (
            geometry.translation(-focus[0], -focus[1]))
        image, _ = place_person(layer, matrix, _crop_background(camera, rng))
        keypoints = None
    else:  # junk: mostly background, a sliver of someone at the edge at most
        layer = render_person(identity, sample_pose(rng))
        matrix = fit_matrix(layer, float(rng.uniform(0.7, 0.95)))
        edge = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.75, 1.1)) * width
        background = _crop_background(camera, rng, clutter=int(rng.integers(1, 5)))
        image, _ = place_person(layer, geometry.translation(edge, 0.0) @ matrix, background)
        keypoints = None
    data = _finish(image, camera, rng)
    if keypoints is not None:
        keypoints = keypoints / np.array([width, height], dtype=np.float64)
    return data, keypoints
