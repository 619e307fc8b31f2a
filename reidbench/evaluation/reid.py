"""Re-ID evaluation: extract query and gallery features, score, rank."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.errors import ConfigError
from reidbench.metrics.rank import RankResult, evaluate_ranking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Features:
    feats: np.ndarray  # (N, D) float32
    pids: np.ndarray  # (N,) int64
    camids: np.ndarray  # (N,) int64


@torch.no_grad()
def extract_features(
    model: nn.Module, dataset: ImageDataset, batch_size: int, device: torch.device,
    desc: str = "features", progress: bool = True,
) -> Features:
    """Run ``model`` in eval mode over ``dataset`` in order."""
    model.eval()
    loader = make_loader(dataset, batch_size)
    feats, pids, camids = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        images = batch["image"].to(device)
        out = model(images, batch_keypoints(batch, device))
        feats.append(out.float().cpu())
        pids.append(batch["pid"])
        camids.append(batch["camid"])
    return Features(
        torch.cat(feats).numpy(), torch.cat(pids).numpy().astype(np.int64),
        torch.cat(camids).numpy().astype(np.int64),
    )


def score_matrix(query: np.ndarray, gallery: np.ndarray, metric: str) -> tuple[torch.Tensor, bool]:
    """(Nq, Ng) scores and whether higher is better: cosine similarity or Euclidean distance."""
    q, g = torch.from_numpy(query), torch.from_numpy(gallery)
    if metric == "cosine":
        return F.normalize(q, dim=1) @ F.normalize(g, dim=1).T, True
    if metric == "euclidean":
        return torch.cdist(q, g), False
    raise ConfigError(f"unknown eval.metric {metric!r}; expected cosine or euclidean")


def evaluate_reid(
    query: Features, gallery: Features, metric: str = "cosine", max_rank: int = 50
) -> RankResult:
    """Standard re-ID protocol (same pid + same camera removed, junk ignored)."""
    start = time.perf_counter()
    scores, higher = score_matrix(query.feats, gallery.feats, metric)
    result = evaluate_ranking(
        scores, query.pids, gallery.pids, query.camids, gallery.camids,
        higher_is_better=higher, max_rank=max_rank,
    )
    log.info(
        "ranked %d queries x %d gallery in %.2fs (%d without a valid match skipped)",
        len(query.pids), len(gallery.pids), time.perf_counter() - start, result.num_skipped,
    )
    return result
