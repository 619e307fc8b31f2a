"""The keypoint sidecar CSV: one row per image, the relative path then x,y per keypoint.

Coordinates are normalised to [0, 1] in the stored image (x by width, y by height). The first
row may be a header (``path,<name>_x,<name>_y,...``); it is recognised by a non-numeric second
field. Paths use forward slashes and are relative to the dataset root. The file is UTF-8.

Confidences. A header whose columns come in triples ``<name>_x,<name>_y,<name>_c`` (what
``reidbench data keypoints`` writes) gives a confidence in [0, 1] after each point; its rows have
3K values, kept in ``KeypointTable.confidence``. Without a header every row is x,y pairs.

Every adapter accepts this one format (``--set data.keypoints=FILE``), so landmarks or body
keypoints from any detector can be brought in. The keypoint names, and so which pairs a
horizontal flip swaps, come from the header (``left_*`` <-> ``right_*``); a file without a
header takes the adapter's default schema when K matches it.

Validation. Keypoints are per sample or absent (DESIGN.md): a row either gives all K points of
its image or none, and an image without usable keypoints is simply a sample without keypoints.

- Structural problems are a DatasetError naming file and line: a path listed twice, a header
  with an odd number of coordinate columns, a row whose number of coordinates differs from the
  header's (or, without a header, from the first row's), a non-numeric value, a file that is
  not UTF-8, or a file none of whose coordinate rows is usable (e.g. written in pixels).
- A row whose coordinate fields are all empty (``path`` alone, or ``path,,,...``) says
  explicitly that the image has no keypoints (a detector found none): the image is a sample
  without keypoints, and nothing is reported.
- A row that cannot be used is dropped and its image gets no keypoints: a value that is NaN or
  infinite, a value outside ``TOLERATED_RANGE`` = [-0.5, 1.5] (keypoints of a crop may fall a
  little outside it, a hand beyond the box; half an image further out is a mistake), or some
  but not all values empty. So is a row naming no image file under the dataset root. Each load
  logs ONE warning with the counts and the first examples, and ``reidbench data check`` reports
  them per split (``KeypointReport``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reidbench.datasets.base import KeypointReport, KeypointSchema
from reidbench.datasets.textio import is_number, read_text
from reidbench.errors import DatasetError

logger = logging.getLogger(__name__)

KEYPOINTS_FILE = "keypoints.csv"  # the sidecar's default name in a dataset folder
TOLERATED_RANGE = (-0.5, 1.5)  # normalised coordinates accepted (inclusive)
EXAMPLES = 3  # examples named per kind of problem in the warning

# why a row gives no keypoints
EXPLICIT = "no coordinates"  # all coordinate fields empty: the image has none, on purpose
NON_FINITE = "NaN or infinite value"
OUT_OF_RANGE = f"value outside [{TOLERATED_RANGE[0]}, {TOLERATED_RANGE[1]}]"
BAD_CONFIDENCE = "confidence outside [0, 1]"
INCOMPLETE = "some coordinates empty"


def keypoints_csv_text(rows: Mapping[str, np.ndarray | None], names: tuple[str, ...] | None = None) -> str:
    """The sidecar text of ``{relative_path: (K, 2) array, or None for "no keypoints"}``,
    sorted by path (CRLF line ends, as the ``csv`` module writes)."""
    out = io.StringIO()
    writer = csv.writer(out)
    if names is not None:
        writer.writerow(["path"] + [f"{n}_{axis}" for n in names for axis in ("x", "y")])
    for rel in sorted(rows):
        kps = rows[rel]
        values = [] if kps is None else np.asarray(kps, dtype=np.float64).reshape(-1)
        writer.writerow([rel] + [f"{v:.6f}" for v in values])
    return out.getvalue()


def write_keypoints_csv(
    path: Path, rows: Mapping[str, np.ndarray | None], names: tuple[str, ...] | None = None
) -> None:
    """Write ``{relative_path: (K, 2) array}`` sorted by path, atomically (``keypoints_csv_text``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        fh.write(keypoints_csv_text(rows, names))
    os.replace(tmp, path)


@dataclass(frozen=True)
class KeypointTable:
    """A parsed sidecar: usable rows, and the rows that give no keypoints with the reason."""

    path: Path
    num_keypoints: int  # K (0 when no row has coordinates)
    names: tuple[str, ...] | None  # from the header, if any
    points: dict[str, np.ndarray]  # relative path -> (K, 2) float32, every value usable
    missing: dict[str, str] = field(default_factory=dict)  # relative path -> reason (EXPLICIT, ...)
    lines: dict[str, int] = field(default_factory=dict)  # relative path -> line number
    # relative path -> (K,) float32 in [0, 1], for the rows of ``points`` when the header has
    # <name>_c columns (empty otherwise)
    confidence: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.points) + len(self.missing)

    def invalid(self) -> dict[str, str]:
        """Rows dropped as unusable (every reason but EXPLICIT): path -> reason."""
        return {rel: why for rel, why in self.missing.items() if why != EXPLICIT}



