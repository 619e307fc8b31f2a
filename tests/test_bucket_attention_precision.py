"""Reduced precision: the bucket attention kernel takes bf16/fp16 inputs (and runs under
``torch.autocast``), accumulates in fp32, and stays close to fp32 in values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reidbench.models.poster  # noqa: F401  (registers poster)
import reidbench.models.vit  # noqa: F401  (registers the ViT variants)
from reidbench.config import ModelConfig
from reidbench.layers import Attention, AttentionContext
from reidbench.layers.bucket_attention import BucketTerm, bucket_attention
from reidbench.layers.irpe import IRPE, IRPEConfig
from reidbench.layers.kprpe import KeypointRPE
from reidbench.layers.position import RelativePosition
from reidbench.layers.rpe import ShawRPE
from reidbench.registry import MODELS

GRID, DIM, HEADS, K = (4, 3), 32, 2, 5


def reference(q, k, v, terms, scale):  # type: ignore[no-untyped-def]
    """Explicit attention in the inputs' dtype (call it with fp64 tensors)."""
    b, h, t, _ = q.shape
    bias = torch.zeros(b, h, t, t, dtype=q.dtype)
    for term in terms:
        table = term.table()
        g = torch.gather(table.expand(b, h, t, table.shape[-1]), 3, term.ids.expand(b, h, t, t))
        bias = bias + (g.transpose(2, 3) if term.transposed else g)
    return torch.softmax(q @ k.transpose(2, 3) * scale + bias, dim=-1) @ v


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_inputs_give_the_rounded_exact_result(dtype: torch.dtype) -> None:
    """Inputs exactly representable in ``dtype``: the kernel's output and gradients are the fp64
    result rounded once (fp32 accumulation inside), not the result of a softmax summed in 8 bits."""
    g = torch.Generator().manual_seed(0)
    b, h, t, d, nb = 3, 2, 33, 8, 9
    q, k, v = (torch.randn(b, h, t, d, generator=g).to(dtype) for _ in range(3))
    lut = torch.randn(1, h, t, nb, generator=g).to(dtype)
    x = torch.randn(b, 1, t, 4, generator=g).to(dtype)
    w = torch.randn(h, 4, nb, generator=g).to(dtype)
    ids = torch.randint(nb, (t, t), generator=g)
    dout = torch.randn(b, h, t, d, generator=g).to(dtype)

    def run(cast: torch.dtype) -> tuple[torch.Tensor, ...]:
        ins = [z.to(cast).requires_grad_(True) for z in (q, k, v, lut, x, w)]
        qq, kk, vv, ll, xx, ww = ins
        terms = [BucketTerm(ids, lut=ll), BucketTerm(ids.T.contiguous(), x=xx, weight=ww)]
        fn = bucket_attention if cast == dtype else reference
        out = fn(qq, kk, vv, terms, 0.5)
        return (out, *torch.autograd.grad(out, ins, dout.to(cast)))

    got, want = run(dtype), run(torch.float64)
    for name, a, e in zip(["out", "dq", "dk", "dv", "dlut", "dx", "dw"], got, want):
        assert a.dtype == dtype, name
        # measured: fp32 accumulation stays within eps / 2 (the rounding of the output, and of
        # the stored output in the backward's row sums); a softmax summed in ``dtype`` gives
        # 1 (output) to 4 (gradients) eps
        tol = torch.finfo(dtype).eps
        assert rel_error(a, e) < tol, (name, rel_error(a, e))


def test_fp16_logits_beyond_the_fp16_range_stay_finite() -> None:
    """q . k beyond 65504 (fp16's largest value) with fp16 inputs: softmax is still computed."""
    b, h, t, d = 1, 1, 6, 16
    q = torch.full((b, h, t, d), 100.0, dtype=torch.float16)
    k = torch.full((b, h, t, d), 100.0, dtype=torch.float16)
    k[..., 2, :] = 101.0  # the largest logit: all attention goes to key 2
    v = torch.arange(t, dtype=torch.float16).view(1, 1, t, 1).expand(b, h, t, d).contiguous()
    ids = torch.zeros(t, t, dtype=torch.int64)
    out = bucket_attention(q, k, v, [BucketTerm(ids, lut=torch.zeros(1, 1, t, 1, dtype=torch.float16))],
                           1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), torch.full((b, h, t, d), 2.0))


