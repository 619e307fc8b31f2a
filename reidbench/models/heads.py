"""Training heads that sit outside the backbone, and the embedding model used for evaluation."""

from __future__ import annotations

import torch
from torch import nn

from reidbench.errors import ConfigError


class BNNeck(nn.Module):
    """Batch-norm neck (Luo et al., "Bag of Tricks", 2019): BN without shift before the classifier.

    The triplet loss sees the feature before the BN, the ID loss the logits after it, and
    evaluation uses the normalised feature after it.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.bn(feats)


class EmbeddingModel(nn.Module):
    """Backbone + neck with the model contract: ``model(images, keypoints=None) -> (B, D)``."""

    def __init__(self, backbone: nn.Module, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = BNNeck(dim)
        self.dim = dim

    def forward_train(
        self, images: torch.Tensor, keypoints: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature before the neck, feature after it), both (B, D)."""
        feats = self.backbone(images, keypoints)
        return feats, self.neck(feats)

    def forward_train_tokens(
        self, images: torch.Tensor, keypoints: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward_train`` plus the backbone's final tokens (B, 1 + N, D), CLS first, from one
        pass; for backbones with ``forward_tokens`` (the ViTs), else ConfigError."""
        forward_tokens = getattr(self.backbone, "forward_tokens", None)
        if forward_tokens is None:
            raise ConfigError(f"{type(self.backbone).__name__} has no patch tokens (forward_tokens); "
                              "losses on tokens need a ViT backbone")
        tokens = forward_tokens(images, keypoints)  # (B, 1 + N, D)
        feats = tokens[:, 0]
        return feats, self.neck(feats), tokens

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        return self.neck(self.backbone(images, keypoints))


class Classifier(nn.Module):
    """Linear identity classifier without bias, std-0.001 init (as in BoT re-ID baselines)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)
