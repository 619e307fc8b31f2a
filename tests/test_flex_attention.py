"""The FlexAttention path of the relative terms equals the bucket kernel (values and gradients),
and the dispatch picks the bucket kernel wherever FlexAttention cannot train."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidbench.errors import ConfigError
from reidbench.layers import AttentionContext
from reidbench.layers import flex_attention as flex
from reidbench.layers.bucket_attention import BucketTerm, bucket_attention
from reidbench.layers.flex_attention import bucket_score_mod, flex_bucket_attention, use_flex
from reidbench.layers.irpe import IRPE, IRPEConfig
from reidbench.layers.kprpe import KeypointRPE
from reidbench.layers.rpe import ShawRPE

GRID, HEADS, HEAD_DIM, K, BATCH = (4, 3), 2, 8, 5, 3
T = 1 + GRID[0] * GRID[1]
SCALE = HEAD_DIM**-0.5
KINDS = ["irpe-bias-qk", "irpe-contextual-qk", "kprpe", "shaw"]
EAGER_WARNING = "ignore:flex_attention called without torch.compile"


def encoding(kind: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """(the per-block relative term, the module owning its parameters), tables random, not zero."""
    if kind.startswith("irpe"):
        mode = kind.split("-")[1]
        rel: nn.Module = IRPE(IRPEConfig(mode=mode, on="qk", shared_head=False), HEAD_DIM, HEADS)
        owner = rel
    elif kind == "shaw":
        rel = ShawRPE(HEAD_DIM, HEADS, max_distance=2)
        owner = rel
    else:
        owner = KeypointRPE(K, depth=1, num_heads=HEADS)
        rel = owner.block_term(0)
    g = torch.Generator().manual_seed(0)
    owner.to(dtype)
    with torch.no_grad():
        for p in owner.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    return rel, owner


def inputs(dtype: torch.dtype, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(BATCH, HEADS, T, HEAD_DIM, generator=g, dtype=dtype).to(device)
               for _ in range(3))
    keypoints = torch.rand(BATCH, K, 2, generator=g, dtype=dtype).to(device)
    dout = torch.randn(BATCH, HEADS, T, HEAD_DIM, generator=g, dtype=dtype).to(device)
    return q, k, v, keypoints, dout


def materialise(terms: list[BucketTerm]) -> torch.Tensor:
    """The (B, H, T, T) bias the score_mod adds, evaluated on broadcast index tensors."""
    def idx(n: int, dim: int) -> torch.Tensor:
        return torch.arange(n).view([-1 if i == dim else 1 for i in range(4)])

    zero = torch.zeros(BATCH, HEADS, T, T, dtype=torch.float64)
    return bucket_score_mod(terms)(zero, idx(BATCH, 0), idx(HEADS, 1), idx(T, 2), idx(T, 3))


@pytest.mark.parametrize("kind", KINDS)
def test_score_mod_is_the_bucket_kernels_bias(kind: str) -> None:
    """Attention with the score_mod's bias, materialised on index tensors, equals the bucket
    kernel in value and in the gradients of q, k, v and every table parameter."""
    rel, owner = encoding(kind, torch.float64)
    q, k, v, keypoints, dout = inputs(torch.float64)
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    ctx = AttentionContext(GRID, 1, keypoints if kind == "kprpe" else None)
    params = [q, k, v, *owner.parameters()]

    terms = rel.bucket_terms(q, k, ctx)
    want = bucket_attention(q, k, v, terms, SCALE)
    logits = q @ k.transpose(-2, -1) * SCALE + materialise(rel.bucket_terms(q, k, ctx))
    got = logits.softmax(-1) @ v
    torch.testing.assert_close(got, want)
    for a, e in zip(torch.autograd.grad(got, params, dout), torch.autograd.grad(want, params, dout)):
        torch.testing.assert_close(a, e)


@pytest.mark.filterwarnings(EAGER_WARNING)
@pytest.mark.parametrize("kind", KINDS)
def test_flex_forward_equals_bucket_kernel_on_cpu(kind: str) -> None:
    """FlexAttention itself (eager, no grad: what CPU supports) gives the bucket kernel's output."""
    rel, _ = encoding(kind, torch.float32)
    q, k, v, keypoints, _ = inputs(torch.float32)
    ctx = AttentionContext(GRID, 1, keypoints if kind == "kprpe" else None)
    with torch.no_grad():
        terms = rel.bucket_terms(q, k, ctx)
        got = flex_bucket_attention(q, k, v, terms, SCALE, compiled=False)
        want = bucket_attention(q, k, v, terms, SCALE)
    assert got.dtype == q.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _compare_with_grads(kind: str, device: str, dtype: torch.dtype, compiled: bool,
                        tol: float) -> None:
    """Flex vs bucket kernel on ``device``: output and gradients of q, k, v and the tables."""
    rel, owner = encoding(kind, torch.float32)
    owner.to(device)
    q, k, v, keypoints, dout = (x.to(dtype) if x.is_floating_point() else x
                                for x in inputs(torch.float32, device))
    keypoints = keypoints.float()
    q, k, v = (x.requires_grad_(True) for x in (q, k, v))
    ctx = AttentionContext(GRID, 1, keypoints if kind == "kprpe" else None)
    params = [q, k, v, *owner.parameters()]
    got = flex_bucket_attention(q, k, v, rel.bucket_terms(q, k, ctx), SCALE, compiled=compiled)
    want = bucket_attention(q, k, v, rel.bucket_terms(q, k, ctx), SCALE)
    for a, e in zip([got, *torch.autograd.grad(got, params, dout)],
                    [want, *torch.autograd.grad(want, params, dout)]):
        err = float((a.double() - e.double()).norm() / e.double().norm())
        assert err < tol, err