def _rel_pos(kind: str) -> tuple[RelativePosition, nn.Module, dict[str, torch.Tensor | None]]:
    """(the block's term, the module owning its parameters, extra context) with non-zero tables."""
    g = torch.Generator().manual_seed(1)
    if kind == "irpe-contextual":
        rel: RelativePosition = IRPE(IRPEConfig(mode="contextual", on="qk"), DIM // HEADS, HEADS)
        owner: nn.Module = rel
    elif kind == "shaw":
        rel = ShawRPE(DIM // HEADS, HEADS, max_distance=2)
        owner = rel
    else:
        owner = KeypointRPE(K, depth=1, num_heads=HEADS)
        rel = owner.block_term(0)  # type: ignore[attr-defined]
    with torch.no_grad():
        for p in owner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    kp = torch.rand(2, K, 2, generator=g) if kind == "kprpe" else None
    return rel, owner, {"keypoints": kp}


@pytest.mark.parametrize("kind", ["irpe-contextual", "kprpe", "shaw"])
def test_attention_under_cpu_autocast_bf16_is_close_to_fp32(kind: str) -> None:
    """One attention block with a relative term, fp32 vs ``autocast(cpu, bf16)``: output and the
    gradients of the input, the projections and the relative tables agree to bf16 accuracy."""
    rel, owner, extra = _rel_pos(kind)
    torch.manual_seed(2)
    attn = Attention(DIM, HEADS, rel_pos=rel)
    ctx = AttentionContext(GRID, 1, extra["keypoints"])
    x = torch.randn(2, 1 + GRID[0] * GRID[1], DIM)
    params = [*attn.parameters(), *owner.parameters()] if owner is not rel else list(attn.parameters())
    dout = torch.randn(x.shape)

    def run(amp: bool) -> list[torch.Tensor]:
        xx = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = attn(xx, ctx)
        return [out.float(), *torch.autograd.grad(out.float(), [xx, *params], dout)]

    want, got = run(False), run(True)
    assert len(params) > 4  # the relative tables are among them
    for i, (a, e) in enumerate(zip(got, want)):
        assert torch.isfinite(a).all(), i
        assert rel_error(a, e) < 3e-2, (i, rel_error(a, e))


@pytest.mark.parametrize("name", ["ape", "rpe", "irpe", "kprpe", "poster"])
def test_models_train_under_cpu_autocast_bf16(name: str) -> None:
    """Forward and backward of every ViT variant under ``autocast(cpu, bf16)``: finite, and the
    embeddings and gradients stay close to the fp32 ones."""
    torch.manual_seed(3)
    cfg = ModelConfig(name=name, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    model = MODELS.get(name)(cfg, (32, 16), K)  # type: ignore[operator]
    images, kp = torch.randn(4, 3, 32, 16), torch.rand(4, K, 2)
    params = [p for p in model.parameters() if p.requires_grad]

    def run(amp: bool) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            emb = model(images, kp)
        loss = emb.float().square().mean()
        return [emb.float(), *torch.autograd.grad(loss, params, allow_unused=True)]

    want, got = run(False), run(True)
    assert rel_error(got[0], want[0]) < 3e-2
    grads = [(a, e) for a, e in zip(got[1:], want[1:]) if e is not None and e.norm() > 0]
    assert grads
    assert all(torch.isfinite(a).all() for a, _ in grads)
    flat_got = torch.cat([a.flatten().double() for a, _ in grads])
    flat_want = torch.cat([e.flatten().double() for _, e in grads])
    assert rel_error(flat_got, flat_want) < 5e-2
