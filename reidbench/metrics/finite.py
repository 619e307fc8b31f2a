"""Finite inputs for the metrics: NaN/inf found and named, extreme values made safe.

A NaN or infinite feature or score makes every comparison false, so a ranking built on it is
not a ranking; it is refused here, with what and where (``check_finite``). Finite but extreme
features are legal and must still rank correctly: squaring them for a norm or a distance can
overflow (float32 overflows from 1.8e19, float64 from 1.3e154) or underflow to zero. Such rows
are multiplied by a power of two, which is exact, before anything is squared: per row for
cosine (a row's direction is all that counts), by one common factor for Euclidean distances
(which then all scale alike, so the ranking is unchanged). Rows already within
[2^-32, 2^32] are never touched, so ordinary features give bit-identical results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reidbench.errors import ReidbenchError

SAFE_MAX = 2.0**32  # largest max-abs left as is: squares and sums of squares cannot overflow
SAFE_MIN = 2.0**-32  # smallest non-zero max-abs left as is: squares cannot vanish


def check_finite(
    x: np.ndarray | torch.Tensor, what: str, describe: Callable[[int], str] | None = None,
) -> None:
    """Raise ReidbenchError when ``x`` holds NaN or inf: ``"{what}: 5 of 713 rows are NaN/inf
    (first row 0, {describe(0)})"`` for 2-D arrays (rows), values for 1-D ones."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            return
        flags = ~torch.isfinite(x)
        bad = (flags.reshape(len(x), -1).any(1) if x.dim() > 1 else flags).cpu().numpy()
    else:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            return
        bad = ~np.isfinite(x)
        if x.ndim > 1:
            bad = bad.reshape(len(x), -1).any(1)
    if not bad.any():
        return
    index = np.flatnonzero(bad)
    unit = "rows" if x.ndim > 1 else "values"
    where = f"first {unit[:-1]} {int(index[0])}"
    if describe is not None:
        where += f", {describe(int(index[0]))}"
    raise ReidbenchError(f"{what}: {len(index)} of {len(bad)} {unit} are NaN/inf ({where}); "
                         "nothing can be ranked or scored on them")


def power_of_two_scale(max_abs: np.ndarray) -> np.ndarray:
    """Per element, 1 where ``max_abs`` is 0 or within [SAFE_MIN, SAFE_MAX], else the power of
    two that brings it into [0.5, 1)."""
    m = np.asarray(max_abs, dtype=np.float64)
    _, exponent = np.frexp(m)
    out_of_range = (m > SAFE_MAX) | ((m < SAFE_MIN) & (m > 0))
    return np.where(out_of_range, np.ldexp(1.0, -exponent), 1.0)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def safe_rows(x: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, D) features as ``dtype``, each row whose max-abs lies outside [SAFE_MIN, SAFE_MAX]
    scaled by a power of two (its direction is unchanged): safe to L2-normalise."""
    t = _as_tensor(x)
    out = t.to(dtype)
    if t.numel() == 0:
        return out
    row_max = torch.linalg.vector_norm(t, float("inf"), dim=1).double().numpy()  # no |t| copy
    scale = power_of_two_scale(row_max)
    rows = np.flatnonzero(scale != 1.0)
    if len(rows):
        idx = torch.from_numpy(rows)
        out = out.clone() if out.data_ptr() == t.data_ptr() else out
        out[idx] = (t[idx].double() * torch.from_numpy(scale[rows])[:, None]).to(dtype)
    return out


def safe_joint(*xs: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, ...]:
    """The arrays as ``dtype``, all multiplied by one power of two when their common max-abs
    lies outside [SAFE_MIN, SAFE_MAX]: every distance between their rows scales alike (the
    ranking is unchanged) and none can overflow."""
    ts = [_as_tensor(x) for x in xs]
    peak = max((float(torch.linalg.vector_norm(t, float("inf"))) for t in ts if t.numel()),
               default=0.0)
    scale = float(power_of_two_scale(np.float64(peak)))
    if scale == 1.0:
        return tuple(t.to(dtype) for t in ts)
    return tuple((t.double() * scale).to(dtype) for t in ts)
