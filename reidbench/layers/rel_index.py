"""Relative-position bucket indices of iRPE (Wu et al., "Rethinking and Improving Relative
Position Encoding for Vision Transformer", ICCV 2021), shared by RPE, iRPE and KP-RPE.

A 1D relative offset x is mapped to an integer bucket by one of two functions:

- ``piecewise``: exact for |x| <= alpha, logarithmic beyond it and clipped at beta:
  sign(x) * min(beta, round(alpha + ln(|x| / alpha) / ln(gamma / alpha) * (beta - alpha)));
- ``clip``: round(x) clipped to [-beta, beta].

``ratio`` sets alpha:beta:gamma = 1:2:8 (alpha = ratio, beta = 2 ratio, gamma = 8 ratio); the
default 1.9 maps |x| = 0, 1, 2, 3, 4, 10 to 0, 1, 2, 2, 3, 3.

2D methods turn the (dy, dx) offset of two patches into a bucket:

- ``euclidean``: f(round(sqrt(dy^2 + dx^2))), buckets 0..int(beta);
- ``quant``: f(dy^2 + dx^2), buckets 0..int(beta);
- ``cross_rows`` / ``cross_cols``: f(dy) or f(dx) shifted by int(beta), 2 int(beta) + 1 buckets
  (the ``cross`` method sums a rows and a cols encoding);
- ``product``: (f(dy) + b) * (2b + 1) + f(dx) + b with b = int(beta), (2b + 1)^2 buckets
  (49 at ratio 1.9).

Prefix ("skip") tokens such as CLS get one extra bucket of their own for every pair they are in.
The grid is (rows, cols) and need not be square; tokens are numbered row-major.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

METHODS = ("euclidean", "quant", "cross_rows", "cross_cols", "product")
MAPPINGS = ("piecewise", "clip")


def abg(ratio: float) -> tuple[float, float, float]:
    """(alpha, beta, gamma) = (1, 2, 8) * ratio."""
    return 1.0 * ratio, 2.0 * ratio, 8.0 * ratio


def piecewise_index(rel: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """The piecewise index function on integer or float offsets; returns int64, signs kept."""
    rel = rel.to(torch.float64)
    mag = rel.abs()
    far = mag > alpha
    log_part = alpha + torch.log(mag.clamp_min(1e-12) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    out = torch.where(far, torch.sign(rel) * log_part.round().clamp(max=beta), rel.round())
    return out.to(torch.int64)


def clip_index(rel: torch.Tensor, beta: float) -> torch.Tensor:
    """round(x) clipped to [-int(beta), int(beta)]."""
    b = int(beta)
    return rel.to(torch.float64).round().clamp(-b, b).to(torch.int64)


def _index(rel: torch.Tensor, ratio: float, mapping: str) -> torch.Tensor:
    alpha, beta, gamma = abg(ratio)
    if mapping == "piecewise":
        return piecewise_index(rel, alpha, beta, gamma)
    if mapping == "clip":
        return clip_index(rel, beta)
    raise ValueError(f"unknown relative-position mapping {mapping!r}; expected one of {MAPPINGS}")


def num_buckets(method: str, ratio: float, skip: int = 0) -> int:
    """Number of buckets of ``method``, plus one for prefix tokens when ``skip`` > 0."""
    b = int(abg(ratio)[1])
    if method == "product":
        n = (2 * b + 1) ** 2
    elif method in ("cross_rows", "cross_cols"):
        n = 2 * b + 1
    elif method in ("euclidean", "quant"):
        n = b + 1
    else:
        raise ValueError(f"unknown relative-position method {method!r}; expected one of {METHODS}")
    return n + (1 if skip > 0 else 0)


def grid_offsets(grid: tuple[int, int]) -> torch.Tensor:
    """(N, N, 2) int64 offsets (dy, dx) = position(i) - position(j), row-major tokens."""
    rows, cols = grid
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)  # (N, 2)
    return pos[:, None, :] - pos[None, :, :]


def offsets_to_buckets(
    offsets: torch.Tensor, method: str, ratio: float = 1.9, mapping: str = "piecewise"
) -> torch.Tensor:
    """Bucket of each (dy, dx) offset in ``offsets`` (..., 2), int64 of shape (...)."""
    dy, dx = offsets[..., 0], offsets[..., 1]
    b = int(abg(ratio)[1])
    if method == "euclidean":
        return _index(torch.sqrt(dy.double() ** 2 + dx.double() ** 2).round(), ratio, mapping)
    if method == "quant":
        return _index(dy.double() ** 2 + dx.double() ** 2, ratio, mapping)
    if method == "cross_rows":
        return _index(dy, ratio, mapping) + b
    if method == "cross_cols":
        return _index(dx, ratio, mapping) + b
    if method == "product":
        return (_index(dy, ratio, mapping) + b) * (2 * b + 1) + _index(dx, ratio, mapping) + b
    raise ValueError(f"unknown relative-position method {method!r}; expected one of {METHODS}")


@lru_cache(maxsize=256)
def _bucket_ids_cached(
    grid: tuple[int, int], method: str, ratio: float, mapping: str, skip: int,
    device: torch.device | None,
) -> torch.Tensor:
    if device is not None:
        return _bucket_ids_cached(grid, method, ratio, mapping, skip, None).to(device)
    ids = offsets_to_buckets(grid_offsets(grid), method, ratio, mapping)  # (N, N)
    if skip:
        n = grid[0] * grid[1]
        extra = num_buckets(method, ratio, skip) - 1  # the prefix tokens' own bucket
        full = torch.full((n + skip, n + skip), extra, dtype=torch.int64)
        full[skip:, skip:] = ids
        ids = full
    return ids


def bucket_ids(
    grid: tuple[int, int], method: str, ratio: float = 1.9, mapping: str = "piecewise",
    skip: int = 0, device: torch.device | str | None = None,
) -> torch.Tensor:
    """(T, T) int64 bucket of every token pair, T = skip + rows * cols, on ``device``.

    Cached per (grid, method, ratio, mapping, skip, device) and shared by every block: do not
    modify the returned tensor.
    """
    dev = torch.device(device) if device is not None else None
    return _bucket_ids_cached(tuple(grid), method, float(ratio), mapping, int(skip), dev)
