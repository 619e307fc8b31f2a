"""Drawing of the synthetic face images (``reidbench.synthetic.faces`` plans and writes).

A face is drawn in the canonical 112x112 frame (supersampled, with a margin so a rotated or
shrunk face shows no edge), then warped by its view's similarity into the saved image; the
landmarks move with the same matrix, so they are exactly where the warped features are.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from reidbench.data.geometry import transform_points, translation, warp_image
from reidbench.synthetic.faces_params import (
    IMAGE_SIZE,
    Colour,
    FaceIdentity,
    FaceView,
    expression_landmarks,
    scaled_colour,
    to_colour,
)

_PAD = 56  # canonical canvas margin (px at 112 scale) so a rotated / shrunk face shows no edge
_SS = 2  # supersampling factor of the canonical canvas
_SHIFT = 4  # fixed-point fractional bits for OpenCV drawing

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
    canvas.blend_poly(_ellipse(c, (ew + 2.2, eh + 2.6), tilt), scaled_colour(ident.skin, 0.8), 0.35)
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
    canvas.line(upper, scaled_colour(ident.brow_colour, 0.6), 0.8)
    lower = _place(np.stack([ew * np.cos(u), -eh * np.sin(u)], axis=1), c, tilt)
    canvas.line(lower, scaled_colour(ident.skin, 0.75), 0.5)


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
    shade = scaled_colour(ident.skin, 0.78)
    bridge = np.array([[nx - 0.45 * w, eye_y + 5.0], [nx - 0.55 * w, ny - 3.0], [nx - w, ny]])
    canvas.line(bridge, scaled_colour(ident.skin, 0.88), 0.8)
    for s in (-1, 1):
        u = np.linspace(-0.5, 0.5, 9) * math.pi  # the outer arc of the nose wing
        wing = np.stack([nx + s * (0.55 * w + 1.3 * np.cos(u)), ny + 0.6 + 1.9 * np.sin(u)], 1)
        canvas.line(wing, shade, 0.6)
        canvas.poly(_ellipse((nx + s * 0.5 * w, ny + 1.4), (1.2, 0.7), s * 15.0, 12),
                    scaled_colour(ident.skin, 0.42))
    canvas.poly(_ellipse((nx, ny - 0.6), (1.3, 1.0), 0.0, 12), scaled_colour(ident.skin, 1.07))


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
        canvas.line(np.stack([base_x, base_y], axis=1), scaled_colour(ident.lip_colour, 0.5), 0.7)


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
        canvas.blend_poly(region, scaled_colour(ident.hair_colour, 0.85), 0.85)
        canvas.dots(dots[::2], 0.35, scaled_colour(ident.hair_colour, 0.65))
    else:
        canvas.blend_poly(region, to_colour(0.3 * skin + 0.7 * hair), 0.3)
        canvas.dots(dots[::3], 0.25, to_colour(0.7 * skin + 0.3 * hair))


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
        canvas.poly(back, scaled_colour(hair, 0.8), silhouette=True)
    if ident.hair_style == "long":
        drape = np.array(
            [[cx - a - 7.0, ident.cheek_y - 8], [cx + a + 7.0, ident.cheek_y - 8],
             [cx + a + 10.0, ident.chin_y + 22.0], [cx - a - 10.0, ident.chin_y + 22.0]]
        )
        canvas.poly(drape, scaled_colour(hair, 0.8), silhouette=True)
    neck_w = 0.58 * a
    neck = np.array(
        [[cx - neck_w, ident.cheek_y + 10], [cx + neck_w, ident.cheek_y + 10],
         [cx + neck_w + 2, bottom], [cx - neck_w - 2, bottom]]
    )
    canvas.poly(neck, scaled_colour(ident.skin, 0.8), silhouette=True)
    shoulders = _ellipse((cx, ident.chin_y + 48.0), (a * 2.6, 34.0), 0.0, 48)
    canvas.poly(shoulders, view.shirt, silhouette=True)
    collar = np.array(
        [[cx - neck_w - 1, ident.chin_y + 14.0], [cx + neck_w + 1, ident.chin_y + 14.0],
         [cx, ident.chin_y + 24.0]]
    )
    canvas.poly(collar, scaled_colour(ident.skin, 0.8), silhouette=True)
    for s in (-1, 1):  # ears
        ear_c = (cx + s * (a - 1.0), eye_y + 9.0)
        axes = (3.6 * ident.ear_scale, 8.0 * ident.ear_scale)
        canvas.poly(_ellipse(ear_c, axes, s * 8.0), scaled_colour(ident.skin, 0.9), silhouette=True)
        canvas.poly(_ellipse((ear_c[0] + s, ear_c[1]), (1.4, 5.0), s * 8.0),
                    scaled_colour(ident.skin, 0.75))

    outline = _face_outline(ident)
    canvas.poly(outline, ident.skin, silhouette=True)
    canvas.blend_poly(_face_outline(ident, grow=-4.0), scaled_colour(ident.skin, 1.06), 0.5)
    canvas.dots(ident.freckles[:, :2], ident.freckles[:, 2], scaled_colour(ident.skin, 0.78))
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
        hair = to_colour(0.45 * np.asarray(ident.skin) + 0.55 * np.asarray(hair))
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
                    scaled_colour(hair, 0.8), 0.5)
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
        colour = to_colour(rng.uniform(20, 235) + rng.normal(0.0, 25.0, 3))
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
