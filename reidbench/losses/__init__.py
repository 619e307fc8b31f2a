"""Training objectives: the functional core (``functional``) and thin modules, each registered
in LOSSES by its own module: ce, triplet, circle, supcon (``modules``); arcface, cosface, adaface
(``margins``); rp_triplet, jsd (``positional``). ``build_loss`` combines them by name.
"""

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
