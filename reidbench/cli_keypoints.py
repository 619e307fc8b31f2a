"""`reidbench data keypoints NAME`: detect the keypoints of a dataset and write its sidecar.

Resumable (a second call detects only the images the sidecar has no row for), a progress bar
on a terminal, and the coverage per split at the end, on stdout. The detector is built before
anything is read, so a missing ``keypoints`` extra is one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from reidbench.errors import DatasetError

log = logging.getLogger("reidbench")


def extract_dataset_keypoints(args: argparse.Namespace) -> int:
    from reidbench.config import DataConfig
    from reidbench.datasets.catalog import build_dataset
    from reidbench.engine.progress import bar
    from reidbench.keypoints import build_detector, extract_keypoints, images_by_split
    from reidbench.keypoints.dataset_sidecar import dataset_detector, default_sidecar

    detector = build_detector(args.detector or dataset_detector(args.name))
    try:
        data = build_dataset(DataConfig(name=args.name, root=args.data_root))
        default = default_sidecar(args.name, data)
        out = Path(args.out) if args.out is not None else default
        _check_writable(out, args.out is None)
        images = images_by_split(data)
        with bar(desc=f"{detector.name} keypoints", unit="img") as progress:

            def tick(done: int, todo: int) -> None:  # todo: the images without a row yet
                if progress.total != todo:
                    progress.reset(total=todo)
                progress.update(1)

            result = extract_keypoints(Path(data.root), images, detector, out, progress=tick)
    finally:
        detector.close()
    lines = [f"{args.name}: {out} ({result.detector}; {result.processed} image(s) detected now, "
             f"{result.reused} already done)"]
    lines += [f"  {line}" for line in result.summary_lines()]
    if out.resolve() != default.resolve():
        lines.append(f"  not where {args.name} reads its keypoints ({default}): pass "
                     f"--set data.keypoints={out} to run, evaluate and data check")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _check_writable(out: Path, is_default: bool) -> None:
    """One line before any detection when ``out`` cannot be written."""
    folder = out.parent if out.parent != Path("") else Path(".")
    if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
        return
    why = "does not exist" if not folder.is_dir() else "is not writable"
    hint = " (a read-only dataset: pass --out FILE elsewhere)" if is_default else ""
    raise DatasetError(f"cannot write the keypoint sidecar {out}: the folder {folder} {why}{hint}")
