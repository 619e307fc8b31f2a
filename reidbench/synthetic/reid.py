"""A synthetic person re-ID set written in the exact Market-1501 on-disk layout.

``generate_synthetic_reid(root)`` draws cartoon pedestrians whose identity lives in appearance
placed relative to the body (clothing colours and pattern, proportions, hair, skin, accessory)
and writes them as 64x128 JPEG crops named like Market-1501
(``PPPP_cCsS_FFFFFF_BB.jpg``; junk ``-1_...``) into ``bounding_box_train/``,
``bounding_box_test/`` and ``query/``, plus a ``keypoints.csv`` sidecar with the 10
``BODY_KEYPOINTS`` of every non-junk image and a ``manifest.json`` written last.

The images are drawn by ``reid_render`` (a person in a canonical body frame placed into the
crop by one affine matrix moving image and keypoints together; six cameras; per-image pose, view,
placement and lighting); this module plans which image goes where under which name and writes
the set through the overwrite-safe ``writer.SynthWriter``.

All randomness comes from ``np.random.SeedSequence(seed).spawn(...)`` streams: one per identity,
camera, distractor, junk image and image, so an identity's attributes depend only on
``(seed, pid)`` and the same seed writes byte-identical files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidbench.data.records import BODY_KEYPOINTS
from reidbench.datasets.base import DISTRACTOR_PID, JUNK_PID
from reidbench.datasets.keypoints import keypoints_csv_text
from reidbench.errors import ConfigError
from reidbench.synthetic.reid_params import (
    NUM_CAMERAS,
    Camera,
    Identity,
    sample_camera,
    sample_identity,
)
from reidbench.synthetic.reid_render import render_image
from reidbench.synthetic.writer import SynthWriter

logger = logging.getLogger(__name__)

SYNTHETIC_REID_VERSION = 1
DEFAULT_IDS = 300
GENERATOR_NAME = "synthetic-reid"
SPLITS = ("bounding_box_train", "bounding_box_test", "query")
KEYPOINTS_FILE = "keypoints.csv"

# --------------------------------------------------------------------------------------------
# The dataset plan: which image goes where under which name


@dataclass(frozen=True, eq=False)
class _Job:
    rel: str  # path relative to the root, forward slashes
    kind: str  # "person", "faint" (distractor), "partial" / "background" (junk)
    identity: Identity  # the person drawn (a random stranger for distractors and junk)
    camera: int  # 0-based
    seed: np.random.SeedSequence


def _name(pid: int, cam: int, seq: int, frame: int, bbox: int) -> str:
    prefix = str(pid) if pid == JUNK_PID else f"{pid:04d}"
    return f"{prefix}_c{cam}s{seq}_{frame:06d}_{bbox:02d}.jpg"


def _unique_name(used: set[str], pid: int, rng: np.random.Generator) -> tuple[str, int]:
    """A random plausible name for a distractor/junk image, its frame bumped until unused."""
    cam, seq = int(rng.integers(1, NUM_CAMERAS + 1)), int(rng.integers(1, 7))
    frame, bbox = int(rng.integers(100, 250000)), int(rng.integers(1, 9))
    while _name(pid, cam, seq, frame, bbox) in used:
        frame += 1
    name = _name(pid, cam, seq, frame, bbox)
    used.add(name)
    return name, cam - 1


def _plan(seed: int, num_ids: int) -> tuple[list[_Job], list[Camera]]:
    root_ss = np.random.SeedSequence(seed)
    split_ss, identity_root, camera_root, distractor_root, junk_root = root_ss.spawn(5)
    cameras = [sample_camera(np.random.default_rng(ss), i + 1)
               for i, ss in enumerate(camera_root.spawn(NUM_CAMERAS))]

    pids = np.arange(1, num_ids + 1)
    shuffled = np.random.default_rng(split_ss).permutation(pids)
    train_pids = {int(p) for p in shuffled[: num_ids // 2]}

    jobs: list[_Job] = []
    used: set[str] = set()
    same_camera_gallery = 0  # gallery images sharing a query's pid and camera, so far
    for pid, identity_ss in zip(pids.tolist(), identity_root.spawn(num_ids)):
        attr_ss, plan_ss, image_root = identity_ss.spawn(3)
        identity = sample_identity(np.random.default_rng(attr_ss))
        rng = np.random.default_rng(plan_ss)
        num_cams = int(rng.integers(2, 5))
        cams = sorted(int(c) for c in rng.choice(NUM_CAMERAS, size=num_cams, replace=False))
        counts = [int(rng.integers(1, 4)) for _ in cams]
        is_train = pid in train_pids
        query_cams: set[int] = set()
        if not is_train:
            # Up to 2 query cameras, always leaving one gallery-only camera (cross-camera match).
            num_query = min(2, num_cams - 1)
            query_cams = {int(c) for c in rng.choice(cams, size=num_query, replace=False)}
            if same_camera_gallery == 0 and all(counts[cams.index(c)] == 1 for c in query_cams):
                counts[cams.index(min(query_cams))] = 2  # Market has same-camera matches
        image_ss = iter(image_root.spawn(sum(counts)))
        for cam, count in zip(cams, counts):
            seq = int(rng.integers(1, 7))
            frame = int(rng.integers(100, 200000))
            query_index = int(rng.integers(count)) if cam in query_cams else -1
            if query_index >= 0 and count > 1:
                same_camera_gallery += count - 1
            for k in range(count):
                frame += int(rng.integers(5, 90))
                name = _name(pid, cam + 1, seq, frame, int(rng.integers(1, 7)))
                split = "bounding_box_train" if is_train else (
                    "query" if k == query_index else "bounding_box_test"
                )
                jobs.append(_Job(f"{split}/{name}", "person", identity, cam, next(image_ss)))
                used.add(name)

    # gallery-only strangers: (pid, seed root, count, kind drawn with probability p, else other)
    strangers = (
        (DISTRACTOR_PID, distractor_root, num_ids / 3, "faint", 0.4, "person"),
        (JUNK_PID, junk_root, num_ids / 6, "partial", 0.6, "background"),
    )
    for pid, seed_root, count, kind_p, p, kind_else in strangers:
        for ss in seed_root.spawn(max(1, round(count))):
            rng = np.random.default_rng(ss)
            kind = kind_p if rng.random() < p else kind_else
            stranger = sample_identity(rng)
            name, cam = _unique_name(used, pid, rng)
            jobs.append(_Job(f"bounding_box_test/{name}", kind, stranger, cam, ss.spawn(1)[0]))
    jobs.sort(key=lambda job: job.rel)
    return jobs, cameras


def _render_job(job: _Job, camera: Camera) -> tuple[bytes, np.ndarray | None]:
    """JPEG bytes and (10, 2) normalised keypoints (None for junk) of one planned image."""
    return render_image(job.kind, job.identity, camera, job.seed)


# --------------------------------------------------------------------------------------------
# Writing


def _planned_files(jobs: list[_Job]) -> list[str]:
    return [job.rel for job in jobs] + [KEYPOINTS_FILE]


def legacy_files(manifest: dict) -> list[str]:
    """The files an older generator (manifest without ``files``) wrote for ``manifest``'s seed
    and size: the plan depends on nothing else (``writer``)."""
    jobs, _ = _plan(int(manifest["seed"]), int(manifest["num_ids"]))
    return _planned_files(jobs)


def generate_synthetic_reid(root: Path, seed: int = 0, num_ids: int = DEFAULT_IDS) -> dict:
    """Write the synthetic re-ID set to ``root`` in the Market-1501 layout; return its manifest.

    Identities 1..num_ids are split in half (seeded shuffle) into train and test. Each appears
    in 2-4 of the 6 cameras with 1-3 images per camera. A test identity has one query image in
    each of up to two cameras (never all of its cameras, so every query has a gallery match in
    another camera); its other images are gallery images. ``bounding_box_test`` also holds about
    num_ids/3 distractors (pid 0) and num_ids/6 junk images (pid -1, no keypoints). Images are
    written first, then ``keypoints.csv``, then ``manifest.json``: a manifest means a complete
    set. An existing synthetic set in ``root`` is replaced, through ``writer.SynthWriter``:
    only files this generator wrote are deleted or overwritten, anything else is kept, and a
    folder that may hold real data is refused.

    Args:
        root: dataset folder; created if missing.
        seed: everything (identities, cameras, split, images) derives from it.
        num_ids: number of identities, 2..9999.

    Returns:
        ``{"generator", "version", "seed", "num_ids", "counts": {split folder: images},
        "files": {relative path: sha256}}``.
    """
    if not 2 <= num_ids <= 9999:
        raise ConfigError(f"num_ids must be in 2..9999 (4-digit Market pids), got {num_ids}")
    root = Path(root)
    start = time.perf_counter()
    jobs, cameras = _plan(seed, num_ids)
    writer = SynthWriter(root, GENERATOR_NAME, legacy_files)
    writer.begin(_planned_files(jobs))
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
    rows: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(SPLITS, 0)
    for job in jobs:
        data, keypoints = _render_job(job, cameras[job.camera])
        writer.write(job.rel, data)
        counts[job.rel.split("/", 1)[0]] += 1
        if keypoints is not None:
            rows[job.rel] = keypoints
    writer.write(KEYPOINTS_FILE, keypoints_csv_text(rows, BODY_KEYPOINTS.names).encode("utf-8"))
    manifest = writer.finish({
        "generator": GENERATOR_NAME,
        "version": SYNTHETIC_REID_VERSION,
        "seed": seed,
        "num_ids": num_ids,
        "counts": counts,
    })
    logger.info("synthetic-reid: wrote %d images (%s) to %s in %.1fs", len(jobs), counts, root,
                time.perf_counter() - start)
    return manifest
