"""Losses against brute-force definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reidbench.config import LossConfig
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.losses import (
    TrainOutputs,
    adaface_logits,
    arcface_logits,
    batch_hard_triplet,
    build_loss,
    circle_loss,
    cosface_logits,
    js_divergence,
    js_divergence_logits,
    supcon_loss,
)
from reidbench.losses.functional import adaface_quality
from reidbench.registry import LOSSES, load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them


def brute_triplet(feats: torch.Tensor, pids: torch.Tensor, margin: float) -> torch.Tensor:
    losses = []
    for a in range(len(pids)):
        pos = [torch.dist(feats[a], feats[p]) for p in range(len(pids)) if p != a and pids[p] == pids[a]]
        neg = [torch.dist(feats[a], feats[n]) for n in range(len(pids)) if pids[n] != pids[a]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(torch.relu(gap + margin) if margin > 0 else torch.nn.functional.softplus(gap))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("margin,seed", itertools.product([0.3, 0.0], range(3)))
def test_batch_hard_matches_brute_force(margin: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(16, 8, generator=g, dtype=torch.float64)
    pids = torch.arange(4).repeat_interleave(4)
    expected = brute_triplet(feats, pids, margin)
    assert batch_hard_triplet(feats, pids, margin).item() == pytest.approx(expected.item(), abs=1e-9)


def test_anchor_without_positive_is_left_out() -> None:
    feats = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pids = torch.tensor([0, 0, 1, 1, 2])  # pid 2 has no positive
    assert batch_hard_triplet(feats, pids, 0.3).item() == pytest.approx(
        brute_triplet(feats, pids, 0.3).item(), abs=1e-9)


def test_combined_loss_has_finite_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    loss = build_loss(LossConfig(), dim=8, num_classes=4)
    feats = torch.randn(16, 8, generator=g, requires_grad=True)
    total, terms = loss(TrainOutputs(feats, feats * 2, torch.arange(4).repeat_interleave(4)))
    total.backward()
    assert set(terms) == {"ce", "triplet"}
    assert torch.isfinite(feats.grad).all()


def test_bad_loss_config_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="2 loss.terms"):
        build_loss(LossConfig(terms=("ce", "triplet"), weights=(1.0,)), 8, 4)
    with pytest.raises(ReidbenchError, match="unknown loss 'nope'"):
        build_loss(LossConfig(terms=("nope",), weights=(1.0,)), 8, 4)


# --- pair losses: Circle and SupCon against loops over their definitions ---------------------


def brute_circle(feats: torch.Tensor, pids: torch.Tensor, m: float, gamma: float) -> torch.Tensor:
    z = torch.nn.functional.normalize(feats, dim=1)
    losses = []
    for a in range(len(pids)):
        sp = [float(z[a] @ z[p]) for p in range(len(pids)) if p != a and pids[p] == pids[a]]
        sn = [float(z[a] @ z[n]) for n in range(len(pids)) if pids[n] != pids[a]]
        if not sp or not sn:
            continue
        neg = sum(math.exp(gamma * max(0.0, s + m) * (s - m)) for s in sn)
        pos = sum(math.exp(-gamma * max(0.0, 1 + m - s) * (s - 1 + m)) for s in sp)
        losses.append(math.log1p(neg * pos))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def brute_supcon(feats: torch.Tensor, pids: torch.Tensor, t: float) -> torch.Tensor:
    z = torch.nn.functional.normalize(feats, dim=1)
    losses = []
    for i in range(len(pids)):
        others = [a for a in range(len(pids)) if a != i]
        denom = sum(math.exp(float(z[i] @ z[a]) / t) for a in others)
        pos = [p for p in others if pids[p] == pids[i]]
        if pos:
            losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos))
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


@pytest.mark.parametrize("seed", range(3))
def test_circle_matches_definition(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(12, 6, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # pid 4 has no positive: left out
    for m, gamma in [(0.25, 32.0), (0.4, 8.0)]:
        assert circle_loss(feats, pids, m, gamma).item() == pytest.approx(
            brute_circle(feats, pids, m, gamma).item(), rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_supcon_matches_definition(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(10, 5, generator=g, dtype=torch.float64)
    pids = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 4])
    for t in (0.1, 0.5):
        assert supcon_loss(feats, pids, t).item() == pytest.approx(brute_supcon(feats, pids, t).item(),
                                                                   rel=1e-9)


def test_pair_losses_without_pairs_are_zero_with_a_gradient() -> None:
    feats = torch.randn(3, 4, requires_grad=True)
    pids = torch.tensor([0, 1, 2])  # no positives
    for value in (circle_loss(feats, pids), supcon_loss(feats, pids), batch_hard_triplet(feats, pids)):
        assert value.item() == 0.0
        value.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


# --- margin heads on hand-computed cases -----------------------------------------------------

COS = torch.tensor([[0.5, 0.2, -0.1], [-0.95, 0.3, 0.1], [0.0, 0.8, 0.6]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 2])


def test_cosface_hand_computed() -> None:
    out = cosface_logits(COS, LABELS, margin=0.35, scale=2.0)
    expected = 2.0 * torch.tensor([[0.15, 0.2, -0.1], [-1.3, 0.3, 0.1], [0.0, 0.8, 0.25]],
                                  dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_arcface_hand_computed() -> None:
    m = 0.5
    out = arcface_logits(COS, LABELS, margin=m, scale=2.0)
    row0 = math.cos(math.acos(0.5) + m)  # theta = pi/3: inside [0, pi - m]
    row1 = -0.95 - (1 - math.cos(m))  # theta = acos(-0.95) = 2.82 > pi - m: the continuation
    row2 = math.cos(math.acos(0.6) + m)
    expected = 2.0 * torch.tensor([[row0, 0.2, -0.1], [row1, 0.3, 0.1], [0.0, 0.8, row2]],
                                  dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    # the continuation meets cos(theta + m) at theta = pi - m
    edge = torch.tensor([[math.cos(math.pi - m)]], dtype=torch.float64)
    below = torch.tensor([[math.cos(math.pi - m) - 1e-9]], dtype=torch.float64)
    zero = torch.tensor([0])
    assert arcface_logits(edge, zero, m, 1.0).item() == pytest.approx(-1.0, abs=1e-7)
    assert arcface_logits(below, zero, m, 1.0).item() == pytest.approx(-1.0, abs=1e-7)


def test_adaface_hand_computed_and_its_limits() -> None:
    m, s = 0.4, 3.0
    cos = COS.clamp(-0.9, 0.9)  # away from AdaFace's eps clipping of theta
    for q in (-1.0, -0.3, 0.0, 0.7, 1.0):
        out = adaface_logits(cos, LABELS, torch.full((3,), q, dtype=torch.float64), margin=m, scale=s)
        for r, y in enumerate(LABELS.tolist()):
            theta = math.acos(float(cos[r, y]))
            target = math.cos(min(max(theta - m * q, 1e-3), math.pi - 1e-3)) - (m + m * q)
            assert out[r, y].item() == pytest.approx(s * target, abs=1e-9)
            others = [j for j in range(3) if j != y]
            torch.testing.assert_close(out[r, others], s * cos[r, others])
    ones = torch.ones(3, dtype=torch.float64)
    inside = torch.tensor([[0.5, 0.1], [0.2, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    # q = -1: ArcFace's angular margin; q = 0: CosFace's additive margin
    torch.testing.assert_close(adaface_logits(inside, labels, -ones[:2], m, s),
                               arcface_logits(inside, labels, m, s))
    torch.testing.assert_close(adaface_logits(inside, labels, 0 * ones[:2], m, s),
                               cosface_logits(inside, labels, m, s))


def test_adaface_quality_hand_computed() -> None:
    # (|z| - mu) / (sigma + 1e-3) * h, clipped to [-1, 1]: (10 - 20) / 10.001 * 0.5 = -0.49995...
    q = adaface_quality(torch.tensor([10.0, 20.0, 30.0, 500.0, 0.0], dtype=torch.float64),
                        mean=20.0, std=10.0, h=0.5)
    expected = [-0.4999500049995, 0.0, 0.4999500049995, 1.0, -0.9999000099990]
    torch.testing.assert_close(q, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


class OfficialAdaFace:
    """AdaFace's training-time head as the paper and the authors' ``head.py`` define it, in numpy:
    norms of the raw features clipped to [0.001, 100]; the running mean / (unbiased) std updated
    with t_alpha = momentum BEFORE they are used; z = clip((|z| - mean) / (std + eps) * h, -1, 1);
    target logit s (cos(clip(theta_y - m z, eps, pi - eps)) - (m + m z)), others s cos(theta_j),
    cosines clamped to [-1 + eps, 1 - eps]."""

    def __init__(self, m: float, h: float, s: float, t_alpha: float, eps: float = 1e-3) -> None:
        self.m, self.h, self.s, self.t_alpha, self.eps = m, h, s, t_alpha, eps
        self.batch_mean, self.batch_std = 20.0, 100.0

    def __call__(self, feats, kernel, labels):  # noqa: ANN001, ANN204
        import numpy as np

        norms = np.clip(np.linalg.norm(feats, axis=1), 0.001, 100)
        self.batch_mean = norms.mean() * self.t_alpha + (1 - self.t_alpha) * self.batch_mean
        self.batch_std = norms.std(ddof=1) * self.t_alpha + (1 - self.t_alpha) * self.batch_std
        z = np.clip((norms - self.batch_mean) / (self.batch_std + self.eps) * self.h, -1, 1)
        emb = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        k = kernel / np.linalg.norm(kernel, axis=1, keepdims=True)  # (C, D): one row per class
        cosine = np.clip(emb @ k.T, -1 + self.eps, 1 - self.eps)
        onehot = np.eye(cosine.shape[1])[labels]
        theta = np.clip(np.arccos(cosine) + onehot * (-self.m * z)[:, None], self.eps, np.pi - self.eps)
        return self.s * (np.cos(theta) - onehot * (self.m + self.m * z)[:, None])


def test_adaface_head_equals_the_official_formula_over_training_steps() -> None:
    """Three training batches (norms small, large, beyond the clip at 100) then evaluation: the
    logits and the running statistics follow the official head step by step."""
    from reidbench.losses.margins import AdaFaceHead

    g = torch.Generator().manual_seed(0)
    head = AdaFaceHead(dim=6, num_classes=5, margin=0.4, scale=16.0, h=0.333, momentum=0.3).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(5, 6, generator=g, dtype=torch.float64))
    official = OfficialAdaFace(m=0.4, h=0.333, s=16.0, t_alpha=0.3)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    for scale in (1.0, 30.0, 150.0):
        feats = torch.randn(8, 6, generator=g, dtype=torch.float64) * scale
        feats[0] *= 5.0  # one sample far from the batch: its quality term clips at 1
        got = head.logits(feats, labels)
        want = official(feats.numpy(), head.weight.detach().numpy(), labels.numpy())
        torch.testing.assert_close(got, torch.from_numpy(want), rtol=1e-9, atol=1e-9)
        assert head.norm_mean.item() == pytest.approx(official.batch_mean, rel=1e-12)
        assert head.norm_std.item() == pytest.approx(official.batch_std, rel=1e-12)
    head.eval()  # evaluation: the statistics are used, not updated
    feats = torch.randn(8, 6, generator=g, dtype=torch.float64) * 40.0
    before = (official.batch_mean, official.batch_std)
    got = head.logits(feats, labels)
    official.t_alpha = 0.0  # no update
    torch.testing.assert_close(got, torch.from_numpy(official(feats.numpy(), head.weight.detach().numpy(),
                                                              labels.numpy())), rtol=1e-9, atol=1e-9)
    assert (head.norm_mean.item(), head.norm_std.item()) == pytest.approx(before, rel=1e-12)


def test_margin_head_modules_use_normalised_weights() -> None:
    cfg = LossConfig(terms=("arcface", "cosface", "adaface"), weights=(1.0, 1.0, 1.0), scale=4.0)
    loss = build_loss(cfg, dim=2, num_classes=2)
    feats = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # cosines to the axes: [1, 0] and [0, 1]
    pids = torch.tensor([0, 1])
    with torch.no_grad():
        for term in loss.terms.values():
            term.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 7.0]]))
    _, values = loss(TrainOutputs(feats, feats, pids))
    ce = torch.nn.functional.cross_entropy
    arc = 4.0 * torch.tensor([[math.cos(0.5), 0.0], [0.0, math.cos(0.5)]])
    cosf = 4.0 * torch.tensor([[1 - 0.35, 0.0], [0.0, 1 - 0.35]])
    assert values["arcface"].item() == pytest.approx(ce(arc, pids).item(), rel=1e-5)
    assert values["cosface"].item() == pytest.approx(ce(cosf, pids).item(), rel=1e-5)
    head = loss.terms["adaface"]
    batch_norms = torch.tensor([3.0, 0.5])
    assert head.norm_mean.item() == pytest.approx(0.99 * 20 + 0.01 * batch_norms.mean().item())
    assert head.norm_std.item() == pytest.approx(0.99 * 100 + 0.01 * batch_norms.std().item())
    q = adaface_quality(batch_norms, head.norm_mean, head.norm_std, 0.333)
    ada = adaface_logits(torch.eye(2), pids, q, 0.4, 4.0)
    assert values["adaface"].item() == pytest.approx(ce(ada, pids).item(), rel=1e-5)
    head.eval()  # evaluation leaves the running statistics alone
    before = head.norm_mean.clone()
    loss(TrainOutputs(feats, feats, pids))
    assert torch.equal(head.norm_mean, before)


def test_bad_margin_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="arc_margin"):
        build_loss(LossConfig(terms=("arcface",), weights=(1.0,), arc_margin=2.0), 8, 4)
    with pytest.raises(ConfigError, match="loss.scale"):
        build_loss(LossConfig(terms=("cosface",), weights=(1.0,), scale=0.0), 8, 4)
    with pytest.raises(ConfigError, match="twice"):
        build_loss(LossConfig(terms=("ce", "ce"), weights=(1.0, 1.0)), 8, 4)


# --- Jensen-Shannon divergence ---------------------------------------------------------------


def test_jsd_symmetric_zero_on_equal_bounded_by_ln2() -> None:
    from scipy.spatial.distance import jensenshannon

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 10, generator=g, dtype=torch.float64) * 4
    b = torch.randn(200, 10, generator=g, dtype=torch.float64) * 4
    p, q = a.softmax(-1), b.softmax(-1)
    jsd = js_divergence(p, q)
    torch.testing.assert_close(jsd, js_divergence(q, p), rtol=0, atol=1e-15)
    torch.testing.assert_close(js_divergence_logits(a, b), jsd)
    torch.testing.assert_close(js_divergence_logits(b, a), jsd)
    reference = torch.tensor([jensenshannon(x, y) ** 2 for x, y in zip(p.numpy(), q.numpy())],
                             dtype=torch.float64)
    torch.testing.assert_close(jsd, reference)
    assert (jsd > 0).all() and (jsd <= math.log(2)).all()
    torch.testing.assert_close(js_divergence(p, p), torch.zeros(200, dtype=torch.float64))
    torch.testing.assert_close(js_divergence_logits(a, a), torch.zeros(200, dtype=torch.float64))
    torch.testing.assert_close(js_divergence_logits(a, a + 5.0), torch.zeros(200, dtype=torch.float64))
    disjoint = js_divergence(torch.tensor([0.5, 0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.3, 0.7]))
    assert disjoint.item() == pytest.approx(math.log(2), abs=1e-7)
    far = js_divergence_logits(torch.tensor([[500.0, 0.0]], dtype=torch.float64),
                               torch.tensor([[0.0, 500.0]], dtype=torch.float64))
    assert far.item() == pytest.approx(math.log(2), abs=1e-7) and far.item() <= math.log(2)


# --- every registered loss: finite gradients on random inputs --------------------------------


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("seed", range(2))
def test_every_loss_has_finite_gradients(name: str, seed: int) -> None:
    from reidbench.config import ModelConfig
    from reidbench.engine.trainer import TrainState, _train_outputs
    from reidbench.models import build_model

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = build_model(ModelConfig(name="kprpe", depth=2, embed_dim=32, num_heads=2), (32, 16), 3)
    with torch.no_grad():  # relative tables start at zero: make every term non-trivial
        for p in model.backbone.kprpe.parameters():
            p.normal_(0, 0.1, generator=g)
    loss = build_loss(LossConfig(terms=(name,), weights=(1.0,), rp_topn=4), model.dim, 4)
    loss.check_model(model)
    state = TrainState(model, loss, torch.optim.SGD(model.parameters(), lr=0.0), None)  # type: ignore[arg-type]
    images = torch.randn(8, 3, 32, 16, generator=g)
    kps = torch.rand(8, 3, 2, generator=g)
    pids = torch.arange(4).repeat_interleave(2)
    total, terms = loss(_train_outputs(state, images, pids, kps))
    assert set(terms) == {name} and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in [*model.parameters(), *loss.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)
    assert any(gr.abs().sum() > 0 for gr in grads)


def test_bnneck_split_triplet_before_the_neck_id_losses_after() -> None:
    from reidbench.config import resolve_config

    g = torch.Generator().manual_seed(0)
    feats, neck, other = (torch.randn(8, 6, generator=g) for _ in range(3))
    pids = torch.arange(4).repeat_interleave(2)
    names = ("ce", "triplet", "arcface", "circle", "supcon")
    loss = build_loss(LossConfig(terms=names, weights=(1.0,) * 5), 6, 4)
    loss.eval()
    _, a = loss(TrainOutputs(feats, neck, pids))
    _, b = loss(TrainOutputs(feats, other, pids))  # another neck feature
    _, c = loss(TrainOutputs(other, neck, pids))  # another feature before the neck
    for name in ("triplet", "circle", "supcon"):
        assert a[name] == b[name] and a[name] != c[name]
    for name in ("ce", "arcface"):
        assert a[name] == c[name] and a[name] != b[name]
    sets = ["loss.terms=ce,triplet,jsd", "loss.weights=1,1,0.1", "loss.rp_layers=-1,0"]
    cfg = resolve_config(overrides=sets)
    assert cfg.loss.terms == ("ce", "triplet", "jsd") and cfg.loss.weights == (1.0, 1.0, 0.1)
    assert cfg.loss.rp_layers == (-1, 0)
