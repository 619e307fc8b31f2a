"""Re-ID evaluation: extract query and gallery features, score, rank."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.errors import ConfigError
from reidbench.metrics.rank import RankResult, evaluate_ranking_features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    feats: np.ndarray  # (N, D) float32
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64


def mirror_keypoints(keypoints: torch.Tensor, flip_perm: tuple[int, ...] | None) -> torch.Tensor:
    """(B, K, 2) keypoints of the horizontally mirrored image: x -> 1 - x, left/right swapped."""
    out = keypoints.clone()
    out[..., 0] = 1.0 - out[..., 0]
    return out[:, list(flip_perm)] if flip_perm is not None else out


@torch.no_grad()
def extract_features(
    model: nn.Module, dataset: ImageDataset, batch_size: int, device: torch.device,
    desc: str = "features", progress: bool = True, flip: bool = False,
    flip_perm: tuple[int, ...] | None = None,
) -> Features:
    """Run ``model`` in eval mode over ``dataset`` in order. With ``flip``, each feature is the
    sum of the image's and its mirror's (flip-test fusion); ``flip_perm`` swaps left/right
    keypoints of the mirror."""
    model.eval()
    loader = make_loader(dataset, batch_size)
    feats, pids, camids = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = batch["image"].to(device)
        keypoints = batch_keypoints(batch, device)
        out = model(images, keypoints)
        if flip:
            mirrored = mirror_keypoints(keypoints, flip_perm) if keypoints is not None else None
            out = out + model(torch.flip(images, dims=[3]), mirrored)
        feats.append(out.float().cpu())
        pids.append(batch["pid"])
        camids.append(batch["camid"])
    return Features(
        torch.cat(feats).numpy(), torch.cat(pids).numpy().astype(np.int64),
        torch.cat(camids).numpy().astype(np.int64),
    )


def evaluate_reid(
    query: Features, gallery: Features, metric: str = "cosine", max_rank: int = 50
) -> RankResult:
    """Standard re-ID protocol (same pid + same camera removed, junk ignored), scored chunk by
    chunk of queries: no (Nq, Ng) matrix is built."""
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown eval.metric {metric!r}; expected cosine or euclidean")
    start = time.perf_counter()
    result = evaluate_ranking_features(
        query.feats, gallery.feats, query.pids, gallery.pids, query.camids, gallery.camids,
        metric=metric, max_rank=max_rank,
    )
    log.info(
        "ranked %d queries x %d gallery in %.2fs (%d without a valid match skipped)",
        len(query.pids), len(gallery.pids), time.perf_counter() - start, result.num_skipped,
    )
    return result
