"""CMC, mAP and mINP under the standard re-ID protocol, computed from positive ranks.

Protocol (as torchreid's ``eval_market1501``): for each query, gallery items with the same pid
*and* the same camera are removed; gallery items with a junk pid (-1 by default) are ignored;
a query with no remaining positive is skipped and counted in ``num_skipped``. Ties in score are
broken by gallery index: of two equal scores, the lower gallery index ranks first.

Nothing of size (Nq x Ng) integer is allocated: for each chunk of queries we count, for every
positive, how many valid gallery items rank ahead of it. CMC, AP and INP follow from those ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class RankResult:
    cmc: np.ndarray  # (max_rank,) fraction of valid queries with a match within rank r+1
    mAP: float  # mean average precision over valid queries
    mINP: float  # mean inverse negative penalty (Ye et al., 2021) over valid queries
    num_valid_queries: int
    num_skipped: int  # queries with no valid positive in the gallery
    per_query_ap: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict[str, object]:
        return {
            "mAP": self.mAP,
            "mINP": self.mINP,
            "rank1": float(self.cmc[0]),
            "rank5": float(self.cmc[min(4, len(self.cmc) - 1)]),
            "rank10": float(self.cmc[min(9, len(self.cmc) - 1)]),
            "cmc": [float(v) for v in self.cmc],
            "num_valid_queries": self.num_valid_queries,
            "num_skipped_queries": self.num_skipped,
        }


def evaluate_ranking(
    scores: np.ndarray | torch.Tensor,
    query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None,
    *, higher_is_better: bool, max_rank: int = 50, junk_pid: int | None = -1,
    chunk_elements: int = 1 << 24,
) -> RankResult:
    """Rank metrics from a (Nq, Ng) score matrix.

    Args:
        scores: similarities (``higher_is_better=True``) or distances (False).
        query_pids, gallery_pids: identity labels.
        query_camids, gallery_camids: camera labels; None for both disables the same-camera
            filter (face identification).
        higher_is_better: the score direction; there is no default on purpose.
        max_rank: CMC length; clipped to the gallery size.
        junk_pid: gallery pid ignored entirely, or None.
        chunk_elements: bound on the elements of each temporary tensor.
    """
    s = torch.as_tensor(np.asarray(scores) if not isinstance(scores, torch.Tensor) else scores)
    s = s.to(torch.float64) if s.dtype == torch.float64 else s.float()
    sign = 1.0 if higher_is_better else -1.0
    return rank_from_scores(
        lambda rows: s[rows] * sign, s.shape[0], s.shape[1], query_pids, gallery_pids,
        query_camids, gallery_camids, max_rank=max_rank, junk_pid=junk_pid,
        chunk_elements=chunk_elements,
    )


def evaluate_ranking_features(
    query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor,
    query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None,
    *, metric: str, max_rank: int = 50, junk_pid: int | None = -1,
    chunk_elements: int = 1 << 24,
) -> RankResult:
    """Rank metrics straight from (Nq, D) and (Ng, D) features, scored chunk by chunk of
    queries, so no (Nq, Ng) matrix exists. ``metric`` is "cosine" (similarity of L2-normalised
    features) or "euclidean" (L2 distance, smaller first)."""
    q = torch.as_tensor(np.asarray(query) if not isinstance(query, torch.Tensor) else query).float()
    g = torch.as_tensor(np.asarray(gallery) if not isinstance(gallery, torch.Tensor) else gallery).float()
    if metric == "cosine":
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
        gt = g.T.contiguous()

        def scores(rows: slice) -> torch.Tensor:
            return q[rows] @ gt
    elif metric == "euclidean":
        def scores(rows: slice) -> torch.Tensor:
            return -torch.cdist(q[rows], g)
    else:
        raise ValueError(f"unknown metric {metric!r}; expected cosine or euclidean")
    return rank_from_scores(scores, len(q), len(g), query_pids, gallery_pids, query_camids,
                            gallery_camids, max_rank=max_rank, junk_pid=junk_pid,
                            chunk_elements=chunk_elements)


def rank_from_scores(
    row_scores: Callable[[slice], torch.Tensor], nq: int, ng: int,
    query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None,
    *, max_rank: int = 50, junk_pid: int | None = -1, chunk_elements: int = 1 << 24,
) -> RankResult:
    """The core: ``row_scores(rows)`` gives the (len(rows), Ng) scores of a chunk of queries,
    higher first. Chunks are sized so that (rows, positives, Ng) stays under chunk_elements."""
    qp, gp = torch.as_tensor(np.asarray(query_pids)), torch.as_tensor(np.asarray(gallery_pids))
    use_cams = query_camids is not None and gallery_camids is not None
    if use_cams:
        qc = torch.as_tensor(np.asarray(query_camids))
        gc = torch.as_tensor(np.asarray(gallery_camids))
    max_rank = min(max_rank, ng)
    gallery_index = torch.arange(ng)
    junk = gp == junk_pid if junk_pid is not None else torch.zeros(ng, dtype=torch.bool)

    first_hits = torch.full((nq,), -1, dtype=torch.long)  # 0-based rank of first positive
    ap = torch.zeros(nq, dtype=torch.float64)
    inp = torch.zeros(nq, dtype=torch.float64)
    valid_q = torch.zeros(nq, dtype=torch.bool)

    # upper bound on each query's positives: the gallery size of its pid
    g_ids, g_counts = np.unique(gp.numpy(), return_counts=True)
    where = np.clip(np.searchsorted(g_ids, qp.numpy()), 0, len(g_ids) - 1)
    pos_bound = np.where(g_ids[where] == qp.numpy(), g_counts[where], 0)

    start = 0
    while start < nq:
        # grow the chunk while (rows, max positives, Ng) stays under chunk_elements
        stop, widest = start + 1, max(1, int(pos_bound[start]))
        while stop < nq and (stop - start + 1) * max(widest, int(pos_bound[stop])) * ng <= chunk_elements:
            widest = max(widest, int(pos_bound[stop]))
            stop += 1
        sl = slice(start, stop)
        start = stop
        chunk = row_scores(sl)  # (C, Ng)
        same_pid = qp[sl, None] == gp[None, :]  # (C, Ng)
        removed = junk[None, :].expand_as(same_pid).clone()
        if use_cams:
            removed |= same_pid & (qc[sl, None] == gc[None, :])
        valid = ~removed
        positive = same_pid & valid
        npos = positive.sum(1)  # (C,)
        max_pos = int(npos.max().item()) if len(npos) else 0
        if max_pos == 0:
            continue
        # gather each query's positives (padded): their scores and gallery indices
        order = torch.argsort((~positive).to(torch.int8), dim=1, stable=True)[:, :max_pos]
        pad = torch.arange(max_pos)[None, :] >= npos[:, None]  # (C, P)
        ps = torch.gather(chunk, 1, order)  # (C, P)
        chunk_scores = chunk[:, None, :]  # (C, 1, Ng)
        ahead = (chunk_scores > ps[:, :, None]) | (
            (chunk_scores == ps[:, :, None]) & (gallery_index[None, None, :] < order[:, :, None])
        )
        ranks = (ahead & valid[:, None, :]).sum(2)  # (C, P) 0-based rank among valid items
        ranks = ranks.masked_fill(pad, torch.iinfo(torch.long).max)
        ranks, _ = torch.sort(ranks, dim=1)
        has = npos > 0
        hits = torch.arange(1, max_pos + 1, dtype=torch.float64)[None, :]
        prec = torch.where(pad, 0.0, hits / (ranks.to(torch.float64) + 1))
        rows_idx = torch.arange(sl.start, sl.stop)
        ap[rows_idx] = torch.where(has, prec.sum(1) / npos.clamp(min=1), 0.0)
        last = torch.gather(ranks, 1, (npos - 1).clamp(min=0)[:, None])[:, 0]
        inp[rows_idx] = torch.where(has, npos / (last.to(torch.float64) + 1), 0.0)
        first_hits[rows_idx] = torch.where(has, ranks[:, 0], -1)
        valid_q[rows_idx] = has

    num_valid = int(valid_q.sum().item())
    if num_valid == 0:
        cmc = np.zeros(max_rank)
        return RankResult(cmc, 0.0, 0.0, 0, nq, np.zeros(0))
    hits_at = first_hits[valid_q]
    counts = torch.bincount(hits_at[hits_at < max_rank], minlength=max_rank)
    cmc = (counts.cumsum(0).to(torch.float64) / num_valid).numpy()
    return RankResult(
        cmc=cmc,
        mAP=float(ap[valid_q].mean()),
        mINP=float(inp[valid_q].mean()),
        num_valid_queries=num_valid,
        num_skipped=nq - num_valid,
        per_query_ap=ap[valid_q].numpy(),
    )
