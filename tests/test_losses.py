"""Losses against brute-force definitions."""

from __future__ import annotations

import itertools

import pytest
import torch

from reidbench.config import LossConfig
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.losses import TrainOutputs, batch_hard_triplet, build_loss


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
