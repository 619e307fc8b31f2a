"""The keypoint sidecar CSV: one row per image, the relative path then x,y per keypoint.

Coordinates are normalised to [0, 1] in the stored image (x by width, y by height). The first
row may be a header (``path,<name>_x,<name>_y,...``); it is recognised by a non-numeric second
field. Paths use forward slashes and are relative to the dataset root.

Every adapter accepts this one format (``--set data.keypoints=FILE``), so landmarks or body
keypoints from any detector can be brought in. The keypoint names, and so which pairs a
horizontal flip swaps, come from the header (``left_*`` <-> ``right_*``); a file without a
header takes the adapter's default schema when K matches it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reidbench.datasets.base import KeypointSchema
from reidbench.errors import DatasetError

KEYPOINTS_FILE = "keypoints.csv"  # the sidecar's default name in a dataset folder


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


def read_header_names(path: Path) -> tuple[str, ...] | None:
    """Keypoint names from the header (``left_eye_x,left_eye_y`` -> ``left_eye``), or None."""
    with open(path, newline="") as fh:
        row = next(csv.reader(fh), None)
    if not row or len(row) < 2 or _is_number(row[1]):
        return None
    coords = [c.strip() for c in row[1:]]
    names = tuple(c[:-2] if c.lower().endswith(("_x", "_y")) else c for c in coords[::2])
    return names


def schema_for(names: tuple[str, ...] | None, k: int, default: KeypointSchema | None) -> KeypointSchema:
    """The schema of a sidecar with ``k`` keypoints: ``default`` when it fits (same names, or no
    header and the same K), else one built from the header names, left/right pairs matched."""
    if default is not None and default.num_keypoints == k and (names is None or names == default.names):
        return default
    if names is None or len(names) != k:
        return KeypointSchema(tuple(f"kp{i}" for i in range(k)))
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        if "left" in name:
            j = index.get(name.replace("left", "right"))
            if j is not None:
                pairs.append((i, j))
    return KeypointSchema(names, tuple(pairs))


def read_sidecar(
    path: Path,
    default: KeypointSchema | None = None,
) -> tuple[dict[str, np.ndarray], KeypointSchema | None]:
    """``read_keypoints_csv`` plus the schema of its keypoints (None for an empty file)."""
    table = read_keypoints_csv(path)
    first = next(iter(table.values()), None)
    if first is None:
        return table, None
    return table, schema_for(read_header_names(path), first.shape[0], default)


def load_sidecar(
    name: str,
    data_root: Path,
    keypoints_csv: Path | None,
    default: KeypointSchema | None,
) -> tuple[dict[str, np.ndarray], KeypointSchema | None]:
    """The keypoint table and schema: ``keypoints_csv`` (which must exist), else
    ``<data_root>/keypoints.csv`` when present, else nothing."""
    if keypoints_csv is not None and not keypoints_csv.is_file():
        raise DatasetError(f"{name}: keypoint sidecar {keypoints_csv} does not exist")
    path = keypoints_csv if keypoints_csv is not None else data_root / KEYPOINTS_FILE
    if not path.is_file():
        return {}, None
    return read_sidecar(path, default)
