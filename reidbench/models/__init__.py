"""Model zoo: ``build_model`` builds a registered backbone (``vit``: the ViT variants, ``poster``,
``cnn``: torchreid baselines; each registers itself in MODELS) and wraps it with a BN neck."""

from __future__ import annotations

from torch import nn

from reidbench.config import ModelConfig
from reidbench.models.heads import BNNeck, Classifier, EmbeddingModel
from reidbench.registry import MODELS, load_builtins

__all__ = ["BNNeck", "Classifier", "EmbeddingModel", "build_model"]


def build_model(
    cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None
) -> EmbeddingModel:
    """Build the registered backbone ``cfg.name`` wrapped with a BN neck."""
    load_builtins()
    backbone: nn.Module = MODELS.get(cfg.name)(cfg, img_size, num_keypoints)
    return EmbeddingModel(backbone, backbone.embed_dim)
