"""Conditional position encoding (reidbench/layers/cpe.py, model ``cpe``): a residual depthwise
convolution over the patch grid, translation-equivariant away from the border, CLS untouched,
placed after the first block."""

from __future__ import annotations

import pytest
import torch

from reidbench.config import ModelConfig
from reidbench.layers import AttentionContext
from reidbench.layers.cpe import PEG
from reidbench.models import build_model
from reidbench.registry import load_builtins

load_builtins()


def tokens(grid: tuple[int, int], c: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1 + grid[0] * grid[1], c, generator=g, dtype=torch.float64)


def random_peg(c: int = 4, seed: int = 0) -> PEG:
    torch.manual_seed(seed)
    peg = PEG(c).double()
    with torch.no_grad():
        for p in peg.parameters():
            p.normal_()
    return peg


@pytest.mark.parametrize("grid", [(9, 7), (8, 8)])
@pytest.mark.parametrize("shift", [(1, 2), (2, -1), (0, 3), (-2, 0)])
def test_patch_tokens_are_translation_equivariant_away_from_the_border(
    grid: tuple[int, int], shift: tuple[int, int]
) -> None:
    """Shift the patch grid (circularly) by s: wherever the 3x3 neighbourhood of a patch saw no
    border and no wrapped content in either input, the output at p + s equals the output at p."""
    rows, cols = grid
    peg, ctx = random_peg(), AttentionContext(grid, 1)
    x = tokens(grid)
    grid_x = x[:, 1:].reshape(2, rows, cols, 4)
    moved = torch.roll(grid_x, shifts=shift, dims=(1, 2))
    x2 = torch.cat([x[:, :1], moved.reshape(2, rows * cols, 4)], dim=1)
    y = peg(x, ctx)[:, 1:].reshape(2, rows, cols, 4)
    y2 = peg(x2, ctx)[:, 1:].reshape(2, rows, cols, 4)
    dy, dx = shift
    checked = 0
    for r in range(rows):
        for c in range(cols):
            rr, cc = r + dy, c + dx
            # the 3x3 window around (r, c) and around (rr, cc) must be inside the grid
            if 1 <= r < rows - 1 and 1 <= c < cols - 1 and 1 <= rr < rows - 1 and 1 <= cc < cols - 1:
                torch.testing.assert_close(y2[:, rr, cc], y[:, r, c], rtol=1e-12, atol=1e-12)
                checked += 1
    assert checked >= 8
    # at the border the zero padding makes the encoding depend on absolute position
    assert not torch.allclose(y2[:, 0, 0], y[:, (-dy) % rows, (-dx) % cols])


def test_hand_computed_depthwise_filter_on_a_non_square_grid() -> None:
    """Filter = 1 at the top-left tap, 0 elsewhere, bias b per channel: the patch at (r, c)
    becomes x[r, c] + x[r - 1, c - 1] + b (zero outside the grid); CLS passes through."""
    grid, c = (3, 2), 2
    peg, ctx = PEG(c).double(), AttentionContext(grid, 1)
    with torch.no_grad():
        peg.proj.weight.zero_()
        peg.proj.weight[:, 0, 0, 0] = 1.0
        peg.proj.bias.copy_(torch.tensor([10.0, 20.0]))
    x = torch.arange(1 * 7 * c, dtype=torch.float64).reshape(1, 7, c)
    out = peg(x, ctx)
    assert torch.equal(out[:, 0], x[:, 0])
    rows, cols = grid
    for r in range(rows):
        for cc in range(cols):
            i = 1 + r * cols + cc
            diag = x[0, 1 + (r - 1) * cols + cc - 1] if r and cc else torch.zeros(c, dtype=torch.float64)
            torch.testing.assert_close(out[0, i], x[0, i] + diag + torch.tensor([10.0, 20.0]))


def test_zero_filter_is_the_identity_and_the_shape_is_kept() -> None:
    peg = PEG(4).double()
    with torch.no_grad():
        peg.proj.weight.zero_()
        peg.proj.bias.zero_()
    for grid in [(16, 8), (14, 14)]:
        x = tokens(grid)
        assert torch.equal(peg(x, AttentionContext(grid, 1)), x)


def test_wrong_token_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="PEG expects 1 \\+ 3 x 3 tokens, got 9"):
        PEG(4)(torch.zeros(1, 9, 4), AttentionContext((3, 3), 1))
    with pytest.raises(ValueError, match="odd"):
        PEG(4, kernel_size=2)


def test_the_vit_applies_the_peg_after_the_first_block() -> None:
    model = build_model(ModelConfig(name="cpe", size="nano", depth=3, embed_dim=32, num_heads=2),
                        (32, 16)).backbone
    calls: list[str] = []
    for name, module in [("block0", model.blocks[0]), ("peg", model.cond_pos),
                         ("block1", model.blocks[1]), ("block2", model.blocks[2])]:
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
    model(torch.randn(1, 3, 32, 16))
    assert calls == ["block0", "peg", "block1", "block2"]
    assert model.pos_embed is None
    assert [n for n, _ in model.named_parameters() if "cond_pos" in n] == ["cond_pos.proj.weight",
                                                                           "cond_pos.proj.bias"]