@pytest.mark.filterwarnings(EAGER_WARNING)
def test_flex_backward_on_cpu_where_torch_supports_it() -> None:
    """Runs only on a torch whose FlexAttention has a CPU backward (torch 2.14.1 has none)."""
    q, k, v, _, _ = inputs(torch.float32)
    try:
        flex_bucket_attention(q.requires_grad_(True), k, v, [], SCALE, compiled=False)
    except NotImplementedError as exc:
        pytest.skip(f"FlexAttention in torch {torch.__version__} has no CPU backward ({exc})")
    for kind in KINDS:
        _compare_with_grads(kind, "cpu", torch.float32, compiled=False, tol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_flex_equals_bucket_kernel_on_cuda(kind: str) -> None:
    """The compiled fused kernel (the training path on GPUs), fp32: values and gradients."""
    _compare_with_grads(kind, "cuda", torch.float32, compiled=True, tol=2e-3)  # TF32 in matmuls


@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_flex_bf16_on_cuda(kind: str) -> None:
    """bf16 inputs: both paths agree to bf16 accuracy (each accumulates in fp32)."""
    _compare_with_grads(kind, "cuda", torch.bfloat16, compiled=True, tol=2e-2)


def test_dispatch_keeps_the_bucket_kernel_on_cpu() -> None:
    assert not use_flex(torch.device("cpu"))
    assert not use_flex("cpu", "auto", requires_grad=True)
    assert not use_flex("cuda", "bucket")
    assert use_flex("cpu", "flex", requires_grad=False)  # inference only
    with pytest.raises(ConfigError, match="no CPU backward"):
        use_flex("cpu", "flex", requires_grad=True)
    with pytest.raises(ConfigError, match="unknown attention backend 'fast'"):
        use_flex("cpu", "fast")


def test_dispatch_on_cuda_needs_flex_and_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flex, "flex_available", lambda: True)
    monkeypatch.setattr(flex, "_triton_available", lambda: True)
    assert use_flex(torch.device("cuda"))
    assert use_flex("cuda:1", "auto", requires_grad=True)
    monkeypatch.setattr(flex, "_triton_available", lambda: False)
    assert not use_flex("cuda")
    monkeypatch.setattr(flex, "flex_available", lambda: False)
    with pytest.raises(ConfigError, match="flex_attention"):
        use_flex("cuda", "flex")
