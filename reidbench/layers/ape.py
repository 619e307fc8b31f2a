"""Absolute position embeddings: learned, or fixed 2D sine-cosine."""

from __future__ import annotations

import torch
from torch import nn


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos embedding, (rows*cols, dim): half the channels encode y, half x."""
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    rows, cols = grid
    y, x = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ys = y.reshape(-1, 1) * omega
    xs = x.reshape(-1, 1) * omega
    return torch.cat([ys.sin(), ys.cos(), xs.sin(), xs.cos()], dim=1).float()


class AbsolutePositionEmbedding(nn.Module):
    """Adds a (1, prefix + N, C) embedding to the tokens.

    Args:
        grid: (rows, cols) patch grid.
        dim: token width.
        num_prefix_tokens: tokens before the patches (CLS), which get their own learned slot
            (zeros for sin-cos).
        kind: "learned" (truncated normal, std 0.02) or "sincos" (fixed buffer).
    """

    def __init__(
        self, grid: tuple[int, int], dim: int, num_prefix_tokens: int = 1, kind: str = "learned"
    ) -> None:
        super().__init__()
        self.grid, self.kind = grid, kind
        n = num_prefix_tokens + grid[0] * grid[1]
        if kind == "learned":
            self.embed = nn.Parameter(torch.zeros(1, n, dim))
            nn.init.trunc_normal_(self.embed, std=0.02)
        elif kind == "sincos":
            table = torch.cat([torch.zeros(num_prefix_tokens, dim), sincos_2d(grid, dim)])
            self.register_buffer("embed", table.unsqueeze(0), persistent=False)
        else:
            raise ValueError(f"unknown absolute embedding kind {kind!r}; expected learned or sincos")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embed  # (B, T, C)

    def patch_embeddings(self) -> torch.Tensor:
        """(rows * cols, C) embeddings of the patches (prefix slots left out), row-major; a view
        of the parameter (learned) or buffer (sin-cos), so gradients reach a learned table."""
        n = self.grid[0] * self.grid[1]
        return self.embed[0, self.embed.shape[1] - n:]
