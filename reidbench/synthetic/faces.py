"""Synthetic faces written in the LFW layout, with 5-point ArcFace landmarks.

The generator writes exactly what the LFW reader expects (``lfw/<Name>/<Name>_0001.jpg`` and
the original tab-separated ``pairs.txt``) plus ``landmarks.csv`` and ``manifest.json``, so the
same adapter reads real and synthetic data (DESIGN.md, "Data contracts").

Who the people are and how each image varies is drawn in ``faces_params``, the images are drawn
by ``faces_render`` (one random similarity moves image and landmarks together, so the recorded
landmarks are exactly where the warped face features are); this module plans the people, their
images and the pairs, and writes the set through the overwrite-safe ``writer.SynthWriter``.

Randomness comes only from ``np.random.SeedSequence(seed)`` spawned per identity and per
image: the same seed writes byte-identical files, and identity ``i`` looks the same whatever
``num_ids`` is.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidbench.data.records import FACE_KEYPOINTS
from reidbench.datasets.keypoints import keypoints_csv_text
from reidbench.errors import ConfigError
from reidbench.synthetic.faces_params import (
    IMAGE_SIZE,
    FaceIdentity,
    sample_identity,
    sample_name,
    sample_view,
)
from reidbench.synthetic.faces_render import render_face
from reidbench.synthetic.writer import SynthWriter

logger = logging.getLogger(__name__)

SYNTHETIC_FACES_VERSION = 2  # 2: adds the train/ identities
DEFAULT_IDS = 200
DEFAULT_TRAIN_IDS = 300  # disjoint training identities written to train/<Name>/
GENERATOR_NAME = "synthetic-faces"
JPEG_QUALITY = 92

# --------------------------------------------------------------------------------------------
# the data set


def _images_per_identity(rng: np.random.Generator) -> int:
    """A long tail like LFW's, but enough images per person to train on (mean ~4.9)."""
    p = np.array([0.05, 0.10, 0.13, 0.15, 0.16, 0.15, 0.14, 0.12])
    return int(rng.choice(np.arange(1, 9), p=p))


def _train_images_per_identity(rng: np.random.Generator) -> int:
    """Training identities get 4-10 images, as face training sets have several per person."""
    return int(rng.integers(4, 11))


@dataclass(frozen=True, eq=False)
class _Person:
    """One planned identity: who, where, how many images and the seed of those images."""

    split: str  # "lfw" or "train"
    identity: FaceIdentity
    count: int
    images_seq: np.random.SeedSequence

    def files(self) -> list[str]:
        name = self.identity.name
        return [f"{self.split}/{name}/{name}_{k:04d}.jpg" for k in range(1, self.count + 1)]


def _plan_identity(
    split: str, id_seq: np.random.SeedSequence, taken: set[str],
    images_per_identity: Callable[[np.random.Generator], int],
) -> _Person:
    """Draw one person (unique name), their look and their number of images."""
    look_seq, images_seq = id_seq.spawn(2)
    rng = np.random.default_rng(look_seq)
    name = sample_name(rng)
    while name in taken:
        name = sample_name(rng)
    taken.add(name)
    identity = sample_identity(rng, name)
    return _Person(split, identity, images_per_identity(rng), images_seq)


def _plan(
    seed: int, num_ids: int, num_train_ids: int
) -> tuple[list[_Person], list[_Person], np.random.SeedSequence]:
    """The verification people, the training people (drawn after them, so names never repeat)
    and the seed of the pairs; no image is rendered."""
    # the third child leaves the first two (and so the LFW part) as in version 1
    ids_seq, pairs_seq, train_seq = np.random.SeedSequence(seed).spawn(3)
    taken: set[str] = set()
    people = [_plan_identity("lfw", s, taken, _images_per_identity) for s in ids_seq.spawn(num_ids)]
    train = [
        _plan_identity("train", s, taken, _train_images_per_identity)
        for s in train_seq.spawn(num_train_ids)
    ]
    return people, train, pairs_seq


