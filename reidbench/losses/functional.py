"""Loss functions as pure tensor functions; the modules in this package wrap them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) Euclidean distances, with a floor so sqrt has a gradient."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(
    feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017) on (B, D) features.

    For each anchor: its farthest positive and nearest negative in the batch.
    ``margin > 0``: mean(relu(d_ap - d_an + margin)); ``margin == 0``: the soft-margin form
    mean(softplus(d_ap - d_an)). Anchors without a positive or a negative are left out.
    """
    dist = pairwise_euclidean(feats, feats)  # (B, B)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=feats.device)
    pos_mask, neg_mask = same & ~eye, ~same
    usable = pos_mask.any(1) & neg_mask.any(1)
    if not usable.any():
        return feats.sum() * 0.0
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).amax(1)[usable]
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(1)[usable]
    if margin > 0:
        return F.relu(d_ap - d_an + margin).mean()
    return F.softplus(d_ap - d_an).mean()


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy with label smoothing (Szegedy et al., 2016)."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
