"""Thin loss modules. Each reads what it needs from a ``TrainOutputs`` and returns a scalar.

A loss that owns parameters (the identity classifier) keeps them itself, so swapping the ID
loss for a margin head later swaps its parameters too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import reidbench.losses.functional as LF
from reidbench.config import LossConfig
from reidbench.errors import ConfigError
from reidbench.models.heads import Classifier
from reidbench.registry import LOSSES, load_builtins

# (B, n) patch indices, layers or None -> (B, L, n, n) positional relations (``pair_relations``)
RelationFn = Callable[[torch.Tensor, tuple[int, ...] | None], torch.Tensor]


@dataclass
class TrainOutputs:
    feats: torch.Tensor  # (B, D) backbone feature, before the neck
    neck_feats: torch.Tensor  # (B, D) after the BN neck
    pids: torch.Tensor  # (B,) train labels 0..C-1
    tokens: torch.Tensor | None = None  # (B, 1 + N, D) final tokens, CLS first (terms with needs_tokens)
    relations: RelationFn | None = None  # the model's positional relations of this batch (same terms)
    num_prefix_tokens: int = 1  # tokens before the patches in ``tokens``


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


class CircleLoss(nn.Module):
    """Circle loss (pair-wise form) on the feature before the neck."""

    def __init__(self, margin: float, gamma: float) -> None:
        super().__init__()
        self.margin, self.gamma = margin, gamma

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.circle_loss(out.feats, out.pids, self.margin, self.gamma)


class SupConLoss(nn.Module):
    """Supervised contrastive loss on the feature before the neck."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"loss.supcon_temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.supcon_loss(out.feats, out.pids, self.temperature)


@LOSSES.register("ce")
def _ce(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return IdentityLoss(dim, num_classes, cfg.label_smoothing)


@LOSSES.register("triplet")
def _triplet(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return TripletLoss(cfg.margin)


@LOSSES.register("circle")
def _circle(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return CircleLoss(cfg.circle_margin, cfg.circle_gamma)


@LOSSES.register("supcon")
def _supcon(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return SupConLoss(cfg.supcon_temperature)


class CombinedLoss(nn.Module):
    """Weighted sum of named terms; returns the total and each term (unweighted).

    A term with ``needs_tokens = True`` reads ``TrainOutputs.tokens`` and ``relations``, which
    the trainer fills only when ``needs_tokens`` is True here; a term with a
    ``check_model(model)`` method is checked against the model before training (ConfigError).
    """

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = weights

    @property
    def needs_tokens(self) -> bool:
        return any(getattr(term, "needs_tokens", False) for term in self.terms.values())

    def diagnostics(self) -> dict[str, float]:
        """Non-loss statistics of the last forward pass from terms with a ``diagnostics()``
        method (e.g. the size of positional relations), keyed by name; recorded, never summed."""
        out: dict[str, float] = {}
        for term in self.terms.values():
            diagnostics = getattr(term, "diagnostics", None)
            if diagnostics is not None:
                out.update(diagnostics())
        return out

    def check_model(self, model: nn.Module) -> None:
        """Raise ConfigError when a term cannot train ``model`` (e.g. positional losses on a CNN)."""
        for term in self.terms.values():
            check = getattr(term, "check_model", None)
            if check is not None:
                check(model)

    def forward(self, out: TrainOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {name: term(out) for name, term in self.terms.items()}
        total = sum(self.weights[name] * v for name, v in values.items())
        assert isinstance(total, torch.Tensor)
        return total, values


def build_loss(cfg: LossConfig, dim: int, num_classes: int) -> CombinedLoss:
    """The weighted sum of the registered terms ``cfg.terms`` (``modules``: ce, triplet, circle,
    supcon; ``margins``: arcface, cosface, adaface; ``positional``: rp_triplet, jsd)."""
    load_builtins()
    if not cfg.terms:
        raise ConfigError("loss.terms is empty; expected e.g. ce,triplet")
    if len(cfg.weights) != len(cfg.terms):
        raise ConfigError(
            f"loss.weights has {len(cfg.weights)} values for {len(cfg.terms)} loss.terms "
            f"({','.join(cfg.terms)})"
        )
    if len(set(cfg.terms)) != len(cfg.terms):
        raise ConfigError(f"loss.terms names a term twice: {','.join(cfg.terms)}")
    terms = {name: LOSSES.get(name)(cfg, dim, num_classes) for name in cfg.terms}
    return CombinedLoss(terms, dict(zip(cfg.terms, cfg.weights)))
