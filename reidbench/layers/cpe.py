"""Conditional position encoding (Chu et al., "Conditional Positional Encodings for Vision
Transformers", ICLR 2023): the position encoding generator (PEG).

The patch tokens are laid back on their (rows, cols) grid and a depthwise k x k convolution
(zero padding, with a bias, PyTorch's default initialisation) is added to
them: x + DWConv(x). The encoding is computed from the tokens themselves, so it needs no table
and follows the input size; the zero padding lets a patch know how far it is from the border.
Prefix (CLS) tokens pass through unchanged. The ViT variant ``cpe`` applies one PEG after its
first block, the placement the paper found best, and has no absolute table.
"""

from __future__ import annotations

import torch
from torch import nn

from reidbench.layers.position import AttentionContext


class PEG(nn.Module):
    """Position encoding generator: a residual depthwise convolution over the patch grid.

    Args:
        dim: token width (the convolution has one k x k filter and a bias per channel).
        kernel_size: odd filter side k (3 in the paper).
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"PEG kernel_size must be odd and positive, got {kernel_size}")
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """(B, prefix + rows * cols, C) tokens -> the same, patches + DWConv(patches)."""
        p, (rows, cols) = ctx.num_prefix_tokens, ctx.grid
        b, t, c = x.shape
        if t != p + rows * cols:
            raise ValueError(f"PEG expects {p} + {rows} x {cols} tokens, got {t}")
        patches = x[:, p:].transpose(1, 2).reshape(b, c, rows, cols)  # (B, C, rows, cols)
        patches = patches + self.proj(patches)
        return torch.cat([x[:, :p], patches.flatten(2).transpose(1, 2)], dim=1)
