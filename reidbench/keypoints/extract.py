"""Run a detector over a dataset's images and write its sidecar: resumable, atomic, counted.

``extract_keypoints`` takes the images of each split (paths relative to the dataset root, the
keys of the sidecar), detects the keypoints of every image the sidecar has no row for yet, and
writes the sidecar (``sidecar``) and its provenance ``<sidecar>.json`` atomically: every
``flush_seconds`` while it runs, and when it stops for any reason (finished, an unreadable
image, Ctrl-C), so a second call continues where the first stopped and a call on a finished
sidecar processes nothing. An existing file is only ever continued, never replaced: one that
another detector (or anything but this module) wrote is a DatasetError.

Every image gets a row: the keypoints, or an explicit "missing" row when the detector finds
nothing (or finds points outside the range sidecars accept, ``TOLERATED_RANGE``). Progress goes
to an optional ``progress(done, total)`` callback (the CLI draws the bar); the coverage per
split comes back in the result and is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.data.loader import load_rgb
from reidbench.datasets.keypoints import TOLERATED_RANGE
from reidbench.errors import DatasetError
from reidbench.keypoints.detector import Detection, KeypointDetector
from reidbench.keypoints.sidecar import read_provenance, read_sidecar, write_provenance, write_sidecar

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (images done in this call, images to do in this call)


@dataclass(frozen=True)
class SplitCoverage:
    """How many images of a split have keypoints in the sidecar."""

    split: str
    images: int
    found: int

    @property
    def missing(self) -> int:
        return self.images - self.found

    @property
    def fraction(self) -> float:
        return self.found / self.images if self.images else 0.0


@dataclass(frozen=True)
class ExtractionResult:
    """What one ``extract_keypoints`` call did (timings cover the images processed here)."""

    sidecar: Path
    detector: str
    processed: int  # images detected in this call
    reused: int  # images whose row the sidecar already had
    rejected: int  # detections written as missing: a point outside TOLERATED_RANGE
    coverage: tuple[SplitCoverage, ...]
    wall_seconds: float
    cpu_seconds: float  # time.process_time of this process (MediaPipe's threads included)

    def summary_lines(self) -> list[str]:
        """One line per split, ``train: 30/32 images with keypoints (93.8%)``."""
        return [f"{c.split}: {c.found}/{c.images} images with keypoints ({100 * c.fraction:.1f}%)"
                for c in self.coverage]


def images_by_split(dataset: Any) -> dict[str, list[str]]:
    """The images of each part of a dataset adapter's split object (``dataset.parts()``: the
    parts ``data check`` reports) as sidecar keys: paths relative to ``dataset.root``, forward
    slashes. An image may be in several parts (a folder set's ``pairs`` reuse query and gallery)."""
    root = Path(dataset.root)
    out: dict[str, list[str]] = {}
    for part, records in dataset.parts().items():
        keys = []
        for record in records:
            try:
                keys.append(Path(record.path).relative_to(root).as_posix())
            except ValueError:
                raise DatasetError(f"{dataset.name}: image {record.path} is not under the dataset "
                                   f"root {root}; its sidecar row could not be keyed") from None
        out[part] = keys
    return out


def extract_keypoints(
    root: Path,
    images: Mapping[str, Sequence[str]],
    detector: KeypointDetector,
    sidecar: Path,
    *,
    progress: Progress | None = None,
    flush_seconds: float = 60.0,
    decode: Callable[[str], np.ndarray] = load_rgb,
) -> ExtractionResult:
    """Detect the keypoints of every image in ``images`` (split -> paths relative to ``root``)
    that ``sidecar`` has no row for, and write the sidecar (module docstring).

    Args:
        root: the dataset root the paths are relative to.
        images: per split, the sidecar keys of its images (an image may be in several splits).
        detector: a built detector (``build_detector``); it is not closed here.
        sidecar: the CSV to write or to continue.
        progress: called after each image with (done, total) of this call.
        flush_seconds: rewrite the sidecar at least this often while running.
        decode: path -> (H, W, 3) uint8 RGB, as the data loader decodes it (the keypoints are
            normalised to that image).
    """
    root, sidecar = Path(root), Path(sidecar)
    rows = _resume(sidecar, detector)
    wanted = sorted({rel for keys in images.values() for rel in keys})
    todo = [rel for rel in wanted if rel not in rows]
    reused = len(wanted) - len(todo)
    if reused:
        logger.info("%s: %d of %d images already have a row; detecting the other %d",
                    sidecar, reused, len(wanted), len(todo))
    rejected: list[str] = []
    record = {"detector": detector.name, "settings": detector.settings(),
              "names": list(detector.schema.names)}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    last_flush = wall0
    done, completed = 0, False
    try:
        for rel in todo:
            detection = detector.detect(decode(str(root / rel)))
            if detection is not None and not _in_range(detection):
                rejected.append(rel)
                detection = None
            rows[rel] = detection
            done += 1
            if progress is not None:
                progress(done, len(todo))
            if time.perf_counter() - last_flush >= flush_seconds:
                _flush(sidecar, rows, record, images)
                last_flush = time.perf_counter()
        completed = True
    finally:  # keep what was detected, whatever stopped the loop
        if done or (completed and not sidecar.is_file()):
            _flush(sidecar, rows, record, images)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if rejected:
        logger.warning("%s: %d detection(s) had a point outside [%s, %s] and were written as "
                       "missing: %s", sidecar, len(rejected), *TOLERATED_RANGE,
                       ", ".join(rejected[:3]) + (", ..." if len(rejected) > 3 else ""))
    result = ExtractionResult(sidecar, detector.name, done, reused, len(rejected),
                              _coverage(rows, images), wall, cpu)
    if done:
        logger.info("%s: %d image(s) in %.1f s wall, %.1f s CPU (%.1f ms CPU per image)",
                    detector.name, done, wall, cpu, 1000 * cpu / done)
    for line in result.summary_lines():
        logger.info("%s: %s", sidecar, line)
    return result


def _resume(sidecar: Path, detector: KeypointDetector) -> dict[str, Detection | None]:
    """The rows of an existing sidecar this detector may continue (else a DatasetError)."""
    if not sidecar.exists():
        return {}
    if not sidecar.is_file():
        raise DatasetError(f"{sidecar} exists and is not a file; pass another output path")
    table = read_sidecar(sidecar)
    names = detector.schema.names
    if table.names != names:
        raise DatasetError(
            f"{sidecar} holds other keypoints ({', '.join(table.names[:3])}, ... {len(table.names)} "
            f"points) than detector {detector.name!r} writes ({len(names)} points); it is left "
            "untouched: pass another output path"
        )
    provenance = read_provenance(sidecar)
    if provenance is not None and provenance.get("detector") != detector.name:
        raise DatasetError(
            f"{sidecar} was written by detector {provenance.get('detector')!r}, not "
            f"{detector.name!r}; it is left untouched: pass another output path or that detector"
        )
    return dict(table.rows)


def _in_range(detection: Detection) -> bool:
    low, high = TOLERATED_RANGE
    return bool(detection.points.min() >= low and detection.points.max() <= high)


def _coverage(rows: Mapping[str, Detection | None], images: Mapping[str, Sequence[str]]) -> tuple[
        SplitCoverage, ...]:
    return tuple(
        SplitCoverage(split, len(set(keys)), sum(rows.get(rel) is not None for rel in set(keys)))
        for split, keys in images.items()
    )


def _flush(sidecar: Path, rows: Mapping[str, Detection | None], record: Mapping[str, Any],
           images: Mapping[str, Sequence[str]]) -> None:
    write_sidecar(sidecar, rows, tuple(record["names"]))
    coverage = {c.split: {"images": c.images, "found": c.found} for c in _coverage(rows, images)}
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_provenance(sidecar, {**record, "rows": len(rows), "coverage": coverage, "written": written})
