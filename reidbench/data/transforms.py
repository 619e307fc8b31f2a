"""Image + keypoint transforms: every geometric step is one affine matrix applied to both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from reidbench.data import geometry
from reidbench.data.augment import AugmentSpec


@dataclass(frozen=True)
class Transform:
    """Resize to (height, width); in training also flip, translate and erase.

    Args:
        height, width: output size.
        mean, std: per-channel normalisation of [0, 1] RGB.
        train: enable the random steps below.
        flip_prob: horizontal flip probability; keypoints are mirrored and permuted by
            ``flip_perm`` (left/right swapped).
        pad: maximal random translation in output pixels (pad-and-crop with zero fill).
        erase_prob: random erasing probability (area 2-40 %, aspect 0.3-3.3, zero after
            normalisation).
        flip_perm: keypoint permutation of a flip; None keeps the order.
        affine: training: (max_degrees, max_scale, max_shift) of a random similarity about the
            image centre (``geometry.random_similarity``), applied to image and keypoints
            before the flip; None disables it (``perturb.affine_range`` gives the ranges of
            the robustness sweep's "affine" perturbation at a severity).
        affine_prob: probability of that similarity per image.
        augment: training: a recipe (``data.augment``, ``reidbench.data.augment``) whose own
            geometry (scale, rotation, shift, flip with ``flip_perm``) replaces flip, pad and
            affine above, followed by its cutout, blur and photometric steps on the pixels;
            None (the default) leaves this transform exactly as without it.
    """

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool = False
    flip_prob: float = 0.5
    pad: int = 0
    erase_prob: float = 0.0
    flip_perm: tuple[int, ...] | None = None
    affine: tuple[float, float, float] | None = None
    affine_prob: float = 1.0
    augment: AugmentSpec | None = None

    def matrix(self, src_hw: tuple[int, int], rng: np.random.Generator | None) -> tuple[np.ndarray, bool]:
        """The source -> output matrix and whether it flips."""
        m = geometry.resize(src_hw, (self.height, self.width))
        flipped = False
        if self.train and rng is not None and self.augment is not None:
            g, flipped = self.augment.geometric(rng, (self.height, self.width))
            return g @ m, flipped
        if self.train and rng is not None:
            # draw order is fixed (flip, pad, affine) so that recipes without ``affine`` draw
            # exactly what they drew before it existed
            flipped = bool(rng.random() < self.flip_prob)
            shift = rng.integers(-self.pad, self.pad + 1, size=2) if self.pad else None
            if self.affine is not None and rng.random() < self.affine_prob:
                m = geometry.random_similarity(rng, (self.height, self.width), *self.affine) @ m
            if flipped:
                m = geometry.hflip(self.width) @ m
            if shift is not None:
                m = geometry.translation(float(shift[0]), float(shift[1])) @ m
        return m, flipped

    def __call__(
        self, image: np.ndarray, keypoints: np.ndarray | None, rng: np.random.Generator | None = None,
        extra: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """(H, W, 3) uint8 image and (K, 2) normalised keypoints -> (3, h, w) tensor, keypoints.

        ``extra`` is a 3x3 matrix in the output image's pixel frame applied after every other
        geometric step (a robustness perturbation); image and keypoints move with it.
        """
        src_hw = image.shape[:2]
        m, flipped = self.matrix(src_hw, rng)
        if extra is not None:
            m = extra @ m
        out = geometry.warp_image(image, m, (self.height, self.width))
        if self.train and rng is not None and self.augment is not None:
            out = self.augment.appearance(out, rng)
        kps = None
        if keypoints is not None:
            kps = geometry.transform_keypoints(keypoints, m, src_hw, (self.height, self.width))
            if flipped and self.flip_perm is not None:
                kps = kps[list(self.flip_perm)]
        tensor = torch.from_numpy(out).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        tensor = (tensor - mean) / std
        if self.train and rng is not None and self.erase_prob and rng.random() < self.erase_prob:
            _erase(tensor, rng)
        return tensor, kps


def _erase(tensor: torch.Tensor, rng: np.random.Generator) -> None:
    _, h, w = tensor.shape
    for _ in range(10):
        area = rng.uniform(0.02, 0.4) * h * w
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            y, x = int(rng.integers(0, h - eh)), int(rng.integers(0, w - ew))
            tensor[:, y:y + eh, x:x + ew] = 0.0
            return
