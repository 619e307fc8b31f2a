"""2D RoPE (reidbench/layers/rope.py, model ``rope``): relative by construction, CLS unrotated,
rows/cols the right way round, mixed frequencies learned, fused attention with no bias."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from reidbench.config import ModelConfig, RopeConfig, resolve_config
from reidbench.errors import ConfigError
from reidbench.layers import Attention, AttentionContext
from reidbench.layers.rope import RotaryPosition, axial_frequencies
from reidbench.models import build_model
from reidbench.registry import load_builtins

load_builtins()

GRIDS = [(16, 8), (14, 14), (3, 5)]


def random_qk(grid: tuple[int, int], heads: int = 3, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    t = 1 + grid[0] * grid[1]
    return tuple(torch.randn(2, heads, t, d, generator=g, dtype=torch.float64) for _ in range(2))


def rope(mode: str, heads: int = 3, d: int = 8) -> RotaryPosition:
    torch.manual_seed(0)
    return RotaryPosition(d, heads, mode).double()


def shifted_pairs(grid: tuple[int, int], shift: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices (1 prefix token) of every patch p whose shift p + shift stays in the grid."""
    rows, cols = grid
    src, dst = [], []
    for y, x in itertools.product(range(rows), range(cols)):
        if 0 <= y + shift[0] < rows and 0 <= x + shift[1] < cols:
            src.append(1 + y * cols + x)
            dst.append(1 + (y + shift[0]) * cols + x + shift[1])
    return torch.tensor(src), torch.tensor(dst)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("mode", ["axial", "mixed"])
def test_patch_logits_depend_only_on_offsets(mode: str, grid: tuple[int, int]) -> None:
    """The same query/key content moved by a shift gives the same rotated logits between patches:
    the logit of two patches depends on their offset, not on where they are."""
    mod, ctx = rope(mode), AttentionContext(grid, 1)
    q, k = random_qk(grid)
    rq, rk = mod.rotate(q, k, ctx)
    logits = rq @ rk.transpose(-2, -1)
    moved = 0
    for shift in [(0, 1), (1, 0), (2, -1), (-1, 3)]:
        src, dst = shifted_pairs(grid, shift)
        q2, k2 = q.clone(), k.clone()
        q2[:, :, dst], k2[:, :, dst] = q[:, :, src], k[:, :, src]
        rq2, rk2 = mod.rotate(q2, k2, ctx)
        after = rq2 @ rk2.transpose(-2, -1)
        torch.testing.assert_close(logits[:, :, src][:, :, :, src], after[:, :, dst][:, :, :, dst],
                                   rtol=1e-10, atol=1e-10)
        moved += len(src)
        # absolute positions do matter for the rotated vectors themselves (not a no-op)
        assert not torch.allclose(rq[:, :, src], rq2[:, :, dst])
    assert moved > 0


@pytest.mark.parametrize("grid", [(2, 3), (3, 2)])
def test_axial_rotation_hand_computed(grid: tuple[int, int]) -> None:
    """head_dim 8, theta 100: frequencies (1, 0.1); pairs 0, 1 turn with the column x, pairs 2, 3
    with the row y. Every token's q = (1, 0) per pair, so the patch at (y, x) becomes
    (cos x, sin x, cos .1x, sin .1x, cos y, sin y, cos .1y, sin .1y); CLS stays (1, 0, ...)."""
    rows, cols = grid
    mod = RotaryPosition(8, 1, "axial").double()
    torch.testing.assert_close(axial_frequencies(8, 100.0), torch.tensor([1.0, 0.1], dtype=torch.float64))
    q = torch.tensor([1.0, 0.0] * 4, dtype=torch.float64).expand(1, 1, 1 + rows * cols, 8)
    rq, rk = mod.rotate(q, q.clone(), AttentionContext(grid, 1))
    torch.testing.assert_close(rq, rk)
    assert torch.equal(rq[0, 0, 0], q[0, 0, 0])  # CLS unrotated
    for y, x in itertools.product(range(rows), range(cols)):
        want = [math.cos(x), math.sin(x), math.cos(0.1 * x), math.sin(0.1 * x),
                math.cos(y), math.sin(y), math.cos(0.1 * y), math.sin(0.1 * y)]
        torch.testing.assert_close(rq[0, 0, 1 + y * cols + x], torch.tensor(want, dtype=torch.float64))


