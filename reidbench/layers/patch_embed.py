"""Image -> patch tokens."""

from __future__ import annotations

import torch
from torch import nn

from reidbench.errors import ConfigError


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches projected to ``dim``.

    Args:
        img_size: (height, width) of the input; both must be multiples of ``patch``.
        patch: patch side in pixels.
        in_chans: input channels.
        dim: token width.
    """

    def __init__(self, img_size: tuple[int, int], patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        h, w = img_size
        if h % patch or w % patch:
            raise ConfigError(f"input size {h}x{w} is not a multiple of the patch size {patch}")
        self.img_size = (h, w)
        self.grid = (h // patch, w // patch)  # (rows, cols), never guessed from sqrt(N)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"expected images of size {self.img_size}, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)
