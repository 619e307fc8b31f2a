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

from reidbench.errors import ReidbenchError
from reidbench.metrics.finite import check_finite, safe_joint, safe_rows


@dataclass(frozen=True)
class RankResult:
    cmc: np.ndarray  # (max_rank,) fraction of valid queries with a match within rank r+1
    mAP: float  # mean average precision over valid queries
    mINP: float  # mean inverse negative penalty (Ye et al., 2021) over valid queries
    num_valid_queries: int
    num_skipped: int  # queries with no valid positive in the gallery
    per_query_ap: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict[str, object]:
        return {"mAP": self.mAP, "mINP": self.mINP,
                **_cmc_fields(self.cmc, self.num_valid_queries, self.num_skipped)}


def _cmc_fields(cmc: np.ndarray, valid: int, skipped: int) -> dict[str, object]:
    """The CMC and query-count fields shared by full and truncated results."""
    return {
        "rank1": float(cmc[0]),
        "rank5": float(cmc[min(4, len(cmc) - 1)]),
        "rank10": float(cmc[min(9, len(cmc) - 1)]),
        "cmc": [float(v) for v in cmc],
        "num_valid_queries": valid,
        "num_skipped_queries": skipped,
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
    features) or "euclidean" (L2 distance, smaller first).

    NaN/inf features raise ReidbenchError naming the rows; finite features of any magnitude
    rank correctly (``metrics.finite``: rows are rescaled by powers of two before a norm or a
    distance could overflow)."""
    q = torch.as_tensor(np.asarray(query) if not isinstance(query, torch.Tensor) else query)
    g = torch.as_tensor(np.asarray(gallery) if not isinstance(gallery, torch.Tensor) else gallery)
    check_finite(q, "query features")
    check_finite(g, "gallery features")
    if metric == "cosine":
        q, g = safe_rows(q), safe_rows(g)
    elif metric == "euclidean":
        q, g = safe_joint(q, g)
    if junk_pid is not None:  # junk is never ranked: leave it out before scoring
        keep = np.asarray(gallery_pids) != junk_pid
        if not keep.all():
            g, gallery_pids = g[torch.as_tensor(keep)], np.asarray(gallery_pids)[keep]
            gallery_camids = None if gallery_camids is None else np.asarray(gallery_camids)[keep]
            junk_pid = None
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
    *, max_rank: int = 50, junk_pid: int | None = -1, chunk_elements: int = 1 << 22,
) -> RankResult:
    """The core: ``row_scores(rows)`` gives the (len(rows), Ng) scores of a chunk of queries,
    higher first; chunks hold about ``chunk_elements`` scores.

    Per chunk, each query's valid positives (from a per-identity table of gallery indices, no
    sort of the gallery) are sorted by score, and each positive value p is preceded by its float
    predecessor p-. One ``searchsorted`` of every gallery score among these 2M bounds gives an
    even slot for a score strictly between two positives and an odd slot for a score equal to a
    positive; a per-row histogram of the slots gives each positive's rank among the valid items
    (a suffix sum), and the odd slots count exact ties. Rows where a non-positive ties a positive
    exactly are recomputed by direct comparison, so ties are broken by gallery index as
    documented. Gallery items of the query's identity seen by the same camera are taken back
    out of the histogram; junk columns are dropped before anything is counted.
    """
    qp, gp = torch.as_tensor(np.asarray(query_pids)), torch.as_tensor(np.asarray(gallery_pids))
    use_cams = query_camids is not None and gallery_camids is not None
    qc = torch.as_tensor(np.asarray(query_camids)) if use_cams else None
    gc = torch.as_tensor(np.asarray(gallery_camids)) if use_cams else None
    max_rank = min(max_rank, ng)
    keep: torch.Tensor | None = None  # original gallery index of each column, when junk is dropped
    if junk_pid is not None and bool((gp == junk_pid).any()):
        keep = torch.nonzero(gp != junk_pid).view(-1)
        gp, gc = gp[keep], gc[keep] if gc is not None else None
        inner = row_scores

        def row_scores(rows: slice) -> torch.Tensor:
            return inner(rows)[:, keep]
    table, q_group = _identity_table(qp, gp)

    first_hits = torch.full((nq,), -1, dtype=torch.long)  # 0-based rank of first positive
    ap = torch.zeros(nq, dtype=torch.float64)
    inp = torch.zeros(nq, dtype=torch.float64)
    valid_q = torch.zeros(nq, dtype=torch.bool)
    rows_per_chunk = max(1, chunk_elements // max(ng, 1))
    for start in range(0, nq, rows_per_chunk):
        sl = slice(start, min(nq, start + rows_per_chunk))
        chunk = row_scores(sl).contiguous()  # (C, Ng)
        _check_scores(chunk, sl.start, keep)
        ranks, npos, tied = _ranks_by_histogram(chunk, table, q_group[sl],
                                                qc[sl] if qc is not None else None, gc)
        if tied.any():  # exact ties with a positive: direct comparison for those rows
            rows = torch.nonzero(tied).view(-1)
            same_pid = qp[sl][rows, None] == gp[None, :]
            removed = (same_pid & (qc[sl][rows, None] == gc[None, :]) if qc is not None and gc is not None
                       else torch.zeros_like(same_pid))
            exact, _ = _ranks_by_comparison(chunk[rows], same_pid & ~removed, ~removed)
            width = max(ranks.shape[1], exact.shape[1])
            ranks = _pad_to(ranks, width)
            ranks[rows] = _pad_to(exact, width)
        rows_idx = torch.arange(sl.start, sl.stop)
        has = npos > 0
        if not has.any():
            continue
        pad = torch.arange(ranks.shape[1])[None, :] >= npos[:, None]
        hits = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64)[None, :]
        prec = torch.where(pad, 0.0, hits / (ranks.to(torch.float64) + 1))
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


_PAD = torch.iinfo(torch.long).max


def _check_scores(chunk: torch.Tensor, start: int, columns: torch.Tensor | None) -> None:
    """Refuse NaN/inf scores: every comparison with NaN is false and ranks built on them are
    meaningless (they gave mAP above 1)."""
    bad = ~torch.isfinite(chunk)
    if not bool(bad.any()):
        return
    rows = bad.any(1)
    row, col = (int(i) for i in torch.nonzero(bad)[0])
    gallery = int(columns[col]) if columns is not None else col
    raise ReidbenchError(
        f"scores: {int(rows.sum())} of the queries {start}..{start + len(chunk) - 1} have NaN/inf "
        f"scores (first: query {start + row}, gallery {gallery}, score {float(chunk[row, col])}); "
        "the features or the scoring are not finite")


def _pad_to(ranks: torch.Tensor, width: int) -> torch.Tensor:
    if ranks.shape[1] >= width:
        return ranks
    return torch.cat([ranks, ranks.new_full((ranks.shape[0], width - ranks.shape[1]), _PAD)], 1)


def _identity_table(qp: torch.Tensor, gp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(identities, max images) gallery indices per identity, padded with -1, and each query's
    row in it (-1 when its identity is not in the gallery)."""
    order = torch.argsort(gp, stable=True)
    ids, counts = torch.unique_consecutive(gp[order], return_counts=True)
    table = torch.full((len(ids), int(counts.max()) if len(ids) else 0), -1, dtype=torch.long)
    group = torch.repeat_interleave(torch.arange(len(ids)), counts)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    table[group, torch.arange(len(gp)) - starts] = order
    where = torch.searchsorted(ids, qp).clamp(max=max(len(ids) - 1, 0))
    q_group = torch.where(ids[where] == qp, where, -1) if len(ids) else torch.full_like(qp, -1)
    return table, q_group


