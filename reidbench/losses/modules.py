"""Thin loss modules. Each reads what it needs from a ``TrainOutputs`` and returns a scalar.

A loss that owns parameters (the identity classifier) keeps them itself, so swapping the ID
loss for a margin head later swaps its parameters too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reidbench.config import LossConfig
from reidbench.errors import ConfigError
from reidbench.losses import functional as LF
from reidbench.models.heads import Classifier
from reidbench.registry import LOSSES


@dataclass
class TrainOutputs:
    feats: torch.Tensor  # (B, D) backbone feature, before the neck
    neck_feats: torch.Tensor  # (B, D) after the BN neck
    pids: torch.Tensor  # (B,) train labels 0..C-1


class IdentityLoss(nn.Module):
    """Linear classifier on the neck feature + label-smoothed cross-entropy."""

    def __init__(self, dim: int, num_classes: int, label_smoothing: float) -> None:
        super().__init__()
        self.classifier = Classifier(dim, num_classes)
        self.label_smoothing = label_smoothing

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.cross_entropy(self.classifier(out.neck_feats), out.pids, self.label_smoothing)


class TripletLoss(nn.Module):
    """Batch-hard triplet on the feature before the neck."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.batch_hard_triplet(out.feats, out.pids, self.margin)


@LOSSES.register("ce")
def _ce(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return IdentityLoss(dim, num_classes, cfg.label_smoothing)


@LOSSES.register("triplet")
def _triplet(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return TripletLoss(cfg.margin)


class CombinedLoss(nn.Module):
    """Weighted sum of named terms; returns the total and each term (unweighted)."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = weights

    def forward(self, out: TrainOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(out) for name, term in self.terms.items()}
        total = sum(self.weights[name] * v for name, v in values.items())
        assert isinstance(total, torch.Tensor)
        return total, values


def build_loss(cfg: LossConfig, dim: int, num_classes: int) -> CombinedLoss:
    if not cfg.terms:
        raise ConfigError("loss.terms is empty; expected e.g. ce,triplet")
    if len(cfg.weights) != len(cfg.terms):
        raise ConfigError(
            f"loss.weights has {len(cfg.weights)} values for {len(cfg.terms)} loss.terms "
            f"({','.join(cfg.terms)})"
        )
    terms = {name: LOSSES.get(name)(cfg, dim, num_classes) for name in cfg.terms}
    return CombinedLoss(terms, dict(zip(cfg.terms, cfg.weights)))