def _render_person(person: _Person, writer: SynthWriter, landmarks: dict[str, np.ndarray]) -> None:
    """Render and write one planned person's images; their landmarks go to ``landmarks``."""
    for rel, img_seq in zip(person.files(), person.images_seq.spawn(person.count)):
        view = sample_view(person.identity, np.random.default_rng(img_seq))
        image, kps = render_face(person.identity, view)
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="JPEG", quality=JPEG_QUALITY)
        writer.write(rel, out.getvalue())
        landmarks[rel] = kps


_FIXED_FILES = ("pairs.txt", "landmarks.csv")


def legacy_files(manifest: dict) -> list[str]:
    """The files an older generator (manifest without ``files``) wrote for ``manifest``'s seed
    and sizes (version 1 had no train/): the plan depends on nothing else (``writer``)."""
    counts = manifest.get("counts", {})
    num_train = int(counts.get("num_train_ids", 0)) if int(manifest["version"]) >= 2 else 0
    people, train, _ = _plan(int(manifest["seed"]), int(manifest["num_ids"]), num_train)
    return [rel for person in people + train for rel in person.files()] + list(_FIXED_FILES)


def _make_pairs(
    names: list[str], counts: list[int], folds: int, per_fold: int, rng: np.random.Generator
) -> list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]]:
    """Identity-disjoint folds, each with ``per_fold`` matched and mismatched pairs.

    Identities are dealt to folds greedily (most same-person pairs first, random tie order; a
    fold with fewer than two people first) so every fold can hold its matched and mismatched
    pairs. Image numbers are 1-based, as in pairs.txt.
    """
    order = rng.permutation(len(names))
    capacity = [counts[i] * (counts[i] - 1) // 2 for i in range(len(names))]
    order = sorted(order, key=lambda i: -capacity[i])  # stable: random among equals
    members: list[list[int]] = [[] for _ in range(folds)]
    fold_capacity = [0] * folds
    for i in order:
        f = min(range(folds), key=lambda k: (len(members[k]) >= 2, fold_capacity[k]))
        members[f].append(i)
        fold_capacity[f] += capacity[i]
    out = []
    for f, ids in enumerate(members):
        if fold_capacity[f] < per_fold or len(ids) < 2:
            raise ConfigError(
                f"synthetic-faces: fold {f} has {len(ids)} identities and {fold_capacity[f]} "
                f"possible same-person pairs, fewer than pairs_per_fold={per_fold}; raise "
                f"num_ids (now {len(names)}) or lower folds / pairs_per_fold"
            )
        sizes = np.array([counts[i] for i in ids])
        cross = (int(sizes.sum()) ** 2 - int((sizes**2).sum())) // 2
        if cross < per_fold:
            raise ConfigError(
                f"synthetic-faces: fold {f} allows only {cross} different-person pairs, fewer "
                f"than pairs_per_fold={per_fold}; raise num_ids or lower folds / pairs_per_fold"
            )
        ids = sorted(ids, key=lambda i: names[i])
        candidates = [
            (names[i], a, b)
            for i in ids
            for a in range(1, counts[i] + 1)
            for b in range(a + 1, counts[i] + 1)
        ]
        pick = rng.choice(len(candidates), size=per_fold, replace=False)
        matched = sorted(candidates[k] for k in pick)
        seen: set[tuple[str, int, str, int]] = set()
        while len(seen) < per_fold:
            i, j = rng.choice(ids, size=2, replace=False)
            if names[i] > names[j]:
                i, j = j, i
            seen.add(
                (names[i], int(rng.integers(1, counts[i] + 1)),
                 names[j], int(rng.integers(1, counts[j] + 1)))
            )
        out.append((matched, sorted(seen)))
    return out


def _pairs_text(
    blocks: list[tuple[list[tuple[str, int, int]], list[tuple[str, int, str, int]]]], n: int
) -> str:
    lines = [f"{len(blocks)}\t{n}"]
    for matched, mismatched in blocks:
        lines.extend("\t".join(str(v) for v in row) for row in matched)
        lines.extend("\t".join(str(v) for v in row) for row in mismatched)
    return "\n".join(lines) + "\n"


def generate_synthetic_faces(
    root: Path, seed: int = 0, num_ids: int = DEFAULT_IDS, folds: int = 10,
    pairs_per_fold: int = 30, num_train_ids: int = DEFAULT_TRAIN_IDS,
) -> dict:
    """Write a synthetic face verification set in the LFW layout under ``root``.

    Writes ``lfw/<Name>/<Name>_NNNN.jpg`` (112x112 RGB), ``pairs.txt`` (original LFW format,
    ``folds`` identity-disjoint folds of ``pairs_per_fold`` matched then ``pairs_per_fold``
    mismatched lines), ``landmarks.csv`` (5 ArcFace points per image, normalised) and, last,
    ``manifest.json``. Beside the LFW part it writes a training set of ``num_train_ids`` other
    people in the folder-per-identity layout of face training sets (CASIA-WebFace style),
    ``train/<Name>/<Name>_NNNN.jpg``, 4-10 images each, landmarks in the same CSV; no training
    identity appears in ``lfw/``. An existing synthetic set at ``root`` is replaced through
    ``writer.SynthWriter``: only files this generator wrote are deleted or overwritten,
    anything else is kept, and a folder that may hold real LFW is refused. Returns the manifest
    (with ``files``: every file written and its SHA-256).
    """
    if folds < 1 or pairs_per_fold < 1 or num_ids < 2 * folds:
        raise ConfigError(
            f"synthetic-faces: need folds >= 1, pairs_per_fold >= 1 and num_ids >= 2 * folds "
            f"(two people per fold at least); got num_ids={num_ids}, folds={folds}, "
            f"pairs_per_fold={pairs_per_fold}"
        )
    start = time.perf_counter()
    root = Path(root)
    people, train, pairs_seq = _plan(seed, num_ids, num_train_ids)
    names = [person.identity.name for person in people]
    counts = [person.count for person in people]
    blocks = _make_pairs(names, counts, folds, pairs_per_fold, np.random.default_rng(pairs_seq))
    writer = SynthWriter(root, GENERATOR_NAME, legacy_files)
    writer.begin([rel for person in people + train for rel in person.files()] + list(_FIXED_FILES))
    landmarks: dict[str, np.ndarray] = {}
    for person in people + train:
        _render_person(person, writer, landmarks)
    writer.write("pairs.txt", _pairs_text(blocks, pairs_per_fold).encode("utf-8"))
    writer.write("landmarks.csv", keypoints_csv_text(landmarks, FACE_KEYPOINTS.names).encode("utf-8"))
    train_counts = [person.count for person in train]
    manifest = writer.finish({
        "generator": GENERATOR_NAME,
        "version": SYNTHETIC_FACES_VERSION,
        "seed": seed,
        "num_ids": num_ids,
        "counts": {
            "identities": num_ids,
            "images": int(sum(counts)),
            "single_image_identities": int(sum(c == 1 for c in counts)),
            "folds": folds,
            "pairs_per_fold": pairs_per_fold,
            "matched_pairs": folds * pairs_per_fold,
            "mismatched_pairs": folds * pairs_per_fold,
            "pairs": 2 * folds * pairs_per_fold,
            "train_identities": num_train_ids,
            "num_train_ids": num_train_ids,
            "train_images": int(sum(train_counts)),
        },
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "landmarks": list(FACE_KEYPOINTS.names),
    })
    logger.info(
        "synthetic-faces: %d identities, %d images, %d pairs written to %s in %.1f s",
        num_ids, sum(counts), 2 * folds * pairs_per_fold, root, time.perf_counter() - start,
    )
    return manifest
