"""Flip-test fusion: the feature of an image plus that of its mirror, keypoints mirrored."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reidbench.data.loader import ImageDataset
from reidbench.data.transforms import Transform
from reidbench.datasets.base import BODY_KEYPOINTS, ImageRecord
from reidbench.evaluation.reid import extract_features, mirror_keypoints


class Probe(nn.Module):
    """Embedding = [mean of the left half of the image, keypoint 2's x] (not flip-invariant)."""

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        left = images[..., : images.shape[-1] // 2].mean(dim=(1, 2, 3))
        kp = keypoints[:, 2, 0] if keypoints is not None else torch.zeros_like(left)
        return torch.stack([left, kp], dim=1)


def test_flip_fusion_adds_the_mirror(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    img = np.zeros((8, 4, 3), np.uint8)
    img[:, 2:] = 200  # bright right half: the probe's left half is dark unless mirrored
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=100)
    kps = np.tile([[0.25, 0.5]], (10, 1)).astype(np.float32)
    kps[3] = [0.75, 0.5]  # left shoulder on the right
    record = ImageRecord(str(tmp_path / "a.jpg"), 1, 0, kps)
    ds = ImageDataset([record], Transform(8, 4, (0.0,) * 3, (1.0,) * 3), num_keypoints=10)
    perm = tuple(BODY_KEYPOINTS.flip_permutation())
    plain = extract_features(Probe(), ds, 1, torch.device("cpu"))
    fused = extract_features(Probe(), ds, 1, torch.device("cpu"), flip=True,
                             flip_perm=perm)
    # the mirror's left half is the bright one; its keypoint 2 is the old 3 mirrored (1 - 0.75)
    assert plain.feats[0, 0] < 0.05 and fused.feats[0, 0] > 0.7
    np.testing.assert_allclose(plain.feats[0, 1], 0.25, atol=1e-6)
    np.testing.assert_allclose(fused.feats[0, 1], 0.25 + 0.25, atol=1e-6)


def test_mirror_keypoints() -> None:
    kps = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    np.testing.assert_allclose(mirror_keypoints(kps, (1, 0)).numpy(), [[[0.7, 0.4], [0.9, 0.2]]],
                               atol=1e-7)
