"""``ape_aligned``: align each image with its landmarks, then a plain APE ViT.

The classic competitor of KP-RPE (Kim et al., CVPR 2024, whose claim is that reading the
landmarks inside attention degrades less than aligning with them when the landmarks are poor):
every image is warped, inside the model, by the similarity (rotation, uniform scale,
translation; never a reflection) that maps its K keypoints onto a canonical template in the
least-squares sense, Umeyama's closed form, which is what insightface's ``face_align`` estimates
(``reidbench.data.alignment.similarity_transform`` is the numpy reference, tested equal). The
warped image goes to the registered ``ape`` ViT. With exact keypoints a geometric misalignment
is undone (up to the content that left the canvas); with noisy keypoints (``kpnoise``) the
warp itself misaligns the input: that is the failure mode the comparison measures.

Conventions. Similarities are estimated in the continuous pixel frame of the input (normalised
keypoints times (W, H)), so non-square crops (128x64 re-ID) stay undistorted; the image is
resampled bilinearly with ``grid_sample`` (``align_corners=False``: pixel centres, as
``data.geometry``), uncovered canvas is 0 after normalisation (the mean colour).

Template. A (K, 2) buffer of normalised coordinates: the mean of every keypoint set seen in
training (a cumulative mean, so it settles after the first batches and is saved with the
weights); for aligned face sets it converges to the alignment template itself. Before any
training batch, and for an image batch without keypoints, no warp is applied (the plain APE
ViT): the documented fallback, never an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.config import ModelConfig
from reidbench.registry import MODELS


def similarity_batch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarities mapping ``src`` onto ``dst`` (Umeyama 1991, 2D).

    In 2D a similarity is z -> a z + b on complex numbers z = x + iy; its least-squares
    solution is a = sum (d - mean d) conj(s - mean s) / sum |s - mean s|^2, b = mean d - a mean s,
    which equals Umeyama's SVD form (no reflection).

    Args:
        src: (B, K, 2) points, K >= 2, not all equal within a sample.
        dst: (K, 2) or (B, K, 2) target points.

    Returns:
        (B, 3, 3) matrices acting on column vectors (x, y, 1); float64.
    """
    s = torch.complex(src[..., 0].double(), src[..., 1].double())  # (B, K)
    d = torch.complex(dst[..., 0].double(), dst[..., 1].double()).expand_as(s)
    sc, dc = s - s.mean(-1, keepdim=True), d - d.mean(-1, keepdim=True)
    var = (sc.abs() ** 2).sum(-1).clamp_min(1e-12)  # (B,)
    a = (dc * sc.conj()).sum(-1) / var
    b = d.mean(-1) - a * s.mean(-1)
    m = torch.zeros(src.shape[0], 3, 3, dtype=torch.float64, device=src.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a.real, -a.imag, b.real
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = a.imag, a.real, b.imag
    m[:, 2, 2] = 1.0
    return m


def warp_to_template(
    images: torch.Tensor, keypoints: torch.Tensor, template: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp every image so that its keypoints land on ``template``.

    Args:
        images: (B, C, H, W).
        keypoints: (B, K, 2) normalised (x, y).
        template: (K, 2) normalised (x, y).

    Returns:
        ((B, C, H, W) warped images, (B, 3, 3) float64 pixel-frame matrices input -> output).
    """
    b, _, h, w = images.shape
    scale = torch.tensor([w, h], dtype=torch.float64, device=images.device)
    m = similarity_batch(keypoints.double() * scale, template.double() * scale)  # pixels
    inv = torch.linalg.inv(m)  # output pixel -> input pixel
    # grid_sample coordinates g in [-1, 1] (align_corners=False) <-> pixels x = (g + 1) W / 2
    to_px = torch.tensor([[w / 2.0, 0, w / 2.0], [0, h / 2.0, h / 2.0], [0, 0, 1]],
                         dtype=torch.float64, device=images.device)
    theta = (torch.linalg.inv(to_px) @ inv @ to_px)[:, :2].to(images.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False), m


class AlignedViT(nn.Module):
    """Landmark alignment in front of a ViT (see the module docstring).

    Args:
        vit: the ViT that receives the aligned images (the registered ``ape``).
        num_keypoints: K of the template.
    """

    def __init__(self, vit: nn.Module, num_keypoints: int) -> None:
        super().__init__()
        self.vit = vit
        self.embed_dim, self.grid = vit.embed_dim, vit.grid
        self.num_prefix_tokens = vit.num_prefix_tokens
        self.register_buffer("template", torch.zeros(num_keypoints, 2, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))  # keypoint sets averaged

    def align(self, images: torch.Tensor, keypoints: torch.Tensor | None) -> torch.Tensor:
        """The aligned (B, C, H, W) images; in training the template absorbs these keypoints
        first. Without keypoints, or before any template exists, the images unchanged."""
        if keypoints is None or keypoints.shape[1] < 2:
            return images
        valid = torch.isfinite(keypoints).flatten(1).all(1)  # a NaN row: this sample has none
        if not bool(valid.all()):  # (issue 16) per sample: those without stay unwarped
            out = images.clone()
            if bool(valid.any()):
                out[valid] = self.align(images[valid], keypoints[valid])
            return out
        if self.training:
            with torch.no_grad():
                n = keypoints.shape[0]
                total = self.seen + n
                self.template.mul_(self.seen / total).add_(keypoints.double().sum(0) / total)
                self.seen.copy_(total)
        if self.seen == 0:
            return images
        return warp_to_template(images, keypoints, self.template)[0]

    def forward_tokens(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """The ViT's final tokens of the aligned images (keypoints are not passed on: APE)."""
        return self.vit.forward_tokens(self.align(images, keypoints))

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images, optional (B, K, 2) keypoints -> (B, D) embeddings."""
        return self.vit(self.align(images, keypoints))


@MODELS.register("ape_aligned")
def ape_aligned(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """Landmark-aligned plain ViT: each image warped by the similarity taking its keypoints to
    the (learned-as-mean) template, then the ``ape`` ViT of the same settings."""
    vit = MODELS.get("ape")(cfg, img_size, num_keypoints)
    return AlignedViT(vit, max(1, num_keypoints or 0))
