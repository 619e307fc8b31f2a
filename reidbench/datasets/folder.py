"""Folder-per-identity collections (``<root>/<identity>/<image>``), as face training sets and
ORL are stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidbench.datasets.base import ImageRecord
from reidbench.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".bmp")


def read_identity_folders(
    folder: Path, rel_root: Path, keypoints: dict[str, np.ndarray] | None = None,
) -> list[ImageRecord]:
    """Every image under ``folder/<identity>/``, sorted; pid = index of the identity folder in
    sorted order; camid 0. Keypoints are looked up by the path relative to ``rel_root``."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found: expected <root>/<identity>/<image> folders")
    identities = sorted(p for p in folder.iterdir() if p.is_dir())
    records = []
    for pid, identity in enumerate(identities):
        for path in sorted(p for p in identity.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            rel = path.relative_to(rel_root).as_posix()
            records.append(ImageRecord(str(path), pid, 0, (keypoints or {}).get(rel)))
    if not records:
        raise DatasetError(f"{folder} holds no images in <identity>/ subfolders "
                           f"(looked for {', '.join(IMAGE_SUFFIXES)})")
    return records
