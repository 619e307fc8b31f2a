"""Cosine-margin identity heads of face recognition: CosFace, ArcFace and AdaFace.

Each head owns its class weights (like ``IdentityLoss`` owns its ``Classifier``): the cosine
between the L2-normalised neck feature and the L2-normalised weight of every class goes through
the margin function of ``functional`` and then plain cross-entropy (no label smoothing). They
replace ``ce`` as the ID loss after the BN neck (``loss.terms=arcface,triplet``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reidbench.losses.functional as LF
from reidbench.config import LossConfig
from reidbench.errors import ConfigError
from reidbench.losses.modules import TrainOutputs
from reidbench.registry import LOSSES


class MarginHead(nn.Module):
    """Cosine classifier + margin + cross-entropy on the neck feature.

    Args:
        dim: feature width D.
        num_classes: C training identities.
        margin: the head's margin m.
        scale: logit scale s.

    Parameter ``weight`` (C, D), normal(std 0.01) initialised; only its direction matters.
    """

    def __init__(self, dim: int, num_classes: int, margin: float, scale: float) -> None:
        super().__init__()
        if scale <= 0:
            raise ConfigError(f"loss.scale must be positive, got {scale}")
        self.margin, self.scale = margin, scale
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) features -> (B, C) cosines to every class weight."""
        return F.normalize(feats, dim=1) @ F.normalize(self.weight, dim=1).T

    def logits(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return F.cross_entropy(self.logits(out.neck_feats, out.pids), out.pids)

    def extra_repr(self) -> str:
        c, d = self.weight.shape
        return f"dim={d}, num_classes={c}, margin={self.margin}, scale={self.scale}"


class CosFaceHead(MarginHead):
    """CosFace: s * (cos theta_j - m [j = y])."""

    def logits(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return LF.cosface_logits(self.cosine(feats), labels, self.margin, self.scale)


class ArcFaceHead(MarginHead):
    """ArcFace: s * cos(theta_y + m) for the target, s * cos theta_j for the others."""

    def __init__(self, dim: int, num_classes: int, margin: float, scale: float) -> None:
        if not 0.0 <= margin < torch.pi / 2:
            raise ConfigError(f"loss.arc_margin must be in [0, pi/2) radians, got {margin}")
        super().__init__(dim, num_classes, margin, scale)

    def logits(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return LF.arcface_logits(self.cosine(feats), labels, self.margin, self.scale)


class AdaFaceHead(MarginHead):
    """AdaFace: the margin adapts to each sample's feature norm relative to running statistics.

    Args:
        dim, num_classes, margin, scale: as in ``MarginHead``.
        h: concentration of the normalised norm (``adaface_quality``).
        momentum: weight of the current batch in the exponential moving averages.

    Buffers ``norm_mean`` (initially 20) and ``norm_std`` (initially 100) hold the running mean
    and standard deviation of the feature norms; training updates them from each batch before
    the margin is computed, evaluation mode leaves them alone.
    """

    def __init__(
        self, dim: int, num_classes: int, margin: float, scale: float, h: float, momentum: float
    ) -> None:
        super().__init__(dim, num_classes, margin, scale)
        if not 0.0 < momentum <= 1.0:
            raise ConfigError(f"loss.ada_momentum must be in (0, 1], got {momentum}")
        self.h, self.momentum = h, momentum
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    def logits(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        norms = feats.detach().norm(dim=1).clamp(1e-3, 100.0)  # (B,)
        if self.training and len(norms) > 1:
            with torch.no_grad():
                self.norm_mean.lerp_(norms.mean(), self.momentum)
                self.norm_std.lerp_(norms.std(), self.momentum)
        quality = LF.adaface_quality(norms, self.norm_mean, self.norm_std, self.h)
        return LF.adaface_logits(self.cosine(feats), labels, quality, self.margin, self.scale)


@LOSSES.register("cosface")
def _cosface(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return CosFaceHead(dim, num_classes, cfg.cos_margin, cfg.scale)


@LOSSES.register("arcface")
def _arcface(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return ArcFaceHead(dim, num_classes, cfg.arc_margin, cfg.scale)


@LOSSES.register("adaface")
def _adaface(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return AdaFaceHead(dim, num_classes, cfg.ada_margin, cfg.scale, cfg.ada_h, cfg.ada_momentum)
