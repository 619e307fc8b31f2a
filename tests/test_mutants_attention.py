"""Attention, Block and DropPath: what the mutation run found undefended
(scripts/mutation_test.py).

- An encoding with only an explicit ``logits_bias`` (the documented way for encodings without a
  bucket form) goes through the fused kernel with its bias as the mask: compared with
  softmax(q k^T / sqrt(d) + bias) v written out here.
- Encodings with bucket tables take the chunked path (the (B, H, T, T) bias is never stored)
  with ``chunk_rows`` setting the chunk budget.
- ``qkv_bias=False``; the block's MLP width (4 x dim) and its default drop path (none).
- DropPath (stochastic depth) had no test: identity at p = 0 or in eval mode (and no random
  draw then), otherwise each sample's residual kept with probability 1 - p and scaled by
  1 / (1 - p), one draw per sample.
"""

from __future__ import annotations

import math

import pytest
import torch

from reidbench.layers import attention as attention_module
from reidbench.layers import bucket_attention as ba
from reidbench.layers.attention import Attention, Block, DropPath
from reidbench.layers.irpe import IRPE, IRPEConfig
from reidbench.layers.position import AttentionContext, RelativePosition

GRID = (2, 3)
CTX = AttentionContext(grid=GRID, num_prefix_tokens=1)
T = 7


class ExplicitBias(RelativePosition):
    """An encoding without a bucket form: a fixed float64 (1, H, T, T) bias."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = bias

    def logits_bias(self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        return self.bias


def test_an_explicit_bias_goes_into_the_fused_kernel() -> None:
    torch.manual_seed(0)
    dim, heads = 8, 2
    bias = torch.randn(1, heads, T, T, dtype=torch.float64) * 3
    attn = Attention(dim, heads, rel_pos=ExplicitBias(bias))  # float32 module, float64 bias
    x = torch.randn(2, T, dim)
    out = attn(x, CTX)
    with torch.no_grad():
        w, b = attn.qkv.weight.double(), attn.qkv.bias.double()
        qkv = x.double() @ w.T + b  # (B, T, 3C): rows [q; k; v], heads of d consecutive rows
        d = dim // heads
        q, k, v = (qkv[..., i * dim:(i + 1) * dim].reshape(2, T, heads, d).transpose(1, 2)
                   for i in range(3))
        p = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d) + bias, dim=-1)
        merged = (p @ v).transpose(1, 2).reshape(2, T, dim)
        ref = merged @ attn.proj.weight.double().T + attn.proj.bias.double()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_bucket_encodings_take_the_chunked_path_with_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    chunks: list[tuple[int, int]] = []
    packed, inner = attention_module.packed_bucket_attention, ba._chunk_logits

    def spy_packed(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return packed(*args, **kwargs)

    def spy_chunks(q, k, terms, b0, b1, *args, **kwargs):  # type: ignore[no-untyped-def]
        chunks.append((b0, b1))
        return inner(q, k, terms, b0, b1, *args, **kwargs)

    monkeypatch.setattr(attention_module, "packed_bucket_attention", spy_packed)
    monkeypatch.setattr(ba, "_chunk_logits", spy_chunks)
    torch.manual_seed(1)
    dim, heads = 8, 2
    attn = Attention(dim, heads, rel_pos=IRPE(IRPEConfig(on="k", shared_head=False), dim // heads, heads))
    x = torch.randn(4, T, dim)
    wide = attn(x, CTX)
    assert calls == [1] and chunks == [(0, 4)]  # budget 4 * 16 rows >= 4 items of 7 tokens
    calls.clear()
    chunks.clear()
    attn.chunk_rows = 1  # budget 4 * 1 rows: one item (7 rows) per chunk
    narrow = attn(x, CTX)
    assert calls == [1] and chunks == [(0, 1), (1, 2), (2, 3), (3, 4)]
    torch.testing.assert_close(narrow, wide)


def test_qkv_bias_can_be_switched_off() -> None:
    assert Attention(8, 2, qkv_bias=False).qkv.bias is None
    assert Attention(8, 2).qkv.bias is not None


def test_block_defaults_mlp_four_times_wider_and_no_drop_path() -> None:
    block = Block(8, 2)
    assert block.mlp.fc1.out_features == 32 and block.mlp.fc2.in_features == 32
    assert block.drop_path.p == 0.0
    assert Block(8, 2, mlp_ratio=2.5).mlp.fc1.out_features == 20


def test_drop_path_is_the_identity_at_zero_or_in_eval_and_draws_nothing() -> None:
    x = torch.randn(5, 3, 4)
    state = torch.get_rng_state()
    assert DropPath().p == 0.0
    assert DropPath().train()(x) is x
    assert DropPath(0.0).train()(x) is x
    assert DropPath(0.5).eval()(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_drop_path_drops_whole_samples_and_rescales() -> None:
    torch.manual_seed(2)
    p, n = 0.3, 4000
    x = torch.rand(n, 3, 4) + 1.0  # strictly positive: a dropped sample is exactly zero
    out = DropPath(p).train()(x)
    assert out.shape == x.shape
    zero = (out == 0).reshape(n, -1)
    # one draw per sample: every element of a sample is dropped or kept together
    assert torch.equal(zero.all(1), zero.any(1))
    dropped_rows = zero.all(1)
    torch.testing.assert_close(out[~dropped_rows], x[~dropped_rows] / (1 - p))
    dropped = float(dropped_rows.float().mean())
    assert abs(dropped - p) < 0.03  # 4000 draws: std 0.007
