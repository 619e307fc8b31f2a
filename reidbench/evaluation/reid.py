"""Re-ID evaluation: extract query and gallery features, score, rank."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn

from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.errors import ConfigError
from reidbench.metrics.finite import check_finite
from reidbench.metrics.rank import RankResult, evaluate_ranking_features

if TYPE_CHECKING:
    from reidbench.retrieval.rerank import RerankParams

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def single_threaded(batches: Iterable[T]) -> Iterator[T]:
    """Yield the items of ``batches``, each fetched with one torch thread.

    Per-sample transforms and the collate are small tensor ops that torch splits across its
    threads once they pass its grain size (a 112x112 face does, a 128x64 crop does not); the
    OpenMP barriers then cost far more than the work: measured 24 ms instead of 0.2 ms per
    face image, and 1 s instead of 3 ms per 128-image collate, on 2 cores with one busy. The
    results are identical (element-wise ops and copies).
    """
    it = iter(batches)
    while True:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(threads)
        yield item


@torch.no_grad()
def extract_features(
    model: nn.Module, dataset: ImageDataset, batch_size: int, device: torch.device,
    desc: str = "features", flip: bool = False, flip_perm: tuple[int, ...] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> Features:
    """Run ``model`` in eval mode over ``dataset`` in order. With ``flip``, each feature is the
    sum of the image's and its mirror's (flip-test fusion); ``flip_perm`` swaps left/right
    keypoints of the mirror. ``on_batch`` is called after each batch (the engine's progress
    bar, ``engine.progress.ticks``).

    Non-finite features (a diverged model, a NaN input) raise ReidbenchError naming ``desc``,
    how many rows and the first row's image."""
    model.eval()
    loader = make_loader(dataset, batch_size)
    feats, pids, camids, records = [], [], [], []
    for batch in single_threaded(loader):
        images = batch["image"].to(device)
        keypoints = batch_keypoints(batch, device)
        out = model(images, keypoints)
        if flip:
            mirrored = mirror_keypoints(keypoints, flip_perm) if keypoints is not None else None
            out = out + model(torch.flip(images, dims=[3]), mirrored)
        feats.append(out.float().cpu())
        pids.append(batch["pid"])
        camids.append(batch["camid"])
        records.append(batch["index"])
        if on_batch is not None:
            on_batch()
    out = torch.cat(feats).numpy()
    record_index = torch.cat(records).numpy()
    check_finite(out, desc, lambda row: f"image {dataset.records[int(record_index[row])].path}")
    return Features(
        out, torch.cat(pids).numpy().astype(np.int64), torch.cat(camids).numpy().astype(np.int64),
    )


def evaluate_reid(
    query: Features, gallery: Features, metric: str = "cosine", max_rank: int = 50,
    verbose: bool = True, rerank: RerankParams | None = None,
) -> RankResult:
    """Standard re-ID protocol (same pid + same camera removed, junk ignored), scored chunk by
    chunk of queries: no (Nq, Ng) matrix is built. ``rerank``: rank by k-reciprocal re-ranked
    distances instead. ``verbose=False`` logs the timing at DEBUG (sweeps that rank many
    times)."""
    if metric not in ("cosine", "euclidean"):
        raise ConfigError(f"unknown eval.metric {metric!r}; expected cosine or euclidean")
    start = time.perf_counter()
    if rerank is not None:
        from reidbench.retrieval.rerank import evaluate_reranked  # loads FAISS

        result = evaluate_reranked(query.feats, gallery.feats, query.pids, gallery.pids,
                                   query.camids, gallery.camids, metric, rerank, max_rank)
    else:
        result = evaluate_ranking_features(
            query.feats, gallery.feats, query.pids, gallery.pids, query.camids, gallery.camids,
            metric=metric, max_rank=max_rank,
        )
    log.log(
        logging.INFO if verbose else logging.DEBUG,
        "ranked %d queries x %d gallery in %.2fs (%d without a valid match skipped)",
        len(query.pids), len(gallery.pids), time.perf_counter() - start, result.num_skipped,
    )
    return result
