"""The keypoint sidecar CSV: one row per image, the relative path then x,y per keypoint.

Coordinates are normalised to [0, 1] in the stored image (x by width, y by height). The first
row may be a header (``path,<name>_x,<name>_y,...``); it is recognised by a non-numeric second
field. Paths use forward slashes and are relative to the dataset root.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reidbench.errors import DatasetError


def write_keypoints_csv(
    path: Path, rows: Mapping[str, np.ndarray], names: tuple[str, ...] | None = None
) -> None:
    """Write ``{relative_path: (K, 2) array}`` sorted by path, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        if names is not None:
            writer.writerow(["path"] + [f"{n}_{axis}" for n in names for axis in ("x", "y")])
        for rel in sorted(rows):
            kps = np.asarray(rows[rel], dtype=np.float64).reshape(-1)
            writer.writerow([rel] + [f"{v:.6f}" for v in kps])
    os.replace(tmp, path)


def read_keypoints_csv(path: Path) -> dict[str, np.ndarray]:
    """Read a sidecar into ``{relative_path: (K, 2) float32 array}``.

    Raises DatasetError naming the file and line for a row with an odd number of coordinates,
    a non-numeric value or a different K than the first row.
    """
    out: dict[str, np.ndarray] = {}
    num_coords: int | None = None
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if lineno == 1 and len(row) > 1 and not _is_number(row[1]):
                continue  # header
            rel, values = row[0].strip().replace("\\", "/"), row[1:]
            try:
                coords = np.array([float(v) for v in values], dtype=np.float32)
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: non-numeric keypoint value in {row!r}") from None
            if coords.size == 0 or coords.size % 2:
                raise DatasetError(
                    f"{path}:{lineno}: expected 'path,x1,y1,...,xK,yK', got {len(values)} values"
                )
            if num_coords is None:
                num_coords = coords.size
            elif coords.size != num_coords:
                raise DatasetError(
                    f"{path}:{lineno}: {coords.size // 2} keypoints, earlier rows have {num_coords // 2}"
                )
            out[rel] = coords.reshape(-1, 2)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
