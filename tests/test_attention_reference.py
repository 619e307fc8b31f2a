"""The relative term inside attention, with non-zero tables: ``Attention.forward`` and whole ViTs
(irpe, rpe, kprpe with and without keypoints) against an explicit softmax(s q k^T + bias) v
built from the published definitions in ``rpe_reference`` (no helper of the library is used to
compute the reference), and the custom backward against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import rpe_reference as ref
import torch

from reidbench.config import ModelConfig, RelPosConfig
from reidbench.layers.attention import Attention
from reidbench.layers.irpe import IRPE, IRPEConfig
from reidbench.layers.kprpe import kprpe_factory
from reidbench.layers.position import AttentionContext
from reidbench.layers.rpe import ShawRPE
from reidbench.models import build_model
from reidbench.registry import load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

GRID = (6, 5)  # non-square; offsets up to 5 rows reach the logarithmic and clipped buckets
T = 1 + GRID[0] * GRID[1]
DIM, HEADS = 16, 2


def randomise(module: torch.nn.Module, seed: int, std: float = 0.3) -> None:
    """Every parameter random (LayerNorm and biases included): nothing is zero by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def numpy_params(module: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    return {n[len(prefix):]: p.detach().numpy().copy() for n, p in module.named_parameters()
            if n.startswith(prefix)}


def keypoints(b: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some outside [0, 1]


def check_attention(attn: Attention, term: object, ctx: AttentionContext, seed: int = 0) -> None:
    x = torch.randn(2, T, DIM, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)
    got = attn(x, ctx).detach().numpy()
    want = ref.attention(x.numpy(), numpy_params(attn, ""), HEADS, term)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    # the relative term matters: dropping it changes the output well beyond the tolerance
    plain = ref.attention(x.numpy(), numpy_params(attn, ""), HEADS, ref.Term())
    assert np.abs(got - plain).max() > 1e-3


def irpe_cfgs() -> list[IRPEConfig]:
    cfgs = [IRPEConfig(method=m, mode=mode, on=on, shared_head=s)
            for m in ("euclidean", "quant", "cross", "product") for mode in ("bias", "contextual")
            for on in ("k", "q", "qk", "v", "qkv") for s in (True, False)
            if not (mode == "bias" and "v" in on)]
    return cfgs + [IRPEConfig(method=m, mapping="clip", on="qkv", shared_head=False)
                   for m in ("euclidean", "quant", "cross", "product")]


def cfg_id(c: IRPEConfig) -> str:
    return f"{c.method}-{c.mapping}-{c.mode}-{c.on}-{'shared' if c.shared_head else 'per-head'}"


@pytest.mark.parametrize("cfg", irpe_cfgs(), ids=cfg_id)
def test_attention_with_irpe_equals_explicit_softmax(cfg: IRPEConfig) -> None:
    attn = Attention(DIM, HEADS, rel_pos=IRPE(cfg, DIM // HEADS, HEADS)).double()
    randomise(attn, seed=1)
    tables = {n.split(".")[-1]: v for n, v in numpy_params(attn, "rel_pos.").items()}
    term = ref.IRPETerm(tables, cfg.method, cfg.mode, cfg.on, GRID, 1, cfg.ratio, cfg.mapping)
    check_attention(attn, term, AttentionContext(GRID, 1))


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("on_values", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_attention_with_shaw_rpe_equals_explicit_softmax(k: int, on_values: bool, shared: bool) -> None:
    attn = Attention(DIM, HEADS, rel_pos=ShawRPE(DIM // HEADS, HEADS, k, on_values, shared)).double()
    randomise(attn, seed=2)
    term = ref.ShawTerm(numpy_params(attn, "rel_pos."), GRID, k)
    check_attention(attn, term, AttentionContext(GRID, 1), seed=k)


@pytest.mark.parametrize("with_keypoints", [True, False])
@pytest.mark.parametrize("layer", [0, 2])
def test_attention_with_kprpe_equals_explicit_softmax(layer: int, with_keypoints: bool) -> None:
    shared, factory = kprpe_factory(num_keypoints=3, depth=3, num_heads=HEADS)
    shared.double()
    randomise(shared, seed=3, std=1.0)
    attn = Attention(DIM, HEADS, rel_pos=factory(layer)).double()
    randomise(attn, seed=4)
    kp = keypoints(2, 3, seed=5) if with_keypoints else None
    term = ref.KPRPETerm(numpy_params(shared), layer, 3, HEADS, GRID, None if kp is None else kp.numpy())
    check_attention(attn, term, AttentionContext(GRID, 1, kp))


def test_kprpe_output_follows_each_images_own_keypoints() -> None:
    """Two images with the same content and different keypoints: each output is the reference
    with its own keypoints (a batch mix-up, e.g. broadcasting image 0's table, fails)."""
    shared, factory = kprpe_factory(num_keypoints=2, depth=1, num_heads=HEADS)
    shared.double()
    randomise(shared, seed=6, std=1.0)
    attn = Attention(DIM, HEADS, rel_pos=factory(0)).double()
    randomise(attn, seed=7)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, T, DIM, generator=g, dtype=torch.float64).repeat(2, 1, 1)
    kp = keypoints(2, 2, seed=9)
    got = attn(x, AttentionContext(GRID, 1, kp)).detach().numpy()
    for b in range(2):
        term = ref.KPRPETerm(numpy_params(shared), 0, 1, HEADS, GRID, kp[b:b + 1].numpy())
        want = ref.attention(x[b:b + 1].numpy(), numpy_params(attn), HEADS, term)
        np.testing.assert_allclose(got[b:b + 1], want, rtol=1e-9, atol=1e-10)
    assert np.abs(got[0] - got[1]).max() > 1e-3


# --- the custom backward: finite differences ----------------------------------------------------


class _Wrapper(torch.nn.Module):
    """Attention plus the module owning its relative tables (KP-RPE's shared map lives outside)."""

    def __init__(self, attn: Attention, owner: torch.nn.Module | None, ctx: AttentionContext) -> None:
        super().__init__()
        self.attn, self.owner, self.ctx = attn, owner, ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, self.ctx)


@pytest.mark.parametrize("rel", ["irpe-k", "irpe-q-bias", "irpe-qkv", "shaw", "kprpe"])
def test_backward_equals_finite_differences(rel: str) -> None:
    """gradcheck: the analytic gradients of x and of every relative table are the derivatives
    of the forward that the tests above pin to the reference."""
    dim, heads = 8, 2
    owner = None
    if rel == "irpe-k":
        pos = IRPE(IRPEConfig(on="k", shared_head=False), dim // heads, heads)
    elif rel == "irpe-q-bias":
        pos = IRPE(IRPEConfig(mode="bias", on="q", method="cross"), dim // heads, heads)
    elif rel == "irpe-qkv":
        pos = IRPE(IRPEConfig(on="qkv", method="quant"), dim // heads, heads)
    elif rel == "shaw":
        pos = ShawRPE(dim // heads, heads, 1, on_values=True, shared_head=False)
    else:
        owner, factory = kprpe_factory(num_keypoints=2, depth=1, num_heads=heads)
        pos = factory(0)
    kp = keypoints(2, 2, seed=12) if owner is not None else None
    model = _Wrapper(Attention(dim, heads, rel_pos=pos), owner, AttentionContext((3, 2), 1, kp)).double()
    randomise(model, seed=11, std=0.5)
    names = [n for n, _ in model.named_parameters() if "rel_pos" in n or n.startswith("owner.")]
    assert names
    base = dict(model.named_parameters())

    def f(x: torch.Tensor, *tables: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, {**base, **dict(zip(names, tables))}, (x,))

    x = torch.randn(2, 7, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    inputs = (x.requires_grad_(),) + tuple(base[n].detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


# --- whole ViTs ------------------------------------------------------------------------------------


def vit(name: str, rel: RelPosConfig | None = None, seed: int = 0) -> torch.nn.Module:
    cfg = ModelConfig(name=name, depth=2, embed_dim=DIM, num_heads=HEADS, patch_size=4,
                      rel=rel or RelPosConfig())
    backbone = build_model(cfg, (4 * GRID[0], 4 * GRID[1]), 3).backbone.double()
    randomise(backbone, seed)
    backbone.eval()
    return backbone


def images(seed: int = 20) -> torch.Tensor:
    return torch.randn(2, 3, 4 * GRID[0], 4 * GRID[1], generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def block_tables(params: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    prefix = f"blocks.{i}.attn.rel_pos."
    return {n[len(prefix):].split(".")[-1]: v for n, v in params.items() if n.startswith(prefix)}


def check_vit(backbone: torch.nn.Module, terms, kp: torch.Tensor | None = None) -> None:  # noqa: ANN001
    x = images()
    got = backbone.forward_tokens(x, kp).detach().numpy()
    params = numpy_params(backbone)
    want = ref.vit_tokens(params, x.numpy(), 4, 2, HEADS, lambda i: terms(params, i))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9)
    without = ref.vit_tokens(params, x.numpy(), 4, 2, HEADS, lambda i: ref.Term())
    assert np.abs(got - without).max() > 1e-3  # the relative terms are really in there


@pytest.mark.parametrize("rel", [
    RelPosConfig(),  # the default: contextual product on keys
    RelPosConfig(mode="bias", on="qk", method="cross", shared_head=False),
    RelPosConfig(on="qkv", method="euclidean", mapping="clip"),
], ids=["contextual-k-product", "bias-qk-cross", "contextual-qkv-euclidean-clip"])
def test_irpe_vit_equals_reference(rel: RelPosConfig) -> None:
    def terms(params: dict[str, np.ndarray], i: int) -> ref.IRPETerm:
        return ref.IRPETerm(block_tables(params, i), rel.method, rel.mode, rel.on, GRID, 1, rel.ratio,
                            rel.mapping)

    check_vit(vit("irpe", rel), terms)


@pytest.mark.parametrize("on_values", [False, True])
def test_rpe_vit_equals_reference(on_values: bool) -> None:
    rel = RelPosConfig(max_distance=2, on_values=on_values)

    def terms(params: dict[str, np.ndarray], i: int) -> ref.ShawTerm:
        return ref.ShawTerm(block_tables(params, i), GRID, 2)

    check_vit(vit("rpe", rel), terms)


@pytest.mark.parametrize("with_keypoints", [True, False])
def test_kprpe_vit_equals_reference(with_keypoints: bool) -> None:
    kp = keypoints(2, 3, seed=21) if with_keypoints else None

    def terms(params: dict[str, np.ndarray], i: int) -> ref.KPRPETerm:
        shared = {n[len("kprpe."):]: v for n, v in params.items() if n.startswith("kprpe.")}
        return ref.KPRPETerm(shared, i, 2, HEADS, GRID, None if kp is None else kp.numpy())

    check_vit(vit("kprpe"), terms, kp)


def test_ape_vit_equals_reference() -> None:
    """The reference ViT itself, on the model without relative terms."""
    backbone = vit("ape")
    x = images()
    params = numpy_params(backbone)
    want = ref.vit_tokens(params, x.numpy(), 4, 2, HEADS, lambda i: ref.Term())
    np.testing.assert_allclose(backbone.forward_tokens(x).detach().numpy(), want, rtol=1e-8, atol=1e-9)
