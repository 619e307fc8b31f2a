"""Training objectives. Importing this package registers every loss in LOSSES."""

from reidbench.losses.functional import batch_hard_triplet, cross_entropy, pairwise_euclidean
from reidbench.losses.modules import CombinedLoss, TrainOutputs, build_loss

__all__ = [
    "CombinedLoss",
    "TrainOutputs",
    "batch_hard_triplet",
    "build_loss",
    "cross_entropy",
    "pairwise_euclidean",
]
