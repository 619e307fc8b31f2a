"""Face verification evaluation: extract features of every image once, score the pairs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reidbench.datasets.base import VerificationSet
from reidbench.evaluation.reid import Features
from reidbench.metrics.verification import verification_metrics


def pair_scores(features: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine similarity of each (i, j) pair of rows of ``features``, in chunks of pairs."""
    f = F.normalize(torch.from_numpy(features).float(), dim=1)
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        p = torch.from_numpy(pairs[start:start + chunk])
        out[start:start + len(p)] = (f[p[:, 0]] * f[p[:, 1]]).sum(1).double().numpy()
    return out


def evaluate_verification(vs: VerificationSet, features: Features) -> dict[str, object]:
    scores = pair_scores(features.feats, vs.pairs)
    return verification_metrics(scores, vs.labels, vs.folds)
