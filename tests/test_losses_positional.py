"""Positional relations and the losses on them: each piece against its definition."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import rpe_reference as ref
import torch

from reidbench.config import LossConfig, ModelConfig, RelPosConfig
from reidbench.errors import ConfigError
from reidbench.layers.ape import AbsolutePositionEmbedding
from reidbench.layers.irpe import IRPE, IRPEConfig
from reidbench.layers.kprpe import KeypointRPE
from reidbench.layers.position import AttentionContext
from reidbench.layers.rpe import ShawRPE
from reidbench.losses import TrainOutputs, build_loss, relation_vectors, top_patches
from reidbench.losses.functional import positional_jsd
from reidbench.models import build_model
from reidbench.registry import load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

GRID = (4, 3)
N = GRID[0] * GRID[1]
F32 = {"rtol": 1e-5, "atol": 1e-5}  # float32 modules against float64 references


def gathered_mean(bias: torch.Tensor, index: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """The explicit (B|1, H, T, T) bias averaged over heads at the chosen patch pairs."""
    mean = bias.mean(1).expand(len(index), -1, -1)  # (B, T, T)
    rows = index + prefix
    return torch.stack([mean[b][rows[b]][:, rows[b]] for b in range(len(index))])


def reference_bias(term: ref.IRPETerm | ref.KPRPETerm, batch: int, heads: int) -> torch.Tensor:
    """(B|1, H, T, T) content-independent logits term of ``rpe_reference`` (queries and keys
    play no part in it: zeros), written from the papers' definitions."""
    t = 1 + N
    zeros = np.zeros((batch, heads, t, 1))
    return torch.from_numpy(np.broadcast_to(term.logits(zeros, zeros, 1.0), (batch, heads, t, t)).copy())


def tables_of(rpe: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n.split(".")[-1]: p.detach().double().numpy() for n, p in rpe.named_parameters()}


def random_index(b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(N, generator=g)[:n] for _ in range(b)])


@pytest.mark.parametrize(
    "method,on,shared",
    itertools.product(["product", "cross", "euclidean", "quant"], ["k", "q", "qk"], [True, False]),
)
def test_irpe_bias_mode_pair_bias_is_the_logits_bias(method: str, on: str, shared: bool) -> None:
    heads, d = 3, 4
    rpe = IRPE(IRPEConfig(method=method, mode="bias", on=on, shared_head=shared), d, heads)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for table in rpe.tables.values():
            table.copy_(torch.randn(table.shape, generator=g))
    ctx = AttentionContext(GRID, 1)
    full = reference_bias(ref.IRPETerm(tables_of(rpe), method, "bias", on, GRID), 2, heads)
    index = random_index(2, 5, 1)
    assert rpe.has_pair_bias
    torch.testing.assert_close(rpe.pair_bias(ctx, index).double(), gathered_mean(full, index), **F32)