def reference_rotation(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Pairs (2j, 2j + 1) of x turned by angle[..., j], written out with cos/sin in float64."""
    x, c, s = x.double(), angle.double().cos(), angle.double().sin()
    out = torch.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotation_of_strided_and_reduced_precision_inputs(dtype: torch.dtype) -> None:
    """q, k as attention hands them over (views of the packed qkv projection, and a transposed
    layout whose pairs are not adjacent in memory), in fp32 and bf16: the same rotation as the
    float64 cos/sin formula, returned in the input's dtype."""
    grid, heads, d = (4, 3), 2, 8
    mod = RotaryPosition(d, heads, "mixed")
    t = 1 + grid[0] * grid[1]
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, t, 3, heads, d, generator=g).to(dtype).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    k_odd = k.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, pairs far apart
    rq, rk = mod.rotate(q, k_odd, AttentionContext(grid, 1))
    with torch.no_grad():
        angle = F.pad(mod.angles(grid, q.device), (0, 0, 1, 0))  # (H, T, d/2), CLS angle 0
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for got, x in ((rq, q), (rk, k)):
        assert got.dtype == dtype and got.shape == x.shape
        torch.testing.assert_close(got.double(), reference_rotation(x, angle), **tol)
    assert torch.equal(rq[:, :, 0], q[:, :, 0])  # CLS exactly unchanged, in any dtype


