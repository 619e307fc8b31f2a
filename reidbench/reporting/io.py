"""Table text for the report writers (the files themselves are written by ``reidbench.fileio``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any


def csv_text(rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...],
             fmt: Callable[[Any], str]) -> str:
    """CSV of ``rows`` restricted to ``columns`` (header first, ``\n`` line ends), each value
    written with ``fmt``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: fmt(row[k]) for k in columns})
    return buf.getvalue()
