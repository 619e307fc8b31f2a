"""Face verification evaluation: extract features of every image once, score the pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reidbench.datasets.base import VerificationSet
from reidbench.evaluation.reid import Features
from reidbench.metrics.finite import check_finite, safe_rows
from reidbench.metrics.verification import verification_metrics


def pair_scores(features: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine similarity of each (i, j) pair of rows of ``features``, in chunks of pairs.
    NaN/inf features raise ReidbenchError; rows of extreme magnitude are rescaled before the
    norm (``metrics.finite.safe_rows``), so finite features always give finite scores."""
    check_finite(features, "pair image features")
    f = F.normalize(safe_rows(features), dim=1)
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        p = torch.from_numpy(pairs[start:start + chunk])
        out[start:start + len(p)] = (f[p[:, 0]] * f[p[:, 1]]).sum(1).double().numpy()
    return out


def evaluate_verification(vs: VerificationSet, features: Features) -> dict[str, object]:
    scores = pair_scores(features.feats, vs.pairs)
    return verification_metrics(scores, vs.labels, vs.folds)


def tar_rows(metrics: dict[str, Any]) -> list[tuple[str, float | None]]:
    """Display rows of both TAR@FAR conventions: ``TAR@FAR<=x`` (strict: highest TPR with
    FPR <= x, ``tar_at_far``) and ``TAR@FAR~x (insightface)`` (the ROC point whose FPR is
    nearest x, ``tar_at_far_nearest``)."""
    rows: list[tuple[str, float | None]] = [
        (f"TAR@FAR<={far}", tar) for far, tar in (metrics.get("tar_at_far") or {}).items()]
    rows += [(f"TAR@FAR~{far} (insightface)", tar)
             for far, tar in (metrics.get("tar_at_far_nearest") or {}).items()]
    return rows
