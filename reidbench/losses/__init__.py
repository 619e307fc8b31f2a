"""Training objectives. Importing this package registers every loss in LOSSES.

Names: ce, triplet, circle, supcon (``modules``); arcface, cosface, adaface (``margins``);
rp_triplet, jsd (``positional``).
"""

from reidbench.losses import margins, positional  # noqa: F401  (register margin and positional losses)
from reidbench.losses.functional import (
    adaface_logits,
    arcface_logits,
    batch_hard_triplet,
    circle_loss,
    cosface_logits,
    cross_entropy,
    js_divergence,
    js_divergence_logits,
    pairwise_euclidean,
    positional_jsd,
    relation_vectors,
    supcon_loss,
    top_patches,
)
from reidbench.losses.modules import CombinedLoss, TrainOutputs, build_loss

__all__ = [
    "CombinedLoss",
    "TrainOutputs",
    "adaface_logits",
    "arcface_logits",
    "batch_hard_triplet",
    "build_loss",
    "circle_loss",
    "cosface_logits",
    "cross_entropy",
    "js_divergence",
    "js_divergence_logits",
    "pairwise_euclidean",
    "positional_jsd",
    "relation_vectors",
    "supcon_loss",
    "top_patches",
]