def _ranks_by_histogram(
    chunk: torch.Tensor, table: torch.Tensor, q_group: torch.Tensor,
    qc: torch.Tensor | None, gc: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C, M) 0-based ranks of each query's valid positives among its valid gallery items,
    ascending and padded with a large value; (C,) positives per query; (C,) rows with ties."""
    c = chunk.shape[0]
    # (C, M) gallery indices of each query's identity; M: the chunk's largest identity (the
    # table is as wide as the largest gallery identity, often a distractor group)
    known = q_group[q_group >= 0]
    m = int((table[known] >= 0).sum(1).max()) if len(known) else 0
    cand = table[q_group.clamp(min=0), :m]
    member = (cand >= 0) & (q_group[:, None] >= 0)
    idx = cand.clamp(min=0)
    same_cam = gc[idx] == qc[:, None] if qc is not None and gc is not None else None
    ok = member & ~same_cam if same_cam is not None else member  # valid positives
    npos = ok.sum(1)
    vals = torch.gather(chunk, 1, idx)
    asc = vals.masked_fill(~ok, float("inf")).sort(1).values  # (C, M), padding last
    # bounds p- < p for every positive p: a score lands in slot 2k when k positives lie below
    # it and it equals none, in slot 2k + 1 when it equals the k-th positive
    bounds = torch.cat([torch.nextafter(asc, asc.new_tensor(float("-inf"))), asc], 1).sort(1).values
    width = 2 * m + 1
    offsets = (torch.arange(c, dtype=torch.int32) * width)[:, None]
    slots = torch.searchsorted(bounds, chunk, out_int32=True).add_(offsets)  # (C, Ng)
    hist = torch.bincount(slots.view(-1), minlength=c * width).view(c, width)
    if same_cam is not None:  # same identity, same camera: not valid items, take them back out
        out = member & same_cam
        if out.any():
            back = torch.searchsorted(bounds, vals, out_int32=True).add_(offsets)[out]
            hist -= torch.bincount(back, minlength=c * width).view(c, width)
    # exact ties: a valid non-positive in an odd slot (each positive sits in its own), or two
    # equal positives
    tied = hist[:, 1::2].sum(1) != npos
    tied |= ((asc[:, 1:] == asc[:, :-1]) & torch.isfinite(asc[:, 1:])).any(1)
    above = hist.flip(1).cumsum(1).flip(1)  # above[:, i]: items in slots >= i
    # the r-th best positive is the (npos-1-r)-th ascending; items strictly above it fill
    # slots >= 2 (npos - r)
    r = torch.arange(m)[None, :]
    ranks = torch.gather(above, 1, (2 * (npos[:, None] - r)).clamp(0, width - 1))
    ranks = ranks.masked_fill(r >= npos[:, None], _PAD)
    return ranks, npos, tied


def _ranks_by_comparison(
    chunk: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct comparison of every positive with every item: ties broken by gallery index."""
    npos = positive.sum(1)
    max_pos = max(1, int(npos.max().item()) if len(npos) else 1)
    order = torch.argsort((~positive).to(torch.int8), dim=1, stable=True)[:, :max_pos]
    pad = torch.arange(max_pos)[None, :] >= npos[:, None]
    ps = torch.gather(chunk, 1, order)[:, :, None]  # (C, P, 1)
    index = torch.arange(chunk.shape[1])[None, None, :]
    ahead = (chunk[:, None, :] > ps) | ((chunk[:, None, :] == ps) & (index < order[:, :, None]))
    ranks = (ahead & valid[:, None, :]).sum(2).masked_fill(pad, _PAD)
    return torch.sort(ranks, dim=1).values, npos


