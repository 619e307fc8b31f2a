"""A grid of dataset samples with their keypoints drawn, for a person to look at."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reidbench.data.loader import load_sample
from reidbench.data.records import ImageRecord
from reidbench.datasets.base import Split
from reidbench.evaluation.tasks import task_for

MARKET_NAME = re.compile(r"^(-?\d+)_")  # Market-1501 / DukeMTMC / MSMT17 names start with the pid

# one colour per keypoint index (cycled), readable on light and dark backgrounds
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
]


def pick(records: list[ImageRecord], num: int, seed: int) -> list[ImageRecord]:
    """``num`` records chosen with a seeded generator, shown in dataset order."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(records), size=min(num, len(records)), replace=False))
    return [records[i] for i in chosen]


def file_identity(record: ImageRecord) -> str:
    """The identity as the file names it, not the training split's relabelled ``pid``: the
    leading number of a Market-style name (``0002_c1s1_000451_03.jpg`` -> ``0002``), else the
    folder the image is in (``lfw/Ann_A/Ann_A_0001.jpg`` -> ``Ann_A``)."""
    path = Path(record.path)
    match = MARKET_NAME.match(path.name)
    return match.group(1) if match else path.parent.name


def default_label(record: ImageRecord) -> str:
    """``id <file identity> cam <n>``, plus ``no kp`` when the record has no keypoints."""
    text = f"id {file_identity(record)} cam {record.camid + 1}"
    return text if record.keypoints is not None else text + " no kp"


def draw_tile(record: ImageRecord, height: int, label: str) -> Image.Image:
    pixels, keypoints = load_sample(record)  # as the model sees it (faces aligned)
    image = Image.fromarray(pixels)
    scale = height / image.height
    tile = image.resize((max(1, round(image.width * scale)), height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (tile.width, height + 14), (255, 255, 255))
    canvas.paste(tile, (0, 0))
    draw = ImageDraw.Draw(canvas)
    if keypoints is not None:
        r = max(2, height // 64)
        for k, (x, y) in enumerate(keypoints):
            px, py = x * tile.width, y * tile.height
            draw.ellipse((px - r, py - r, px + r, py + r), fill=PALETTE[k % len(PALETTE)],
                         outline=(0, 0, 0))
    draw.text((2, height + 1), label, fill=(0, 0, 0))
    return canvas


def preview_grid(
    records: list[ImageRecord], out: Path, columns: int = 8, tile_height: int = 192,
    labels: list[str] | None = None,
) -> Path:
    """Save a grid PNG of ``records`` with keypoints; labels default to ``default_label``
    (the identity as the file names it, the camera, and ``no kp`` without keypoints)."""
    labels = labels or [default_label(r) for r in records]
    tiles = [draw_tile(r, tile_height, lab) for r, lab in zip(records, labels)]
    if not tiles:
        raise ValueError("nothing to preview")
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (w + 4) + 4, rows * (h + 4) + 4), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, (4 + (i % columns) * (w + 4), 4 + (i // columns) * (h + 4)))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


def preview_dataset(data: Split, part: str, out: Path, num: int = 32, seed: int = 0) -> list[ImageRecord]:
    """Save a grid of ``num`` seeded samples of ``part`` (train, query or gallery; a face or
    template set shows its test images, labelled by person or template, for anything but its
    training identities) and return the records drawn."""
    records, label = task_for(data).preview(part)
    chosen = pick(records, num, seed)
    preview_grid(chosen, out, labels=[label(r) for r in chosen] if label else None)
    return chosen
