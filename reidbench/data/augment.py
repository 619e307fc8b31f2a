"""Training augmentation recipes beyond the default flip/pad/erase (``data.augment``).

``cvlface`` follows the protocol of the KP-RPE authors' training code (CVLface, the grid-sample
augmenter used for ``vit_kprpe``; parameters of its published configs), re-implemented with
this project's geometry so that image and keypoints move with ONE matrix:

- geometry, per image (all on the model's input frame, after the resize):
  scale ``s ~ U(0.8, 1.2)`` about the centre; with probability 0.2 a rotation by
  ``U(-20, 20)`` degrees about the centre; a shift of the crop centre by
  ``sign * u * ((c / s - c) + e * c)`` per axis, where ``c`` is the half size, ``u ~ U(0, 1)``,
  ``sign`` = +-1 and ``e ~ U(0, 0.1)`` (the "extra offset": the zoomed-out margin, negative when
  zoomed in, plus up to 10 % of the half size, exactly as CVLface's ``generate_transform_cv2``
  computes it); a horizontal flip with probability 0.5, keypoints mirrored and their
  left/right pairs swapped (``Transform.flip_perm``, from the dataset's keypoint schema);
- cutout, probability 0.2: 95 % of the time everything outside a random resized crop
  (area 20-100 %, aspect 3/4-4/3) is zeroed, else 12-20 square holes of 1/7 of the size;
- blur, probability 0.2: box blur (10 %), Gaussian blur (10 %) or low resolution (80 %: down
  to 20-100 % of the size and back up, interpolations drawn);
- photometric: 2 operations drawn from identity, brightness, saturation, contrast, sharpness,
  equalize, grayscale (the last two re-drawn twice, so rarer), signed magnitudes from bins 5-22
  of ``linspace(0, 0.9, 31)``, as RandAugment does there.

Keypoints are never clipped, blurred or cut out: occlusion hides pixels, the landmark stays
where the face is. Every random number comes from the sample's generator (the loader seeds
one per sample and epoch), and each step draws the same count of numbers whatever it picks, so
a sample's augmentation is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reidbench.data import geometry
from reidbench.errors import ConfigError

PHOTOMETRIC_OPS = ("identity", "brightness", "saturation", "contrast", "sharpness", "equalize",
                   "grayscale")
RARE_OPS = ("equalize", "grayscale")
MAGNITUDES = np.linspace(0.0, 0.9, 31)  # RandAugment bins of the authors' photometric step
INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC,
                  cv2.INTER_LANCZOS4)


@dataclass(frozen=True)
class AugmentSpec:
    """Parameters of a recipe (defaults: the authors' ``vit_kprpe`` training configs)."""

    scale: tuple[float, float] = (0.8, 1.2)  # zoom factor range
    rot_prob: float = 0.2  # probability of a rotation
    max_rot: float = 20.0  # rotation range, degrees
    flip_prob: float = 0.5  # horizontal flip (keypoints mirrored and swapped)
    extra_offset: float = 0.1  # extra shift range, fraction of the half size
    photometric_ops: int = 2  # photometric operations per image
    magnitude_bins: tuple[int, int] = (5, 23)  # [lo, hi) indices into MAGNITUDES
    blur_prob: float = 0.2  # blur / low-resolution probability
    cutout_prob: float = 0.2  # cutout probability

    def geometric(self, rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """(3x3 matrix in the ``hw`` pixel frame, whether it flips). Always draws 9 numbers."""
        h, w = hw
        u = rng.random(9)
        c = np.array([w / 2.0, h / 2.0])
        s = self.scale[0] + u[0] * (self.scale[1] - self.scale[0])
        degrees = (2.0 * u[2] - 1.0) * self.max_rot if u[1] < self.rot_prob else 0.0
        flipped = bool(u[3] < self.flip_prob)
        extra = u[4] * self.extra_offset
        sign = np.where(u[5:7] < 0.5, -1.0, 1.0)
        shift = sign * u[7:9] * ((c / s - c) + extra * c)  # source pixels, the authors' "pad"
        m = geometry.about((c[0], c[1]), geometry.rotation(degrees))
        m = geometry.scaling(s) @ geometry.translation(*(-(c + shift))) @ m
        if flipped:
            m = geometry.hflip(0.0) @ m  # mirror about the (new) origin, the crop centre
        return geometry.translation(c[0], c[1]) @ m, flipped

    def appearance(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Cutout, blur, then photometric jitter on an (H, W, 3) uint8 image (a new array)."""
        out = cutout(image, rng, self.cutout_prob)
        out = blur(out, rng, self.blur_prob)
        return photometric(out, rng, self.photometric_ops, self.magnitude_bins)


RECIPES: dict[str, AugmentSpec | None] = {"none": None, "cvlface": AugmentSpec()}


def recipe(name: str) -> AugmentSpec | None:
    """The recipe ``name`` (``data.augment``); None for "none"."""
    if name not in RECIPES:
        raise ConfigError(f"unknown data.augment {name!r}; expected one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def cutout(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Zero all but a random resized crop (95 %) or 12-20 square holes (5 %), with ``prob``.
    Always draws 7 numbers plus 2 per hole drawn."""
    u = rng.random(7)
    out = image.copy()
    if u[0] >= prob:
        return out
    h, w = image.shape[:2]
    if u[1] < 0.05:
        side = max(1, round(min(h, w) / 7))
        holes = 12 + int(u[2] * 9)
        corners = rng.random((holes, 2))
        for fy, fx in corners:
            y, x = int(fy * (h - side + 1)), int(fx * (w - side + 1))
            out[y:y + side, x:x + side] = 0
        return out
    area = (0.2 + 0.8 * u[3]) * h * w
    aspect = float(np.exp(np.log(3 / 4) + u[4] * (np.log(4 / 3) - np.log(3 / 4))))
    ch = min(h, max(1, round(np.sqrt(area / aspect))))
    cw = min(w, max(1, round(np.sqrt(area * aspect))))
    y, x = int(u[5] * (h - ch + 1)), int(u[6] * (w - cw + 1))
    kept = np.zeros_like(out)
    kept[y:y + ch, x:x + cw] = out[y:y + ch, x:x + cw]
    return kept


def blur(image: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Box blur, Gaussian blur or low resolution, with ``prob``. Always draws 6 numbers."""
    u = rng.random(6)
    if u[0] >= prob:
        return image
    h, w = image.shape[:2]
    if u[1] < 0.1:
        k = 1 + int(u[2] * 9)  # 1..9 pixels
        return cv2.blur(image, (k, k))
    if u[1] < 0.2:
        sigma = u[2] * 4.0
        return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.05 else image
    ratio = 0.2 + 0.8 * u[3]
    small = (max(1, int(ratio * w)), max(1, int(ratio * h)))
    down = cv2.resize(image, small, interpolation=INTERPOLATIONS[int(u[4] * 5)])
    return cv2.resize(down, (w, h), interpolation=INTERPOLATIONS[int(u[5] * 5)])


def _gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) float luminance (ITU-R 601, as PIL and torchvision)."""
    return (image[..., :3] @ np.array([0.299, 0.587, 0.114]))[..., None]


def _blend(image: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
    return other + factor * (image - other)


def photometric(
    image: np.ndarray, rng: np.random.Generator, num_ops: int, bins: tuple[int, int],
) -> np.ndarray:
    """``num_ops`` RandAugment-style colour operations. Draws 6 numbers per operation."""
    out = image.astype(np.float64)
    n = len(PHOTOMETRIC_OPS)
    for _ in range(num_ops):
        u = rng.random(6)
        op = PHOTOMETRIC_OPS[int(u[0] * n)]
        for redraw in u[1:3]:  # the rare operations are re-drawn (twice at most)
            if op in RARE_OPS:
                op = PHOTOMETRIC_OPS[int(redraw * n)]
        index = bins[0] + int(u[3] * (bins[1] - bins[0]))
        factor = 1.0 + (-1.0 if u[4] < 0.5 else 1.0) * float(MAGNITUDES[index])
        if op == "brightness":
            out = out * factor
        elif op == "saturation":
            out = _blend(out, _gray(out), factor)
        elif op == "contrast":
            out = _blend(out, float(_gray(out).mean()), factor)
        elif op == "sharpness":
            kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0
            smooth = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REPLICATE)
            smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = out[0], out[-1], out[:, 0], out[:, -1]
            out = _blend(out, smooth, factor)
        elif op == "equalize":
            clipped = np.clip(np.rint(out), 0, 255).astype(np.uint8)
            out = np.stack([cv2.equalizeHist(np.ascontiguousarray(clipped[..., i]))
                            for i in range(clipped.shape[2])], axis=2).astype(np.float64)
        elif op == "grayscale":
            out = np.repeat(_gray(out), out.shape[2], axis=2)
        out = np.clip(out, 0.0, 255.0)
    return np.rint(out).astype(np.uint8)