@pytest.mark.parametrize("with_keypoints", [False, True])
def test_kprpe_pair_bias_is_the_layer_bias(with_keypoints: bool) -> None:
    kp = KeypointRPE(num_keypoints=3, depth=2, num_heads=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in kp.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    keypoints = torch.rand(2, 3, 2, generator=g) if with_keypoints else None
    ctx = AttentionContext(GRID, 1, keypoints)
    index = random_index(2, 6, 2)
    for layer in range(2):
        kps = None if keypoints is None else keypoints.double().numpy()
        full = reference_bias(ref.KPRPETerm(tables_of(kp), layer, 2, 4, GRID, kps), 2, 4)
        expected = gathered_mean(full, index)
        torch.testing.assert_close(kp.pair_bias(layer, ctx, index).double(), expected, **F32)
        term = kp.block_term(layer)
        assert term.has_pair_bias
        torch.testing.assert_close(term.pair_bias(ctx, index).double(), expected, **F32)


def test_contextual_terms_have_no_pair_bias() -> None:
    ctx = AttentionContext(GRID, 1)
    index = random_index(1, 3, 0)
    for rpe in (IRPE(IRPEConfig(mode="contextual"), 4, 2), ShawRPE(4, 2)):
        assert not rpe.has_pair_bias and rpe.pair_bias(ctx, index) is None


def test_pair_bias_rejects_bad_indices() -> None:
    rpe = IRPE(IRPEConfig(mode="bias"), 4, 2)
    with pytest.raises(ValueError, match="out of range"):
        rpe.pair_bias(AttentionContext(GRID, 1), torch.tensor([[0, N]]))


@pytest.mark.parametrize("kind", ["learned", "sincos"])
def test_ape_patch_embeddings(kind: str) -> None:
    ape = AbsolutePositionEmbedding(GRID, 8, num_prefix_tokens=1, kind=kind)
    table = ape.patch_embeddings()
    assert table.shape == (N, 8)
    torch.testing.assert_close(table, ape.embed[0, 1:])


def vit(name: str, **kw: object) -> torch.nn.Module:
    cfg = ModelConfig(name=name, depth=3, embed_dim=16, num_heads=2, patch_size=8, **kw)  # type: ignore[arg-type]
    model = build_model(cfg, (32, 24), 3)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # relative tables start at zero: give them values
        for n, p in model.named_parameters():
            if "kprpe" in n or "tables" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def test_pair_relations_follow_the_definition() -> None:
    model = vit("kprpe")
    backbone = model.backbone
    g = torch.Generator().manual_seed(3)
    kps = torch.rand(2, 3, 2, generator=g)
    index = random_index(2, 5, 4)
    # P_abs: the learned table's patch rows (row 0 is CLS); P_rel: KP-RPE from its definition
    p_abs = backbone.pos_embed.embed.detach().double()[0, 1:]
    absolute = torch.stack([p_abs[i] @ p_abs[i].T for i in index])  # (B, n, n)
    shared = tables_of(backbone.kprpe)
    per_layer = [gathered_mean(reference_bias(ref.KPRPETerm(shared, layer, 3, 2, GRID, kps.double().numpy()),
                                              2, 2), index) for layer in range(3)]
    assert backbone.position_terms() == (True, True)
    mean = backbone.pair_relations(index, kps).double()
    assert mean.shape == (2, 1, 5, 5)
    torch.testing.assert_close(mean[:, 0], absolute + torch.stack(per_layer).mean(0), **F32)
    chosen = backbone.pair_relations(index, kps, layers=(0, -1)).double()
    assert chosen.shape == (2, 2, 5, 5)
    torch.testing.assert_close(chosen[:, 0], absolute + per_layer[0], **F32)
    torch.testing.assert_close(chosen[:, 1], absolute + per_layer[2], **F32)


@pytest.mark.parametrize(
    "name,kw,expected",
    [
        ("ape", {}, (True, False)),
        ("ape", {"ape": "sincos"}, (True, False)),
        ("rpe", {}, (True, False)),
        ("irpe", {}, (True, False)),  # contextual: query-dependent, no P_rel
        ("irpe", {"rel": RelPosConfig(mode="bias")}, (True, True)),
        ("irpe", {"rel": RelPosConfig(mode="bias"), "ape": "none"}, (False, True)),
        ("kprpe", {"ape": "none"}, (False, True)),
    ],
)
def test_which_encodings_have_which_terms(name: str, kw: dict, expected: tuple[bool, bool]) -> None:
    backbone = vit(name, **kw).backbone
    assert backbone.position_terms() == expected
    index = random_index(2, 4, 0)
    rel = backbone.pair_relations(index)
    assert rel.shape == (2, 1, 4, 4) and torch.isfinite(rel).all()
    if not expected[1]:  # P_abs only
        p = backbone.pos_embed.patch_embeddings()[index]
        torch.testing.assert_close(rel[:, 0], p @ p.transpose(1, 2))


def test_top_patches_ranks_by_cosine_to_cls() -> None:
    cls = torch.tensor([1.0, 0.0])
    patches = torch.tensor([[0.0, 1.0], [10.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [3.0, 0.1]])
    tokens = torch.cat([cls[None], patches])[None]  # (1, 6, 2)
    # cosines: 0, 0.995, 0.707, -1, 0.9994 -> order 4, 1, 2
    assert top_patches(tokens, 3).tolist() == [[4, 1, 2]]
    with pytest.raises(ValueError, match="top 6 of 5"):
        top_patches(tokens, 6)


def test_relation_vectors_take_each_ranked_pair_once_in_order() -> None:
    rel = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4)
    vec = relation_vectors(rel)
    assert vec.shape == (1, 2, 6)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert vec[0, 1].tolist() == [float(16 + 4 * i + j) for i, j in pairs]


def brute_vectors(
    model: torch.nn.Module, images: torch.Tensor, kps: torch.Tensor, n: int, layers: tuple[int, ...] | None
) -> torch.Tensor:
    """Relation vectors by the definition, with loops: top-n patches by cosine to CLS, then R."""
    backbone = model.backbone
    tokens = backbone.forward_tokens(images, kps)
    out = []
    for b in range(len(images)):
        sims = [
            float(torch.nn.functional.cosine_similarity(tokens[b, 1 + i], tokens[b, 0], dim=0))
            for i in range(tokens.shape[1] - 1)
        ]
        top = sorted(range(len(sims)), key=lambda i: -sims[i])[:n]
        rel = backbone.pair_relations(torch.tensor([top]), kps[b : b + 1], layers)[0]  # (L, n, n)
        out.append(torch.stack([rel[:, i, j] for i in range(n) for j in range(i + 1, n)], dim=-1))
    return torch.stack(out)  # (B, L, n(n-1)/2)


def brute_triplet(vecs: torch.Tensor, pids: torch.Tensor, margin: float) -> float:
    losses = []
    for a in range(len(pids)):
        pos = [float(torch.dist(vecs[a], vecs[p])) for p in range(len(pids)) if p != a and pids[p] == pids[a]]
        neg = [float(torch.dist(vecs[a], vecs[k])) for k in range(len(pids)) if pids[k] != pids[a]]
        gap = max(pos) - min(neg)
        losses.append(max(0.0, gap + margin) if margin > 0 else math.log1p(math.exp(gap)))
    return sum(losses) / len(losses)


def brute_jsd(vecs: torch.Tensor, pids: torch.Tensor, temperature: float) -> float:
    from scipy.spatial.distance import jensenshannon

    values = []
    for a, p in itertools.permutations(range(len(pids)), 2):
        if pids[a] == pids[p]:
            for layer in range(vecs.shape[1]):
                pa = (vecs[a, layer] / temperature).softmax(-1).double().numpy()
                pp = (vecs[p, layer] / temperature).softmax(-1).double().numpy()
                values.append(jensenshannon(pa, pp) ** 2)
    return sum(values) / len(values)


def positional_batch(model: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(6, 3, 32, 24, generator=g)
    kps = torch.rand(6, 3, 2, generator=g)
    pids = torch.tensor([0, 0, 1, 1, 2, 2])
    return images, kps, pids


def outputs(
    model: torch.nn.Module, images: torch.Tensor, kps: torch.Tensor, pids: torch.Tensor
) -> TrainOutputs:
    feats, neck, tokens = model.forward_train_tokens(images, kps)

    def relations(index: torch.Tensor, layers: tuple[int, ...] | None) -> torch.Tensor:
        return model.backbone.pair_relations(index, kps, layers)

    return TrainOutputs(feats, neck, pids, tokens=tokens, relations=relations)


@pytest.mark.parametrize("layers,margin", [((), 0.3), ((0, -1), 0.3), ((), 0.0)])
def test_rp_triplet_matches_brute_force(layers: tuple[int, ...], margin: float) -> None:
    model = vit("kprpe")
    model.eval()
    images, kps, pids = positional_batch(model)
    cfg = LossConfig(terms=("rp_triplet",), weights=(1.0,), rp_topn=4, rp_layers=layers, rp_margin=margin)
    loss = build_loss(cfg, model.dim, 3)
    loss.check_model(model)
    _, values = loss(outputs(model, images, kps, pids))
    with torch.no_grad():
        vecs = brute_vectors(model, images, kps, 4, layers or None).flatten(1)
    assert values["rp_triplet"].item() == pytest.approx(brute_triplet(vecs, pids, margin), rel=1e-4)


@pytest.mark.parametrize("layers,temperature", [((), 1.0), ((1, 2), 0.5)])
def test_positional_jsd_matches_brute_force(layers: tuple[int, ...], temperature: float) -> None:
    model = vit("kprpe")
    model.eval()
    images, kps, pids = positional_batch(model, seed=1)
    cfg = LossConfig(terms=("jsd",), weights=(1.0,), rp_topn=5, rp_layers=layers, jsd_temperature=temperature)
    loss = build_loss(cfg, model.dim, 3)
    _, values = loss(outputs(model, images, kps, pids))
    with torch.no_grad():
        vecs = brute_vectors(model, images, kps, 5, layers or None)
    assert values["jsd"].item() == pytest.approx(brute_jsd(vecs, pids, temperature), rel=1e-4)
    assert 0 < values["jsd"].item() <= math.log(2)


def test_positional_jsd_zero_for_equal_vectors_and_no_positives() -> None:
    vec = torch.randn(1, 2, 6).expand(4, 2, 6)
    assert positional_jsd(vec, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(3, 1, 6, requires_grad=True)
    value = positional_jsd(other, torch.tensor([0, 1, 2]))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(other.grad).all()


@pytest.mark.parametrize("name", ["rp_triplet", "jsd"])
def test_positional_losses_train_only_position_parameters(name: str) -> None:
    model = vit("kprpe")
    images, kps, pids = positional_batch(model, seed=2)
    loss = build_loss(LossConfig(terms=(name,), weights=(1.0,), rp_topn=4), model.dim, 3)
    total, _ = loss(outputs(model, images, kps, pids))
    total.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert with_grad <= {"backbone.pos_embed.embed", "backbone.kprpe.weight", "backbone.kprpe.bias"}
    assert "backbone.pos_embed.embed" in with_grad and "backbone.kprpe.bias" in with_grad


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("poster", {}, "PosterViT has none"),
        ("resnet50", {}, "has none"),
        ("irpe", {"ape": "none"}, "no absolute position embeddings"),
        ("rpe", {"ape": "none"}, "no absolute position embeddings"),
    ],
)
def test_models_without_positional_terms_are_config_errors(name: str, kw: dict, match: str) -> None:
    cfg = ModelConfig(name=name, depth=1, embed_dim=16, num_heads=2, patch_size=8, size="nano", **kw)
    model = build_model(cfg, (32, 24), 3)
    for term in ("rp_triplet", "jsd"):
        loss = build_loss(LossConfig(terms=("ce", term), weights=(1.0, 0.1)), model.dim, 3)
        with pytest.raises(ConfigError, match=match):
            loss.check_model(model)


def test_bad_positional_settings_are_config_errors() -> None:
    model = vit("kprpe")  # 4 x 3 = 12 patches, depth 3
    with pytest.raises(ConfigError, match="exceeds the 12 patches"):
        build_loss(LossConfig(terms=("jsd",), weights=(1.0,), rp_topn=13), 16, 3).check_model(model)
    with pytest.raises(ConfigError, match="relation layers"):
        build_loss(LossConfig(terms=("rp_triplet",), weights=(1.0,), rp_layers=(3,)), 16, 3).check_model(
            model
        )
    with pytest.raises(ConfigError, match="at least 2"):
        build_loss(LossConfig(terms=("rp_triplet",), weights=(1.0,), rp_topn=1), 16, 3)
    with pytest.raises(ConfigError, match="jsd_temperature"):
        build_loss(LossConfig(terms=("jsd",), weights=(1.0,), jsd_temperature=0.0), 16, 3)
    loss = build_loss(LossConfig(terms=("rp_triplet",), weights=(1.0,)), 16, 3)
    feats = torch.randn(4, 16)
    with pytest.raises(ConfigError, match="tokens and relations"):
        loss(TrainOutputs(feats, feats, torch.tensor([0, 0, 1, 1])))


def test_forward_train_tokens_agrees_with_forward_train() -> None:
    model = vit("irpe")
    model.eval()
    images, kps, _ = positional_batch(model)
    feats, neck = model.forward_train(images, kps)
    f2, n2, tokens = model.forward_train_tokens(images, kps)
    assert tokens.shape == (6, 1 + 12, 16)
    torch.testing.assert_close(f2, feats)
    torch.testing.assert_close(n2, neck)
    torch.testing.assert_close(model(images, kps), neck)


def test_relation_statistics_and_diagnostics() -> None:
    from reidbench.losses.positional import relation_statistics

    vecs = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 1.0]], [[0.0, 2.0]]])  # (4, 1, 2)
    stats = relation_statistics(vecs, torch.tensor([0, 0, 1, 1]), "rp")
    norms = [0.0, 5.0, 1.0, 2.0]
    pos = [5.0, 1.0]  # (0, 1), (2, 3)
    neg = [1.0, 2.0, math.sqrt(9 + 9), math.sqrt(9 + 4)]  # (0, 2), (0, 3), (1, 2), (1, 3)
    assert stats["rp_rel_norm"] == pytest.approx(sum(norms) / 4)
    assert stats["rp_d_pos"] == pytest.approx(sum(pos) / 2, abs=1e-5)
    assert stats["rp_d_neg"] == pytest.approx(sum(neg) / 4, abs=1e-5)
    model = vit("kprpe")
    images, kps, pids = positional_batch(model)
    loss = build_loss(
        LossConfig(terms=("ce", "rp_triplet", "jsd"), weights=(1.0, 1.0, 1.0), rp_topn=4), 16, 3
    )
    loss(outputs(model, images, kps, pids))
    diag = loss.diagnostics()
    assert set(diag) == {f"{t}_{k}" for t in ("rp_triplet", "jsd") for k in ("rel_norm", "d_pos", "d_neg")}
    assert diag["rp_triplet_rel_norm"] == diag["jsd_rel_norm"] > 0
