"""Model zoo. Importing this package registers every model in MODELS."""

from __future__ import annotations

from torch import nn

from reidbench.config import ModelConfig
from reidbench.models import cnn, poster, vit  # noqa: F401  (register ViT variants, poster, CNNs)
from reidbench.models.heads import BNNeck, Classifier, EmbeddingModel
from reidbench.registry import MODELS

__all__ = ["BNNeck", "Classifier", "EmbeddingModel", "build_model"]


def build_model(
    cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None
) -> EmbeddingModel:
    """Build the registered backbone ``cfg.name`` wrapped with a BN neck."""
    backbone: nn.Module = MODELS.get(cfg.name)(cfg, img_size, num_keypoints)
    return EmbeddingModel(backbone, backbone.embed_dim)
