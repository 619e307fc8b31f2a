"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse, from FAISS neighbour lists.

Definition (that of the authors' reference code, which torchreid's ``re_ranking`` follows), on
all N = Nq + Ng items with base distance d (cosine: 1 - cos; euclidean: L2):

- D(i, j) = d(i, j)^2 / max_k d(i, k)^2, and N(i, k) the k nearest items of i (itself first);
- R(i): the members j of N(i, k1 + 1) with i in N(j, k1 + 1) (k-reciprocal neighbours);
  R_half(c) likewise with round(k1 / 2) + 1 (numpy's rounding);
- expansion: R*(i) = R(i) united with every R_half(c), c in R(i), that shares more than 2/3 of
  its members with R(i);
- V(i, j) = exp(-D(i, j)) / sum over R*(i) for j in R*(i), else 0; local query expansion
  (k2 > 1) replaces row i by the mean of the rows of N(i, k2);
- Jaccard distance J(i, j) = 1 - m / (2 - m), m = sum over c of min(V(i, c), V(j, c));
- final distance (query i, gallery j) = (1 - lambda) J(i, j) + lambda D(i, j).

The reference builds dense (N, N) matrices (gigabytes at Market-1501 scale) and loops in
Python. Here the neighbour lists come from a FAISS index, V is a sparse matrix with a few dozen
entries per row, the row maxima and the final (query, gallery) distances are computed chunk by
chunk from the features, and the Jaccard numerators come from the sparse column lists, so
memory stays O(N k) plus one chunk. Ties in the neighbour lists follow FAISS's order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from reidbench.errors import ConfigError
from reidbench.metrics.finite import check_finite, safe_joint, safe_rows
from reidbench.metrics.rank import RankResult, rank_from_scores
from reidbench.retrieval.index import build_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankParams:
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ConfigError(f"re-ranking needs k1 >= 1 and k2 >= 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ConfigError(f"re-ranking lambda must be in [0, 1], got {self.lambda_value}")


class _SquaredDistance:
    """d(i, j)^2 between rows of the stacked features, in float32, chunk by chunk."""

    def __init__(self, x: torch.Tensor, metric: str) -> None:
        if metric not in ("cosine", "euclidean"):
            raise ConfigError(f"unknown metric {metric!r}; expected cosine or euclidean")
        self.metric = metric
        self.x = torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x
        self.sq = (self.x * self.x).sum(1)

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        """(rows, cols) d^2, computed in place on the product's buffer."""
        if self.metric == "cosine":  # (1 - x.y)^2
            return (self.x[rows] @ self.x[cols].T).neg_().add_(1.0).square_()
        d = torch.addmm(self.sq[cols][None, :], self.x[rows], self.x[cols].T, alpha=-2.0)
        return d.add_(self.sq[rows][:, None]).clamp_(min=0.0)

    def pairs(self, rows: np.ndarray, cols: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
        """d^2 for the pairs (rows[e], cols[e])."""
        out = np.empty(len(rows), dtype=np.float32)
        for s in range(0, len(rows), chunk):
            r = torch.as_tensor(rows[s:s + chunk])
            c = torch.as_tensor(cols[s:s + chunk])
            dots = torch.einsum("ed,ed->e", self.x[r], self.x[c])
            if self.metric == "cosine":
                d = dots.neg_().add_(1.0).square_()
            else:
                d = (self.sq[r] + self.sq[c]).sub_(dots, alpha=2.0).clamp_(min=0.0)
            out[s:s + chunk] = d.numpy()
        return out

    def row_max(self, chunk_elements: int = 1 << 24) -> torch.Tensor:
        """max over all items of d(i, k)^2: one reduction over each block of the product."""
        n = len(self.x)
        step = max(1, chunk_elements // n)
        out = torch.empty(n)
        for s in range(0, n, step):
            rows = slice(s, min(n, s + step))
            if self.metric == "cosine":  # 1 - x.y >= 0, largest where x.y is smallest
                out[rows] = (1.0 - (self.x[rows] @ self.x.T).amin(1)).square_()
            else:
                d = torch.addmm(self.sq[None, :], self.x[rows], self.x.T, alpha=-2.0).amax(1)
                out[rows] = d.add_(self.sq[rows]).clamp_(min=0.0)
        return out


def _reciprocal(nn: np.ndarray) -> np.ndarray:
    """(N, K) mask: nn[i, a] has i among its own K neighbours."""
    n = len(nn)
    out = np.empty(nn.shape, dtype=bool)
    step = max(1, (1 << 23) // max(nn.shape[1] ** 2, 1))
    for s in range(0, n, step):
        block = nn[s:s + step]
        out[s:s + step] = (nn[block] == np.arange(s, s + len(block))[:, None, None]).any(2)
    return out


def _expansion_sets(nn: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """COO (row, col) of R*(i) for every item, from the (N, k1 + 1) neighbour lists."""
    n, k = nn.shape
    kh = int(np.around(k1 / 2.0)) + 1
    recip = _reciprocal(nn)
    nnh = nn[:, :kh]
    recip_h = _reciprocal(nnh)
    rows_out, cols_out = [], []
    step = max(1, (1 << 22) // (k * kh * k))
    for s in range(0, n, step):
        e = min(n, s + step)
        r_set = np.where(recip[s:e], nn[s:e], -1)  # (C, K) R(i), -1 outside
        cand = nn[s:e]  # (C, K) candidates c
        c_half = nnh[cand]  # (C, K, kh) N_half(c)
        c_mask = recip_h[cand]  # (C, K, kh): member of R_half(c)
        in_r = (c_half[..., None] == r_set[:, None, None, :]).any(-1)  # (C, K, kh)
        shared = (c_mask & in_r).sum(-1).astype(np.float64)
        size = c_mask.sum(-1).astype(np.float64)
        accept = recip[s:e] & (shared > 2.0 / 3 * size)  # the reference's float comparison
        extra = np.where(accept[..., None] & c_mask, c_half, -1).reshape(e - s, -1)
        members = np.sort(np.concatenate([r_set, extra], 1), axis=1)
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        r, c = np.nonzero(keep)
        rows_out.append(r + s)
        cols_out.append(members[r, c])
    return np.concatenate(rows_out), np.concatenate(cols_out)


def _jaccard_numerators(v_rows: sp.csr_matrix, v_cols: sp.csc_matrix) -> np.ndarray:
    """(C, N) sum over c of min(V(i, c), V(j, c)) for the C rows of ``v_rows`` against every
    item j, from the columns' sparse lists."""
    c, n = v_rows.shape
    coo = v_rows.tocoo()
    i, col, vi = coo.row, coo.col, coo.data
    starts, counts = v_cols.indptr[col], np.diff(v_cols.indptr)[col]
    total = int(counts.sum())
    out = np.zeros(c * n, dtype=np.float64)
    if total == 0:
        return out.reshape(c, n)
    entry = np.repeat(np.arange(len(i)), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    at = starts[entry] + within
    j, vj = v_cols.indices[at], v_cols.data[at]
    out += np.bincount(i[entry] * n + j, weights=np.minimum(vi[entry], vj), minlength=c * n)
    return out.reshape(c, n)


def k_reciprocal_distances(
    query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor, metric: str,
    params: RerankParams | None = None, *, index_kind: str = "flat",
) -> Callable[[slice], torch.Tensor]:
    """Re-ranked distances as a row provider: ``rows -> (len(rows), Ng)`` float32 distances of
    those queries (smaller first), for ``metrics.rank.rank_from_scores`` (negated there).

    ``index_kind``: the FAISS index that gives the neighbour lists ("flat" is exact; "ivf" and
    "hnsw" approximate them for very large sets).
    """
    p = params or RerankParams()
    check_finite(np.asarray(query), "query features")
    check_finite(np.asarray(gallery), "gallery features")
    if metric == "cosine":  # extreme magnitudes rescaled exactly (metrics.finite)
        q, g = safe_rows(np.asarray(query)), safe_rows(np.asarray(gallery))
    else:
        q, g = safe_joint(np.asarray(query), np.asarray(gallery))
    nq, n = len(q), len(q) + len(g)
    x = torch.cat([q, g])
    dist = _SquaredDistance(x, metric)
    row_max = dist.row_max().clamp_(min=torch.finfo(torch.float32).tiny)
    k = min(p.k1 + 1, n)
    _, nn = build_index(x.numpy(), metric, index_kind).search(x.numpy(), k)
    if (nn < 0).any():
        raise ConfigError(f"the {index_kind} index returned fewer than {k} neighbours per item; "
                          "use index_kind='flat'")
    rows, cols = _expansion_sets(nn, p.k1)
    weights = np.exp(-(dist.pairs(rows, cols) / row_max.numpy()[rows]).astype(np.float64))
    v = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(1)).ravel()) @ v
    if p.k2 != 1:
        k2 = min(p.k2, k)
        expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2),
                                nn[:, :k2].ravel())), shape=(n, n))
        v = (expand @ v).tocsr()
    v.sort_indices()
    v_cols = v.tocsc()
    log.info("re-ranking: %d items, %d entries in V (k1=%d, k2=%d, lambda=%g)", n, v.nnz, p.k1,
             p.k2, p.lambda_value)
    gallery_cols = slice(nq, n)
    lam = p.lambda_value

    def rows_fn(sl: slice) -> torch.Tensor:
        # final = lam D + (1 - lam) J with J = 1 - m / (2 - m): dense lam D + (1 - lam), then
        # the correction -(1 - lam) m / (2 - m) where the supports overlap (m > 0)
        r = range(*sl.indices(nq))
        out = torch.empty(len(r), n - nq)
        step = 128
        for s in range(0, len(r), step):
            block = slice(r.start + s, min(r.stop, r.start + s + step))
            dest = out[s:s + block.stop - block.start]
            dest.copy_(dist.block(block, gallery_cols)).mul_(lam / row_max[block, None]).add_(1.0 - lam)
            m = _jaccard_numerators(v[block], v_cols)[:, nq:]
            i, j = np.nonzero(m)
            mv = m[i, j]
            dest[torch.as_tensor(i), torch.as_tensor(j)] -= torch.as_tensor(
                ((1.0 - lam) * mv / (2.0 - mv)).astype(np.float32))
        return out

    return rows_fn


def evaluate_reranked(
    query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor,
    query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None,
    metric: str, params: RerankParams | None = None, max_rank: int = 50,
    junk_pid: int | None = -1,
) -> RankResult:
    """Rank metrics of k-reciprocal re-ranked distances, chunk by chunk of queries.
    Every item, junk included, takes part in the neighbour sets, as in the reference."""
    rows = k_reciprocal_distances(query, gallery, metric, params)
    return rank_from_scores(lambda sl: -rows(sl), len(query), len(gallery), query_pids,
                            gallery_pids, query_camids, gallery_camids, max_rank=max_rank,
                            junk_pid=junk_pid, chunk_elements=1 << 22)
