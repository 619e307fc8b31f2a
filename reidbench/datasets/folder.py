"""Folder-per-identity collections (``<root>/<identity>/<image>``), as face training sets and
ORL are stored, and the ``folder:<path>`` dataset built from any such collection.

The ``folder`` protocol (seeded by ``seed``, default 0; fixed numbers below):

- identities are the sub-folders holding at least one image (.jpg .jpeg .png .pgm .bmp), in
  sorted order; ``pid`` is that index. Images are sorted by path.
- a seeded permutation puts ``floor(P / 2)`` identities in train (pids relabelled 0..P'-1 in
  sorted order, camera 0) and the rest in test;
- identification: each test identity with two or more images gives one query (a seeded choice,
  camera 0); its other images, and identities with a single image, form the gallery (camera
  1, so the standard protocol, which drops same-camera matches, keeps every true match);
- verification: test identities are dealt round-robin (in seeded order) into
  ``min(10, T // 2)`` identity-disjoint folds; every fold gets the same number n of matched and
  of mismatched image pairs, n = min(300, the fewest matched or mismatched pairs any fold can
  hold), drawn uniformly without repetition, matched first, as LFW's ``pairs.txt``.

A keypoint sidecar (``<root>/keypoints.csv`` or an explicit file) is keyed by paths relative to
the root. When its header names the five ArcFace landmarks (``left_eye_x,...,right_mouth_y``),
faces are aligned onto the ArcFace template like LFW.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from reidbench.config import DataConfig
from reidbench.datasets.base import (
    FACE_KEYPOINTS,
    FaceAlign,
    ImageRecord,
    ReidSplit,
    VerificationSet,
)
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.keypoints import KeypointMatcher, load_sidecar
from reidbench.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".bmp")
MAX_FOLDS = 10
PAIRS_PER_FOLD = 300
FOLDER_ALIGN = FaceAlign(size=112, center_fraction=1.0)
EXPECTED_TREE = "<root>/<identity>/<image>.{jpg,jpeg,png,pgm,bmp}, one sub-folder per identity"


def read_identity_folders(
    folder: Path,
    rel_root: Path,
    keypoints: KeypointMatcher | None = None,
) -> list[ImageRecord]:
    """Every image under ``folder/<identity>/``, sorted; pid = index of the identity folder in
    sorted order among those holding images; camid 0. Keypoints are looked up by the path
    relative to ``rel_root``."""
    if not folder.is_dir():
        raise DatasetError(f"{folder} not found: expected {EXPECTED_TREE}")
    records: list[ImageRecord] = []
    pid = 0
    for identity in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in identity.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            rel = path.relative_to(rel_root).as_posix()
            kps = keypoints.lookup(path, rel) if keypoints is not None else None
            records.append(ImageRecord(str(path), pid, 0, kps))
        pid += bool(files)
    if not records:
        raise DatasetError(
            f"{folder} holds no images in <identity>/ subfolders "
            f"(looked for {', '.join(IMAGE_SUFFIXES)}); expected {EXPECTED_TREE}"
        )
    return records


def _sample_pairs(
    rng: np.random.Generator,
    groups: list[np.ndarray],
    n: int,
    matched: bool,
) -> list[tuple[int, int]]:
    """``n`` distinct unordered pairs of record indices, uniformly: within one group (matched)
    or across two groups (mismatched). The caller guarantees that many exist."""
    sizes = np.array([len(g) for g in groups])
    flat = np.concatenate(groups)
    owner = np.repeat(np.arange(len(groups)), sizes)
    weights = sizes * (sizes - 1) / 2.0
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:
        if matched:
            g = groups[rng.choice(len(groups), p=weights / weights.sum())]
            a, b = rng.choice(len(g), size=2, replace=False)
            i, j = int(g[a]), int(g[b])
        else:
            a, b = rng.integers(0, len(flat), size=2)
            if owner[a] == owner[b]:
                continue
            i, j = int(flat[a]), int(flat[b])
        pair = (min(i, j), max(i, j))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def verification_pairs(
    records: list[ImageRecord],
    test_pids: list[int],
    rng: np.random.Generator,
    max_folds: int = MAX_FOLDS,
    pairs_per_fold: int = PAIRS_PER_FOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(pairs, labels, folds) over ``records`` (the module docstring's protocol), or None when
    the test identities cannot fill one fold with matched and mismatched pairs."""
    num_folds = min(max_folds, len(test_pids) // 2)
    if num_folds < 1:
        return None
    by_pid: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_pid.setdefault(r.pid, []).append(i)
    order = [test_pids[k] for k in rng.permutation(len(test_pids))]
    folds = [[np.array(by_pid[pid]) for pid in order[f::num_folds]] for f in range(num_folds)]
    sizes = [np.array([len(g) for g in fold]) for fold in folds]
    n_matched = [int((s * (s - 1) // 2).sum()) for s in sizes]
    n_mismatched = [int((s.sum() ** 2 - (s**2).sum()) // 2) for s in sizes]
    n = min(pairs_per_fold, *n_matched, *n_mismatched)
    if n < 1:
        return None
    pairs, labels, fold_ids = [], [], []
    for f, fold in enumerate(folds):
        for matched in (True, False):
            pairs += _sample_pairs(rng, fold, n, matched)
            labels += [int(matched)] * n
            fold_ids += [f] * n
    return (
        np.array(pairs, dtype=np.int64),
        np.array(labels, dtype=np.int64),
        np.array(fold_ids, dtype=np.int64),
    )


def read_folder_dataset(
    root: Path,
    keypoints_csv: Path | None = None,
    seed: int = 0,
    name: str = "folder",
) -> ReidSplit:
    """A folder-per-identity collection as a ReidSplit (train / query / gallery) whose
    ``verification`` holds the 10-fold pairs of the test images (module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"{name}: {root} does not exist. Expected tree: {EXPECTED_TREE}. Any collection in "
            "this layout works (e.g. ../shared/data/orl_faces); reidbench never downloads data."
        )
    table, schema = load_sidecar(name, root, keypoints_csv, None)
    align = FOLDER_ALIGN if schema is not None and schema.names == FACE_KEYPOINTS.names else None
    matcher = KeypointMatcher(name, table, (root,))
    records = [replace(r, align=align) for r in read_identity_folders(root, root, matcher)]
    report = matcher.finish()
    identities = sorted({Path(r.path).parent.name for r in records})
    num_ids = len(identities)
    if num_ids < 3:
        raise DatasetError(
            f"{name}: {root} has {num_ids} identities; the folder protocol needs "
            "at least 3 (one to train on, two to test)"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_ids)
    train_pids = sorted(int(p) for p in perm[: num_ids // 2])
    test_pids = sorted(int(p) for p in perm[num_ids // 2 :])
    label = {pid: i for i, pid in enumerate(train_pids)}
    train = [replace(r, pid=label[r.pid]) for r in records if r.pid in label]
    test = [r for r in records if r.pid not in label]
    by_pid: dict[int, list[int]] = {}
    for i, r in enumerate(test):
        by_pid.setdefault(r.pid, []).append(i)
    queries = {idx[int(rng.integers(len(idx)))] for idx in by_pid.values() if len(idx) > 1}
    query = [replace(r, camid=0) for i, r in enumerate(test) if i in queries]
    gallery = [replace(r, camid=1) for i, r in enumerate(test) if i not in queries]
    if not query:
        raise DatasetError(
            f"{name}: no test identity in {root} has two images; identification "
            "needs a query and a gallery image of one person"
        )
    verification = None
    made = verification_pairs(test, test_pids, rng)
    if made is None:
        log.warning("%s: too few test identities with two images for verification pairs", name)
    else:
        verification = VerificationSet(name, root, test, identities, *made, schema, report)
    log.info(
        "%s: %d identities (%d train, %d test), %d train / %d query / %d gallery images",
        name,
        num_ids,
        len(train_pids),
        len(test_pids),
        len(train),
        len(query),
        len(gallery),
    )
    return ReidSplit(name, root, train, query, gallery, schema, verification, report)


@register_dataset(
    DatasetInfo(
        "folder",
        "reid+pairs",
        EXPECTED_TREE + " (as folder:<path>, or folder with --data-root)",
        "any local collection, e.g. ../shared/data/orl_faces (documented split, datasets/folder/README.md)",
    )
)
def _folder(cfg: DataConfig, path: str | None = None) -> ReidSplit:
    """``folder`` with ``--data-root``, or ``folder:<path>`` (``catalog.dataset_builder``)."""
    root = Path(path).expanduser() if path else data_root(cfg.root)
    return read_folder_dataset(root, keypoints_path(cfg), name=cfg.name)