@pytest.mark.parametrize("mode", ["axial", "mixed"])
def test_cls_is_not_rotated_and_its_logits_ignore_position(mode: str) -> None:
    grid = (4, 3)
    mod = rope(mode)
    q, k = random_qk(grid)
    rq, rk = mod.rotate(q, k, AttentionContext(grid, 1))
    assert torch.equal(rq[:, :, 0], q[:, :, 0]) and torch.equal(rk[:, :, 0], k[:, :, 0])
    assert not torch.allclose(rq[:, :, 1:], q[:, :, 1:])
    # a rotation keeps norms, so CLS-to-patch logits change with position but not their scale
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, angles: torch.Tensor
) -> torch.Tensor:
    """Independent float64 reference: pairs as complex numbers times exp(i angle) on the patch
    tokens (CLS untouched), then softmax(q k^T / sqrt(d)) v written out."""
    def turn(x: torch.Tensor) -> torch.Tensor:
        c = torch.view_as_complex(x[:, :, 1:].reshape(*x.shape[:2], -1, x.shape[-1] // 2, 2).contiguous())
        c = c * torch.polar(torch.ones_like(angles), angles)
        return torch.cat([x[:, :, :1], torch.view_as_real(c).flatten(-2)], dim=2)

    q, k = turn(q), turn(k)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
    return attn @ v


@pytest.mark.parametrize("grid", [(16, 8), (14, 14)])
@pytest.mark.parametrize("mode", ["axial", "mixed"])
def test_attention_uses_the_fused_kernel_without_bias(
    mode: str, grid: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attention with RoPE calls F.scaled_dot_product_attention with no mask (no T x T bias) and
    equals the written-out rotated attention; the output keeps the (B, T, C) shape on square and
    non-square grids."""
    torch.manual_seed(0)
    block = Attention(24, 3, rel_pos=RotaryPosition(8, 3, mode)).double()
    masks: list[object] = []
    original = F.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        masks.append(kwargs.get("attn_mask"))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    t = 1 + grid[0] * grid[1]
    x = torch.randn(2, t, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ctx = AttentionContext(grid, 1)
    out = block(x, ctx)
    assert out.shape == (2, t, 24) and masks == [None]
    qkv = block.qkv(x).reshape(2, t, 3, 3, 8).permute(2, 0, 3, 1, 4)
    angles = block.rel_pos.angles(grid, x.device)  # (H|1, N, d/2)
    ref = reference_attention(qkv[0], qkv[1], qkv[2], angles)
    torch.testing.assert_close(out, block.proj(ref.transpose(1, 2).reshape(2, t, 24)),
                               rtol=1e-10, atol=1e-10)


def test_mixed_frequencies_are_learned_per_block_and_head() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="rope", rope=RopeConfig(mode="mixed"), size="nano", depth=2,
                                    embed_dim=32, num_heads=2), (32, 16))
    freqs = [b.attn.rel_pos.freqs for b in model.backbone.blocks]
    assert all(f.shape == (2, 2, 8) and f.requires_grad for f in freqs)
    assert not torch.equal(freqs[0], freqs[1]) and not torch.equal(freqs[0][:, 0], freqs[0][:, 1])
    images = torch.randn(2, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    model(images).square().sum().backward()
    for f in freqs:
        assert f.grad is not None and f.grad.abs().sum() > 0
    from reidbench.engine.trainer import param_groups

    decay, no_decay = param_groups([model], 0.05)
    assert {id(f) for f in freqs} <= {id(p) for p in no_decay["params"]}  # not decayed (reference)
    assert not {id(f) for f in freqs} & {id(p) for p in decay["params"]}


def test_mixed_initialisation_is_two_orthogonal_directions_of_axial_magnitude() -> None:
    """Per head: the two halves of the pairs move along orthogonal unit directions (cos a, sin a)
    and (-sin a, cos a), scaled by the axial magnitudes at theta 10; at a = 0 this is axial."""
    torch.manual_seed(0)
    mod = RotaryPosition(16, 4, "mixed").double()
    fx, fy = mod.freqs.detach()
    mag = axial_frequencies(16, 10.0)
    a, b = slice(0, 4), slice(4, 8)
    torch.testing.assert_close(fx[:, a] ** 2 + fy[:, a] ** 2, (mag**2).expand(4, 4))
    torch.testing.assert_close(fx[:, b] ** 2 + fy[:, b] ** 2, (mag**2).expand(4, 4))
    zero = torch.zeros(4, 4, dtype=torch.float64)
    torch.testing.assert_close(fx[:, a] * fx[:, b] + fy[:, a] * fy[:, b], zero)
    with torch.no_grad():  # angle 0: mixed rotates exactly as axial with the same theta
        mod.freqs.copy_(torch.stack([torch.cat([mag, 0 * mag]), torch.cat([0 * mag, mag])])[:, None])
    axial = RotaryPosition(16, 4, "axial", theta=10.0).double()
    q, k = random_qk((3, 4), heads=4, d=16)
    ctx = AttentionContext((3, 4), 1)
    for got, want in zip(mod.rotate(q, k, ctx), axial.rotate(q, k, ctx)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # axial table is float32


def test_axial_has_no_parameters_and_uses_theta_100() -> None:
    mod = RotaryPosition(8, 2, "axial")
    assert list(mod.parameters()) == [] and mod.theta == 100.0
    assert RotaryPosition(8, 2, "mixed").theta == 10.0 and RotaryPosition(8, 2, "axial", 7.0).theta == 7.0


@pytest.mark.parametrize(("overrides", "needle"), [
    (["model.rope.mode=spiral"], "model.rope.mode must be one of axial, mixed, got 'spiral'"),
    (["model.rope.theta=0"], "model.rope.theta must be a finite number > 0 or null"),
    (["model.ape=learned"], "model.ape=learned does not apply to rope"),
    (["model.embed_dim=48", "model.num_heads=8"], "head width (embed_dim / num_heads) divisible by 4"),
])
def test_bad_settings_are_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(None, "rope", overrides=overrides)


def test_builder_rejects_a_head_width_not_divisible_by_4() -> None:
    with pytest.raises(ConfigError, match="model.rope: 2D RoPE needs a head width divisible by 4, got 6"):
        build_model(ModelConfig(name="rope", embed_dim=12, num_heads=2), (32, 16))


def test_config_rules_mirror_the_layer() -> None:
    from reidbench import config_rules
    from reidbench.layers import rope as layer

    assert config_rules.ROPE_MODES == layer.ROPE_MODES


@pytest.mark.parametrize("mode", ["axial", "mixed"])
def test_rope_keeps_the_public_contract(mode: str) -> None:
    from reidbench.testing import check_encoding

    check_encoding("rope", rope=RopeConfig(mode=mode))
