"""2D rotary position embedding (Heo et al., "Rotary Position Embedding for Vision Transformer",
ECCV 2024), as a ``RelativePosition`` that rotates queries and keys.

Channel pairs (2j, 2j + 1) of a head's query or key are read as one complex number and rotated by
an angle linear in the token's patch position (x = column, y = row, in patches):

- ``axial``: the first d/4 pairs turn with x, the last d/4 with y, at fixed frequencies
  theta**(-4j/d), j = 0 .. d/4 - 1 (theta = 100 by default, the reference's choice for axial);
- ``mixed`` (RoPE-Mixed): pair j turns by x * fx[h, j] + y * fy[h, j] with frequencies that are
  learned per head and per block. They start as the axial magnitudes (theta = 10) along two
  orthogonal directions at a random angle per head: pairs of the first half along
  (cos a, sin a), pairs of the second along (-sin a, cos a).

Because the angle is linear in the position, the logit of query i and key j after rotation,
Re(sum_j q_j conj(k_j) e^{i(angle_i - angle_j)}), depends on the patches only through the offset
p_i - p_j: a relative encoding that needs no (T, T) table at all, so attention keeps the fused
scaled-dot-product kernel. Prefix (CLS) tokens are not rotated, as in the reference. No absolute
table is involved; the ViT variant ``rope`` has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reidbench.layers.position import AttentionContext, RelativePosition

ROPE_MODES = ("axial", "mixed")
DEFAULT_THETA = {"axial": 100.0, "mixed": 10.0}  # the reference implementation's defaults


def axial_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """(head_dim // 4,) magnitudes theta**(-4j / head_dim): one frequency per pair and axis."""
    return theta ** (-torch.arange(0, head_dim, 4, dtype=torch.float64) / head_dim)


def check_rope(head_dim: int, mode: str, theta: float | None) -> float:
    """The frequency base of a valid setting (``theta`` or the mode's default); ValueError
    naming the problem otherwise."""
    if mode not in ROPE_MODES:
        raise ValueError(f"unknown RoPE mode {mode!r}; expected one of {ROPE_MODES}")
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head width divisible by 4, got {head_dim}")
    value = DEFAULT_THETA[mode] if theta is None else float(theta)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"RoPE theta must be a finite number > 0, got {value}")
    return value


def patch_positions(
    grid: tuple[int, int], device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) positions, (N,) each, of the row-major patches of a (rows, cols) grid."""
    rows, cols = grid
    idx = torch.arange(rows * cols, device=device)
    return (idx % cols).to(dtype), torch.div(idx, cols, rounding_mode="floor").to(dtype)


def rotate_pairs(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2j, 2j + 1) of x (..., N, d), read as complex numbers, by the unit
    complex numbers ``rotation`` (.., N, d/2): one complex multiply, computed in at least float32
    (bf16/fp16 inputs are rotated in float32, then cast back).

    One complex product (and its backward, another) instead of real and imaginary parts taken
    apart and stacked again: that took 2.5x longer per step, most of it in the backward of the
    strided selections.
    """
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if work.stride(-1) != 1 or any(step % 2 for step in work.stride()[:-1]):
        work = work.contiguous()  # a complex view needs adjacent (re, im) pairs
    out = torch.view_as_complex(work.unflatten(-1, (-1, 2))) * rotation
    return torch.view_as_real(out).flatten(-2).to(x.dtype)


class RotaryPosition(RelativePosition):
    """2D RoPE of one attention block (see the module docstring).

    Args:
        head_dim: per-head width d, divisible by 4.
        num_heads: attention heads (mixed mode learns frequencies per head).
        mode: "axial" (fixed frequencies, no parameters) or "mixed" (learned, ``freqs``).
        theta: frequency base; None takes the reference's (100 axial, 10 mixed).

    ``freqs`` (mixed only) is a (2, H, d/2) parameter: ``freqs[0]`` multiplies x, ``freqs[1]`` y.
    """

    def __init__(self, head_dim: int, num_heads: int, mode: str = "axial",
                 theta: float | None = None) -> None:
        super().__init__()
        self.head_dim, self.num_heads, self.mode = head_dim, num_heads, mode
        self.theta = check_rope(head_dim, mode, theta)
        mag = axial_frequencies(head_dim, self.theta)  # (d/4,)
        zero = torch.zeros_like(mag)
        if mode == "axial":  # first half of the pairs: x only; second half: y only
            fixed = torch.stack([torch.cat([mag, zero]), torch.cat([zero, mag])])[:, None]
            self.register_buffer("axial", fixed.float(), persistent=False)  # (2, 1, d/2)
        else:
            angle = torch.rand(num_heads, 1, dtype=torch.float64) * 2 * torch.pi  # (H, 1)
            fx = torch.cat([mag * angle.cos(), -mag * angle.sin()], dim=-1)  # (H, d/2)
            fy = torch.cat([mag * angle.sin(), mag * angle.cos()], dim=-1)
            self.freqs = nn.Parameter(torch.stack([fx, fy]).float())  # (2, H, d/2)

    def frequencies(self) -> torch.Tensor:
        """(2, H|1, d/2): per pair, the angle per patch step along x (row 0) and y (row 1)."""
        return self.axial if self.mode == "axial" else self.freqs

    def angles(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(H|1, N, d/2) rotation angle of every patch and channel pair, in the frequencies'
        dtype (at least float32)."""
        f = self.frequencies()
        f = f.to(torch.promote_types(f.dtype, torch.float32))
        x, y = patch_positions(grid, device, f.dtype)
        return x[None, :, None] * f[0][:, None] + y[None, :, None] * f[1][:, None]

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k (B, H, T, d) with their patch tokens rotated; the prefix tokens unchanged."""
        p, n = ctx.num_prefix_tokens, ctx.grid[0] * ctx.grid[1]
        if q.shape[-2] != p + n or q.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE expects (B, H, {p} + {n}, {self.head_dim}) for grid {ctx.grid}, "
                             f"got {tuple(q.shape)}")
        theta = torch.nn.functional.pad(self.angles(ctx.grid, q.device), (0, 0, p, 0))  # (H|1, T, d/2)
        # the prefix's angle 0 is 1 + 0i: its channels come out exactly unchanged
        rotation = torch.complex(theta.cos(), theta.sin())
        return rotate_pairs(q, rotation), rotate_pairs(k, rotation)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, theta={self.theta:g}, head_dim={self.head_dim}"


def rope_factory(head_dim: int, num_heads: int, mode: str = "axial",
                 theta: float | None = None) -> Callable[[int], RelativePosition]:
    """Per-block factory for ``VisionTransformer(rel_pos_factory=...)``: a fresh module per block
    (mixed mode: each block learns its own frequencies, as in the reference)."""
    check_rope(head_dim, mode, theta)  # fail before any block is built

    def make(block: int) -> RelativePosition:
        return RotaryPosition(head_dim, num_heads, mode, theta)

    return make
