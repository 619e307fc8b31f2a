"""The positive control of the misalignment study: a set in which the keypoints MUST matter.

Every image (``size`` x ``size``, default 64) shows ``patterns`` (default 5) look-alike marks at
random, non-overlapping places on a noisy background. A mark is a 2x2 block of coloured squares
(``cell`` pixels each) from a 6-colour palette. One mark is the identity's own (the same colours
in every image of that identity, each square's colour jittered a little); the others are
random marks drawn per image. The keypoints (3: the mark's top-left, top-right and bottom-centre
corners) point at the identity's mark, and nothing in the pixels tells it apart from the
decoys. So:

- a model that reads only pixels sees an unordered bag of marks, of which one is shared by two
  images of a person (it can still match bags, but weakly, and worse with more decoys);
- a model that reads the keypoints can attend to the one mark that is the identity, wherever it
  is (positions are uniform, so absolute position embeddings carry nothing).

KP-RPE should beat iRPE, APE and the other encodings here if its keypoint pathway works; the
landmark-aligned ViT (``ape_aligned``) also reads the keypoints (it warps the identity mark onto
its template) and is the other expected winner. If KP-RPE does not win here, that is a finding
about the implementation (or the head: see ``models.vit`` on the CLS head).

Layout: the folder-per-identity tree of ``datasets.folder`` (``<root>/<identity>/<n>.png``) and
``<root>/keypoints.csv`` (header ``path,mark_tl_x,...``), so ``--dataset folder:<root>`` reads it
with its documented protocol (half the identities to train, one query per test identity).
Written through ``writer.SynthWriter`` (never touches files it did not write); deterministic in
``seed``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from reidbench.datasets.keypoints import KEYPOINTS_FILE, keypoints_csv_text
from reidbench.synthetic.writer import SynthWriter

log = logging.getLogger(__name__)

GENERATOR_NAME = "reidbench-keypoint-control"
VERSION = 1
KEYPOINT_NAMES = ("mark_tl", "mark_tr", "mark_bottom")  # no left/right pairs: flips swap nothing
PALETTE = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [235, 220, 50], [220, 60, 220],
                    [60, 220, 220]], dtype=np.float64)


def identity_marks(num_ids: int, rng: np.random.Generator) -> np.ndarray:
    """(num_ids, 4) distinct palette indices (a 2x2 mark, row-major) per identity."""
    codes = rng.choice(len(PALETTE) ** 4, size=num_ids, replace=False)
    return np.stack([(codes // len(PALETTE) ** k) % len(PALETTE) for k in range(4)], axis=1)


def place(
    rng: np.random.Generator, count: int, size: int, side: int, spread: int | None = None,
) -> list[tuple[int, int]]:
    """``count`` non-overlapping top-left corners of ``side`` squares in a ``size`` canvas
    (1-pixel margin between them); rejection sampling with a fixed number of tries. ``spread``:
    the first square's centre is the canvas centre moved by up to +-spread pixels per axis
    (uniform); None: anywhere, like the others."""
    corners: list[tuple[int, int]] = []
    for _ in range(1000):
        if len(corners) == count:
            break
        if spread is not None and not corners:
            lo = size // 2 - side // 2 - spread
            x, y = (int(v) for v in rng.integers(max(lo, 1), min(lo + 2 * spread, size - side - 1) + 1,
                                                  size=2))
        else:
            x, y = (int(v) for v in rng.integers(1, size - side, size=2))
        if all(abs(x - a) > side or abs(y - b) > side for a, b in corners):
            corners.append((x, y))
    if len(corners) < count:
        raise ValueError(f"cannot place {count} marks of {side} px in {size} px; use fewer or smaller")
    return corners


def render(
    mark: np.ndarray, rng: np.random.Generator, size: int, cell: int, patterns: int,
    spread: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 with the identity ``mark`` (within ``spread`` pixels of
    the centre, or anywhere) and ``patterns - 1`` decoys, and its (3, 2) normalised keypoints
    on the identity mark."""
    side = 2 * cell
    image = rng.normal(60.0, 18.0, (size, size, 3))
    corners = place(rng, patterns, size, side, spread)
    marks = [mark, *rng.integers(0, len(PALETTE), size=(patterns - 1, 4))]
    for (x, y), code in zip(corners, marks):
        for k, colour in enumerate(code):
            r, c = divmod(k, 2)
            jitter = rng.normal(0.0, 12.0, 3)
            image[y + r * cell:y + (r + 1) * cell, x + c * cell:x + (c + 1) * cell] = PALETTE[colour] + jitter
    x, y = corners[0]
    kps = np.array([[x, y], [x + side, y], [x + side / 2.0, y + side]], dtype=np.float64) / size
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), kps.astype(np.float32)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def generate_keypoint_control(
    root: Path, num_ids: int = 120, images_per_id: int = 8, seed: int = 0, size: int = 64,
    cell: int = 6, patterns: int = 5, spread: int | None = None,
) -> dict[str, Any]:
    """Write the set into ``root`` (see the module docstring); returns its manifest.
    ``spread``: the identity mark's centre stays within +-spread pixels of the image centre per
    axis (the face-like case: a part that moves a little); None: anywhere."""
    if num_ids < 6 or images_per_id < 2:
        raise ValueError(f"need >= 6 identities of >= 2 images, got {num_ids} x {images_per_id}")
    ids_rng, *image_seeds = np.random.SeedSequence(seed).spawn(1 + num_ids)
    marks = identity_marks(num_ids, np.random.default_rng(ids_rng))
    rels = [f"{i:04d}/{n:02d}.png" for i in range(num_ids) for n in range(images_per_id)]
    writer = SynthWriter(Path(root), GENERATOR_NAME)
    writer.begin([*rels, KEYPOINTS_FILE])
    rows = {}
    for i in range(num_ids):
        rng = np.random.default_rng(image_seeds[i])
        for n in range(images_per_id):
            image, kps = render(marks[i], rng, size, cell, patterns, spread)
            rel = f"{i:04d}/{n:02d}.png"
            writer.write(rel, _png(image))
            rows[rel] = kps
    writer.write(KEYPOINTS_FILE, keypoints_csv_text(rows, KEYPOINT_NAMES).encode("utf-8"))
    manifest = writer.finish({"generator": GENERATOR_NAME, "version": VERSION, "seed": seed,
                              "num_ids": num_ids, "images_per_id": images_per_id, "size": size,
                              "cell": cell, "patterns": patterns, "spread": spread})
    log.info("keypoint control: %d identities x %d images in %s", num_ids, images_per_id, root)
    return manifest
