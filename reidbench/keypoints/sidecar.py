"""The sidecar a detector writes: the project's keypoint CSV with a confidence per point.

Format (``reidbench.datasets.keypoints``, extended backward-compatibly): a header naming the
points, three columns per point, then one row per image sorted by path::

    path,nose_x,nose_y,nose_c,left_eye_x,left_eye_y,left_eye_c,...
    bounding_box_test/0004_c1s6_016996_02.jpg,0.512345,0.101234,0.9987,...
    bounding_box_test/0005_c1s1_001351_02.jpg,,,,...

x, y are normalised to the stored image (6 decimals), c is the detector's confidence in [0, 1]
(4 decimals). A row whose fields are all empty says the detector found nothing on that image:
an explicit "missing" row, never an invented point. Old sidecars (``path,<name>_x,<name>_y``)
stay valid; a reader tells the two apart by the header (``_c`` after each ``_x``, ``_y``).

Next to it ``<sidecar>.json`` records where the points come from (detector, its settings and
package version, the coverage per split), for run records and ``data check``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.datasets.textio import is_number, read_text
from reidbench.errors import DatasetError
from reidbench.fileio import atomic_write_text
from reidbench.keypoints.detector import Detection

AXES = ("x", "y", "c")


def header(names: tuple[str, ...]) -> list[str]:
    """``["path", "<name>_x", "<name>_y", "<name>_c", ...]``."""
    return ["path"] + [f"{n}_{axis}" for n in names for axis in AXES]


def parse_header(row: list[str]) -> tuple[tuple[str, ...], bool] | None:
    """``(names, has_confidence)`` of a header row, or None when ``row`` is not a header.

    A header has a non-numeric second field; its coordinate columns are ``<name>_x,<name>_y``
    pairs (the old format) or ``<name>_x,<name>_y,<name>_c`` triples (this one)."""
    cols = [c.strip() for c in row[1:]]
    if not cols or not cols[0] or is_number(cols[0]):
        return None
    triples = len(cols) % 3 == 0 and all(
        cols[i].endswith("_x") and cols[i + 1] == cols[i][:-2] + "_y" and cols[i + 2] == cols[i][:-2] + "_c"
        for i in range(0, len(cols), 3)
    )
    if triples:
        return tuple(c[:-2] for c in cols[::3]), True
    return tuple(c[:-2] if c.lower().endswith(("_x", "_y")) else c for c in cols[::2]), False


def sidecar_text(rows: Mapping[str, Detection | None], names: tuple[str, ...]) -> str:
    """The sidecar text of ``{relative_path: Detection, or None for "nothing found"}``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header(names))
    empty = [""] * (3 * len(names))
    for rel in sorted(rows):
        det = rows[rel]
        if det is None:
            writer.writerow([rel] + empty)
            continue
        if len(det.points) != len(names):
            raise ValueError(f"{rel}: {len(det.points)} points for a header of {len(names)}")
        fields = []
        for (x, y), c in zip(det.points.tolist(), det.confidence.tolist()):
            fields += [f"{x:.6f}", f"{y:.6f}", f"{c:.4f}"]
        writer.writerow([rel] + fields)
    return out.getvalue()


def write_sidecar(path: Path, rows: Mapping[str, Detection | None], names: tuple[str, ...]) -> None:
    """Write the sidecar of ``rows`` atomically (``sidecar_text``)."""
    atomic_write_text(Path(path), sidecar_text(rows, names))


def provenance_path(sidecar: Path) -> Path:
    """Where the provenance of ``sidecar`` is recorded: ``<sidecar>.json``."""
    return sidecar.with_name(sidecar.name + ".json")


def write_provenance(sidecar: Path, record: Mapping[str, Any]) -> None:
    atomic_write_text(provenance_path(sidecar), json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_provenance(sidecar: Path) -> dict[str, Any] | None:
    """The provenance recorded next to ``sidecar``, or None when there is none."""
    path = provenance_path(sidecar)
    if not path.is_file():
        return None
    try:
        data = json.loads(read_text(path, "a keypoint provenance record"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); remove it or restore it") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class DetectionTable:
    """A parsed detector sidecar: the point names and every row (None = "nothing found")."""

    path: Path
    names: tuple[str, ...]
    rows: dict[str, Detection | None]


def read_sidecar(path: Path) -> DetectionTable:
    """Parse a sidecar in this module's format (header with ``_c`` columns); anything else, or
    a malformed row, is a DatasetError naming ``path:line``."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path, "a keypoint sidecar")))
    first = next(reader, None)
    parsed = parse_header(first) if first else None
    if parsed is None or not parsed[1]:
        raise DatasetError(
            f"{path}:1: not a detector sidecar: expected the header 'path,<name>_x,<name>_y,"
            f"<name>_c,...', got {','.join(first or [])[:80]!r}"
        )
    names = parsed[0]
    width = 3 * len(names)
    rows: dict[str, Detection | None] = {}
    lines: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or not row[0].strip():
            if any(v.strip() for v in row):
                raise DatasetError(f"{path}:{lineno}: values without an image path: {row!r}")
            continue
        rel, values = row[0].strip(), [v.strip() for v in row[1:]]
        if rel in lines:
            raise DatasetError(f"{path}:{lineno}: {rel} is listed twice (first on line {lines[rel]})")
        lines[rel] = lineno
        if not any(values):
            rows[rel] = None
            continue
        if len(values) != width or not all(values):
            raise DatasetError(
                f"{path}:{lineno}: {rel} has {sum(map(bool, values))} of {width} values; expected "
                f"x,y,c for each of the {len(names)} points, or all fields empty for 'nothing found'"
            )
        try:
            data = np.array([float(v) for v in values], dtype=np.float64).reshape(-1, 3)
        except ValueError:
            data = np.full((1, 3), np.nan)
        if not np.isfinite(data).all():
            raise DatasetError(f"{path}:{lineno}: {rel}: a non-numeric or non-finite value in "
                               f"{','.join(values)[:80]!r}; expected finite numbers")
        if data[:, 2].min() < 0 or data[:, 2].max() > 1:
            raise DatasetError(f"{path}:{lineno}: {rel}: a confidence outside [0, 1] in "
                               f"{','.join(values)[:80]!r}")
        rows[rel] = Detection(data[:, :2], data[:, 2])
    return DetectionTable(path, names, rows)