def _header_columns(row: list[str]) -> tuple[tuple[str, ...], int]:
    """The keypoint names of a header row and the values per keypoint: 3 when the columns are
    ``<name>_x,<name>_y,<name>_c`` triples, else 2 (``<name>_x,<name>_y`` pairs)."""
    cols = [c.strip() for c in row[1:]]
    if len(cols) % 3 == 0 and all(
        cols[i].endswith("_x") and cols[i + 1] == cols[i][:-2] + "_y" and cols[i + 2] == cols[i][:-2] + "_c"
        for i in range(0, len(cols), 3)
    ):
        return tuple(c[:-2] for c in cols[::3]), 3
    return tuple(c[:-2] if c.lower().endswith(("_x", "_y")) else c for c in cols[::2]), 2


def _header_names(row: list[str]) -> tuple[str, ...]:
    return _header_columns(row)[0]


def _normalise_path(text: str) -> str:
    rel = text.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def _row_reason(coords: np.ndarray) -> str | None:
    """Why a full row of coordinates is unusable, or None."""
    if not np.isfinite(coords).all():
        return NON_FINITE
    low, high = TOLERATED_RANGE
    if coords.min() < low or coords.max() > high:
        return OUT_OF_RANGE
    return None


def read_keypoints_table(path: Path) -> KeypointTable:
    """Parse and validate a sidecar (module docstring); structural problems raise DatasetError
    naming ``path:line``, unusable rows land in ``missing`` with their reason."""
    path = Path(path)
    text = read_text(path, "a keypoint sidecar")
    points: dict[str, np.ndarray] = {}
    confidence: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    lines: dict[str, int] = {}
    names: tuple[str, ...] | None = None
    width = 2  # values per keypoint: x, y (3 with a confidence header: x, y, c)
    num_coords: int | None = None  # from the header, else from the first row with coordinates
    source = "earlier rows have"
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not row[0].strip():
            if any(v.strip() for v in row):
                raise DatasetError(f"{path}:{lineno}: coordinates without an image path: {row!r}")
            continue
        if not lines and names is None and len(row) > 1 and not is_number(row[1]) and row[1].strip():
            names, width = _header_columns(row)
            if width == 2 and (len(row) - 1) % 2:
                raise DatasetError(
                    f"{path}:{lineno}: the header has {len(row) - 1} coordinate columns, an odd "
                    "number; expected 'path,<name>_x,<name>_y,...' (two per keypoint) or "
                    "'path,<name>_x,<name>_y,<name>_c,...' (three, with a confidence)"
                )
            num_coords, source = len(row) - 1, "the header has"
            continue
        rel, values = _normalise_path(row[0]), [v.strip() for v in row[1:]]
        if rel in lines:
            raise DatasetError(
                f"{path}:{lineno}: {rel} is listed twice (first on line {lines[rel]}); keep one row per image"
            )
        lines[rel] = lineno
        filled = [v != "" for v in values]
        if not any(filled):
            missing[rel] = EXPLICIT
            continue
        if len(values) % width or (num_coords is not None and len(values) != num_coords):
            want = f"{num_coords // width} keypoints ({num_coords} values)" if num_coords else "x,y pairs"
            have = f"{source} " if num_coords is not None else ""
            layout = "x1,y1,c1,...,xK,yK,cK" if width == 3 else "x1,y1,...,xK,yK"
            raise DatasetError(
                f"{path}:{lineno}: {len(values)} coordinate values for {rel}; {have}{want}: "
                f"expected 'path,{layout}' (or the path alone for an image without keypoints)"
            )
        try:
            coords = np.array([float(v) if v else np.nan for v in values], dtype=np.float64)
        except ValueError:
            bad = next(v for v in values if v and not is_number(v))
            raise DatasetError(
                f"{path}:{lineno}: non-numeric keypoint value {bad!r} for {rel}; expected numbers "
                "normalised to [0, 1] (empty fields for an image without keypoints)"
            ) from None
        if num_coords is None:
            num_coords = len(values)
        coords = coords.reshape(-1, width)
        reason = INCOMPLETE if not all(filled) else _row_reason(coords[:, :2])
        if reason is None and width == 3 and not (0 <= coords[:, 2].min() and coords[:, 2].max() <= 1):
            reason = BAD_CONFIDENCE
        if reason is not None:
            missing[rel] = reason
        else:
            points[rel] = coords[:, :2].astype(np.float32)
            if width == 3:
                confidence[rel] = coords[:, 2].astype(np.float32)
    if not points and any(why != EXPLICIT for why in missing.values()):
        first = min((lines[r], r, why) for r, why in missing.items() if why != EXPLICIT)
        raise DatasetError(
            f"{path}: none of its {len(missing)} rows has usable keypoints (line {first[0]}, "
            f"{first[1]}: {first[2]}); coordinates must be normalised to [0, 1] of the image "
            f"(accepted: {TOLERATED_RANGE[0]} to {TOLERATED_RANGE[1]}), not pixels"
        )
    return KeypointTable(path, (num_coords or 0) // width, names, points, missing, lines, confidence)


def read_keypoints_csv(path: Path) -> dict[str, np.ndarray]:
    """The usable rows of a sidecar, ``{relative_path: (K, 2) float32 array}``; rows that give no
    keypoints are left out (one warning counts the unusable ones). Structural problems raise
    DatasetError naming the file and line."""
    table = read_keypoints_table(path)
    invalid = table.invalid()
    if invalid:
        logger.warning("%s: %d row(s) unusable, left out: %s", path, len(invalid), _examples(table, invalid))
    return table.points


def _examples(table: KeypointTable, rows: Mapping[str, str]) -> str:
    first = sorted(rows, key=lambda r: table.lines.get(r, 0))[:EXAMPLES]
    text = ", ".join(f"line {table.lines[r]} {r} ({rows[r]})" for r in first)
    return text + (", ..." if len(rows) > EXAMPLES else "")


def read_header_names(path: Path) -> tuple[str, ...] | None:
    """Keypoint names from the header (``left_eye_x,left_eye_y`` -> ``left_eye``), or None."""
    row = next(csv.reader(io.StringIO(read_text(path, "a keypoint sidecar"))), None)
    if not row or len(row) < 2 or is_number(row[1]) or not row[1].strip():
        return None
    return _header_names(row)


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


def table_schema(table: KeypointTable, default: KeypointSchema | None) -> KeypointSchema | None:
    """The schema of a parsed sidecar (None when no row has coordinates)."""
    if table.num_keypoints == 0:
        return None
    return schema_for(table.names, table.num_keypoints, default)


def read_sidecar(
    path: Path,
    default: KeypointSchema | None = None,
) -> tuple[dict[str, np.ndarray], KeypointSchema | None]:
    """``read_keypoints_csv`` plus the schema of its keypoints (None for an empty file)."""
    table = read_keypoints_table(path)
    return table.points, table_schema(table, default)


def load_sidecar(
    name: str,
    data_root: Path,
    keypoints_csv: Path | None,
    default: KeypointSchema | None,
) -> tuple[KeypointTable | None, KeypointSchema | None]:
    """The parsed sidecar and its schema: ``keypoints_csv`` (which must exist), else
    ``<data_root>/keypoints.csv`` when present, else ``(None, None)``."""
    if keypoints_csv is not None and not keypoints_csv.is_file():
        raise DatasetError(f"{name}: keypoint sidecar {keypoints_csv} does not exist")
    path = keypoints_csv if keypoints_csv is not None else data_root / KEYPOINTS_FILE
    if not path.is_file():
        return None, None
    table = read_keypoints_table(path)
    return table, table_schema(table, default)


class KeypointMatcher:
    """Hands each image of a dataset its sidecar row, then reports what was left over.

    An adapter calls ``lookup`` once per image it reads (also for images it then drops, such
    as Market junk) and ``finish`` once at the end, which logs the one warning about unusable
    rows and rows naming no image, and returns the ``KeypointReport``. Without a sidecar
    (``table`` None) every lookup is None and ``finish`` returns None.
    """

    def __init__(self, dataset: str, table: KeypointTable | None, roots: tuple[Path, ...] = ()) -> None:
        self.dataset, self.table = dataset, table
        self.roots = roots  # folders the sidecar's paths may be relative to (unknown-row check)
        self._used: set[str] = set()
        self._invalid: dict[str, str] = {}  # image path -> "line N: reason"
        self._explicit: set[str] = set()
        self._counted: set[str] = set()  # image paths already attributed
        self._confidence: dict[str, np.ndarray] = {}  # image path -> (K,) of its usable row

    def lookup(self, image: str | Path, *keys: str) -> np.ndarray | None:
        """The (K, 2) keypoints of ``image`` (the record's path) under the first of ``keys``
        (sidecar paths) that has a row, or None (no row, or a row without usable keypoints)."""
        if self.table is None:
            return None
        for key in keys:
            if key in self.table.lines:
                self._used.add(key)
                points = self.table.points.get(key)
                if points is not None and key in self.table.confidence:
                    self._confidence[str(image)] = self.table.confidence[key]
                if points is None and str(image) not in self._counted:
                    why = self.table.missing[key]
                    if why == EXPLICIT:
                        self._explicit.add(str(image))
                    else:
                        self._invalid[str(image)] = f"line {self.table.lines[key]}: {why}"
                self._counted.add(str(image))
                return points
        return None

    def finish(self) -> KeypointReport | None:
        """The report; logs ONE warning if rows were dropped as unusable or name no image."""
        table = self.table
        if table is None:
            return None
        left = [rel for rel in table.lines if rel not in self._used]
        on_disk = {rel for rel in left if any((root / rel).is_file() for root in self.roots)}
        unknown = tuple(sorted((rel for rel in left if rel not in on_disk), key=table.lines.__getitem__))
        if unknown and not self._used:
            raise DatasetError(
                f"{self.dataset}: keypoint sidecar {table.path} names none of the dataset's images "
                f"(line {table.lines[unknown[0]]}: {unknown[0]}); its paths must be relative to "
                f"{self.roots[0] if self.roots else 'the dataset root'}"
            )
        dropped = {rel: why for rel, why in table.invalid().items() if rel in self._used}
        parts = []
        if dropped:
            counts: dict[str, int] = {}
            for why in dropped.values():
                counts[why] = counts.get(why, 0) + 1
            kinds = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
            parts.append(
                f"{len(dropped)} row(s) unusable ({kinds}), their images get no keypoints: "
                f"{_examples(table, dropped)}"
            )
        if unknown:
            parts.append(
                f"{len(unknown)} row(s) name no image under the dataset root, ignored: "
                f"{_examples(table, dict.fromkeys(unknown, 'no such image'))}"
            )
        if parts:
            logger.warning("%s: keypoint sidecar %s: %s", self.dataset, table.path, "; ".join(parts))
        return KeypointReport(
            sidecar=str(table.path),
            num_keypoints=table.num_keypoints,
            rows=table.rows,
            invalid=dict(self._invalid),
            explicit=frozenset(self._explicit),
            unknown=unknown,
            unused=len(on_disk),
            confidence=dict(self._confidence),
        )