@dataclass(frozen=True)
class TopKResult:
    """Metrics from top-k retrieval lists, truncated at k.

    CMC is exact up to the ranks the lists cover. mAP@k counts every positive ranked below k as
    missed (AP = sum of precision at the hits in the list / all valid positives), so it is a
    lower bound of the full mAP and equals it when every positive is in the list. mINP needs
    the last positive and is not reported.
    """

    k: int
    cmc: np.ndarray  # (k,) over valid queries
    mAP_at_k: float
    num_valid_queries: int
    num_skipped: int
    complete_fraction: float  # valid queries whose every positive was within the list

    def as_dict(self) -> dict[str, object]:
        return {"truncated_at_k": self.k, "mAP_at_k": self.mAP_at_k,
                **_cmc_fields(self.cmc, self.num_valid_queries, self.num_skipped),
                "queries_with_all_positives_in_top_k": self.complete_fraction}


def evaluate_topk(
    ids: np.ndarray, query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None,
    *, junk_pid: int | None = -1, k: int | None = None,
) -> TopKResult:
    """Truncated metrics from (Nq, L) retrieval lists (gallery ids best first, -1 = none) under
    the standard protocol: same pid + same camera and junk are removed from each list, which is
    then cut to its first ``k`` valid items (default: L); a query with no valid positive in the
    whole gallery is skipped.

    The metrics are exact up to rank ``k`` only if every list holds at least ``k`` valid items
    (or all of them): lists of exactly ``k`` lose a slot to each removed item they contain, so
    search wider (``retrieval.topk.evaluate_index_topk`` does)."""
    qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
    use_cams = query_camids is not None and gallery_camids is not None
    nq, width = ids.shape
    k = width if k is None else k
    junk = gp == junk_pid if junk_pid is not None else np.zeros(len(gp), bool)
    g_ids, g_counts = np.unique(gp[~junk], return_counts=True)
    cmc_counts = np.zeros(k)
    aps, complete, valid = [], 0, 0
    for i in range(nq):
        total = int(g_counts[np.searchsorted(g_ids, qp[i])]) if qp[i] in g_ids else 0
        if use_cams:
            total -= int(((gp == qp[i]) & (np.asarray(gallery_camids) == query_camids[i])).sum())
        if total <= 0:
            continue
        valid += 1
        row = ids[i][ids[i] >= 0]
        keep = ~junk[row]
        if use_cams:
            keep &= ~((gp[row] == qp[i]) & (np.asarray(gallery_camids)[row] == query_camids[i]))
        hits = np.flatnonzero(gp[row[keep][:k]] == qp[i])
        if len(hits):
            cmc_counts[hits[0]:] += 1
        aps.append(float(np.sum((np.arange(len(hits)) + 1) / (hits + 1)) / total))
        complete += len(hits) == total
    cmc = cmc_counts / max(valid, 1)
    return TopKResult(k, cmc, float(np.mean(aps)) if aps else 0.0, valid, nq - valid,
                      complete / max(valid, 1))
