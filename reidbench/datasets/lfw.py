"""Labeled Faces in the Wild (LFW) and every set in its layout (synthetic faces included).

Reference: Huang, Ramesh, Berg and Learned-Miller, "Labeled Faces in the Wild: A Database for
Studying Face Recognition in Unconstrained Environments", UMass Amherst TR 07-49, 2007.
URL: http://vis-www.cs.umass.edu/lfw/ (not downloaded by reidbench).
Statistics: 13,233 images of 5,749 people (1,680 with two or more images); View 2's
``pairs.txt`` holds 6,000 pairs in 10 subject-disjoint folds of 300 matched and 300 mismatched.

Layout::

    <root>/lfw/<Name>/<Name>_0001.jpg
    <root>/pairs.txt
    <root>/landmarks.csv        optional: 5 ArcFace landmarks per image, normalised to [0, 1]

``pairs.txt`` is read exactly as the original: a header ``folds<TAB>n`` (or just ``n`` for the
one-fold ``pairsDevTrain.txt`` / ``pairsDevTest.txt``), then per fold ``n`` matched lines
``name<TAB>i<TAB>j`` followed by ``n`` mismatched lines ``name1<TAB>i<TAB>name2<TAB>j``, with
1-based image numbers. Every malformed line is an error naming the file and line. Evaluation
follows the 10-fold protocol: the threshold is chosen on nine folds and tested on the tenth.

Alignment (``reidbench.data.alignment``): every record carries ``LFW_ALIGN``. With 5
landmarks the face is mapped onto insightface's ArcFace 112x112 template; without them the
central square of 0.6 x the shorter side (150 x 150 px of a 250 x 250 LFW image, which LFW
centres on the detected face) is resized to 112 x 112.

LFW has no training split. A ``train/<Name>/<image>`` folder beside ``lfw/`` (as the synthetic
face set writes) supplies training identities; then ``read_lfw_split`` returns a FaceSplit
that ``reidbench run`` can train on, otherwise the VerificationSet alone.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reidbench.config import DataConfig
from reidbench.datasets.base import (
    FACE_KEYPOINTS,
    FaceAlign,
    FaceSplit,
    ImageRecord,
    KeypointSchema,
    VerificationSet,
)
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.folder import read_identity_folders
from reidbench.datasets.keypoints import KeypointMatcher, KeypointTable, read_keypoints_table, table_schema
from reidbench.datasets.textio import read_text
from reidbench.errors import DataNotFound, DatasetError

logger = logging.getLogger(__name__)

IMAGES_DIR = "lfw"
IMAGE_DIR_NAMES = (IMAGES_DIR, "lfw-deepfunneled", "lfw_funneled", "lfw-funneled")
PAIRS_FILE = "pairs.txt"
LANDMARKS_FILE = "landmarks.csv"
TRAIN_DIR = "train"
LFW_ALIGN = FaceAlign(size=112, center_fraction=0.6)
URL = "http://vis-www.cs.umass.edu/lfw/"
EXPECTED_TREE = (
    f"<root>/{IMAGES_DIR}/<Name>/<Name>_0001.jpg, <root>/{PAIRS_FILE}; optional "
    f"<root>/{LANDMARKS_FILE}, <root>/{TRAIN_DIR}/<Name>/<image>"
)
HOW_TO_GET = f"The data comes from {URL}; reidbench never downloads it."

# Published statistics of the full LFW (View 2).
PUBLISHED_STATS = {"images": 13233, "identities": 5749, "pairs": 6000, "folds": 10}


def find_lfw_root(root: Path) -> tuple[Path, Path]:
    """Return ``(data_root, images_dir)`` for ``root``.

    Accepts the folder holding an image folder (``lfw/``, ``lfw-deepfunneled/``, ...) and
    ``pairs.txt``, a data root holding that folder as ``lfw/``, or the image folder itself (any
    name) with ``pairs.txt`` beside it in its parent.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFound(
            f"lfw: data root {root} does not exist. Expected tree: {EXPECTED_TREE}. {HOW_TO_GET}"
        )
    for base in (root, root / IMAGES_DIR):
        images = next((base / n for n in IMAGE_DIR_NAMES if (base / n).is_dir()), None)
        if images is not None and (base / PAIRS_FILE).is_file():
            return base, images
    if (root.parent / PAIRS_FILE).is_file() and root.name != TRAIN_DIR:
        return root.parent, root
    if any((root / n).is_dir() for n in IMAGE_DIR_NAMES):
        raise DatasetError(
            f"lfw: {root / PAIRS_FILE} does not exist (nor {root / IMAGES_DIR / PAIRS_FILE}). "
            f"Expected tree: {EXPECTED_TREE}. {HOW_TO_GET}"
        )
    raise DataNotFound(
        f"lfw: no {IMAGES_DIR}/ folder under {root} (and no {PAIRS_FILE} beside it in "
        f"{root.parent}). Expected tree: {EXPECTED_TREE}. {HOW_TO_GET}"
    )


def list_images(images_dir: Path) -> tuple[list[str], list[Path]]:
    """Sorted identity names (folders holding at least one .jpg) and all their images, sorted."""
    names: list[str] = []
    files: list[Path] = []
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        jpgs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
        if jpgs:
            names.append(folder.name)
            files.extend(jpgs)
    if not files:
        raise DatasetError(
            f"lfw: {images_dir} holds no <Name>/*.jpg images. Expected tree: {EXPECTED_TREE}. {HOW_TO_GET}"
        )
    return names, files


def _image_number(path: Path, lineno: int, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise DatasetError(f"{path}:{lineno}: image number {text!r} is not a positive integer")
    return number


class PairLine(NamedTuple):
    """One line of pairs.txt: 0-indexed fold, line number, same person or not, both images."""

    fold: int
    lineno: int
    matched: bool
    name1: str
    number1: int  # 1-based image number, as in the file
    name2: str
    number2: int


def parse_pairs(path: Path) -> list[PairLine]:
    """Parse an LFW pairs file, one PairLine per pair, in file order.

    Blank lines are ignored; anything else that does not fit the header's fold and pair counts
    (or a mismatched line naming one person twice) is a DatasetError naming ``path:line``.
    """
    lines = [
        (lineno, line.split())
        for lineno, line in enumerate(read_text(path, "pairs.txt").splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise DatasetError(f"{path}: empty; expected a header 'folds<TAB>n' or 'n'")
    head_line, header = lines[0]
    try:
        numbers = [int(v) for v in header]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or min(numbers) < 1:
        raise DatasetError(
            f"{path}:{head_line}: expected a header 'folds<TAB>n' or 'n' (positive integers), "
            f"got {' '.join(header)!r}"
        )
    folds, n = (1, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
    body = lines[1:]
    if len(body) != 2 * folds * n:
        raise DatasetError(
            f"{path}: the header says {folds} fold(s) of {n} matched + {n} mismatched pairs, "
            f"i.e. {2 * folds * n} pair lines, but the file has {len(body)}"
        )
    out = []
    for k, (lineno, fields) in enumerate(body):
        fold, matched = k // (2 * n), k % (2 * n) < n
        if matched:
            if len(fields) != 3:
                raise DatasetError(
                    f"{path}:{lineno}: fold {fold + 1} expects a matched pair 'name<TAB>i<TAB>j' "
                    f"here, got {len(fields)} field(s): {' '.join(fields)!r}"
                )
            name1, name2 = fields[0], fields[0]
            i, j = fields[1], fields[2]
        else:
            if len(fields) != 4:
                raise DatasetError(
                    f"{path}:{lineno}: fold {fold + 1} expects a mismatched pair "
                    f"'name1<TAB>i<TAB>name2<TAB>j' here, got {len(fields)} field(s): "
                    f"{' '.join(fields)!r}"
                )
            name1, i, name2, j = fields
            if name1 == name2:
                raise DatasetError(f"{path}:{lineno}: a mismatched pair names {name1!r} twice")
        out.append(
            PairLine(
                fold,
                lineno,
                matched,
                name1,
                _image_number(path, lineno, i),
                name2,
                _image_number(path, lineno, j),
            )
        )
    return out


def load_landmarks(
    data_root: Path,
    landmarks: Path | None,
) -> tuple[KeypointTable | None, KeypointSchema | None, Path]:
    """The landmark sidecar (``landmarks``, which must exist, else ``<root>/landmarks.csv`` when
    present; None without one), its schema and its path. Any K is accepted as keypoints; only
    K = 5 aligns."""
    lm_path = landmarks if landmarks is not None else data_root / LANDMARKS_FILE
    if landmarks is not None and not landmarks.is_file():
        raise DatasetError(f"lfw: landmark sidecar {landmarks} does not exist")
    if not lm_path.is_file():
        return None, None, lm_path
    table = read_keypoints_table(lm_path)
    schema = table_schema(table, FACE_KEYPOINTS)
    if schema is not None and schema.num_keypoints != FACE_KEYPOINTS.num_keypoints:
        logger.info(
            "lfw: %s has %d keypoints per image, not the 5 ArcFace landmarks: faces are "
            "centre-cropped and the keypoints handed to the model as they are",
            lm_path,
            schema.num_keypoints,
        )
    return table, schema, lm_path


def read_lfw(
    root: Path,
    landmarks: Path | None = None,
    align: FaceAlign | None = LFW_ALIGN,
    name: str = "lfw",
) -> VerificationSet:
    """Read LFW (or a set in its layout) into a VerificationSet.

    Images are every ``*.jpg`` under ``lfw/<Name>/``, sorted; ``pid`` is the index of ``Name``
    in the sorted identity names and ``camid`` is 0. Keypoints come from ``landmarks`` (default
    ``<root>/landmarks.csv`` when present), keyed by paths relative to the data root
    (``lfw/Name/Name_0001.jpg``); without a sidecar they are None. Every record carries
    ``align`` (see the module docstring).
    """
    data_root, images_dir = find_lfw_root(root)
    table, schema, lm_path = load_landmarks(data_root, landmarks)
    matcher = KeypointMatcher(name, table, (data_root, images_dir))
    vs = _verification_set(data_root, images_dir, matcher, schema, lm_path, align, name)
    return replace(vs, keypoint_report=matcher.finish())


def _verification_set(
    data_root: Path,
    images_dir: Path,
    keypoints: KeypointMatcher,
    schema: KeypointSchema | None,
    lm_path: Path,
    align: FaceAlign | None,
    name: str,
) -> VerificationSet:
    names, files = list_images(images_dir)
    pid_of = {person: pid for pid, person in enumerate(names)}

    images = []
    index: dict[Path, int] = {}
    missing_landmarks = 0
    for path in files:
        rel = path.relative_to(data_root).as_posix()
        kps = keypoints.lookup(path, rel, path.relative_to(images_dir).as_posix())
        if keypoints.table is not None and kps is None:
            missing_landmarks += 1
        index[path] = len(images)
        images.append(
            ImageRecord(path=str(path), pid=pid_of[path.parent.name], camid=0, keypoints=kps, align=align)
        )
    if missing_landmarks:
        logger.warning(
            "%s: %d of %d images have no usable landmarks in %s (centre-cropped)",
            name,
            missing_landmarks,
            len(images),
            lm_path,
        )

    pairs_path = data_root / PAIRS_FILE
    parsed = parse_pairs(pairs_path)
    pairs = np.empty((len(parsed), 2), dtype=np.int64)
    labels = np.empty(len(parsed), dtype=np.int64)
    folds = np.empty(len(parsed), dtype=np.int64)
    for k, line in enumerate(parsed):
        ends = ((line.name1, line.number1), (line.name2, line.number2))
        for col, (person, number) in enumerate(ends):
            image = images_dir / person / f"{person}_{number:04d}.jpg"
            if image not in index:
                raise DatasetError(f"{pairs_path}:{line.lineno}: image {image} does not exist")
            pairs[k, col] = index[image]
        labels[k] = int(line.matched)
        folds[k] = line.fold

    logger.info(
        "lfw: %d images of %d people, %d pairs in %d fold(s) from %s",
        len(images),
        len(names),
        len(pairs),
        int(folds.max()) + 1 if len(folds) else 0,
        data_root,
    )
    return VerificationSet(
        name=name,
        root=data_root,
        images=images,
        identities=names,
        pairs=pairs,
        labels=labels,
        folds=folds,
        keypoint_schema=schema,
    )


def read_lfw_split(
    root: Path,
    landmarks: Path | None = None,
    align: FaceAlign | None = LFW_ALIGN,
    name: str = "lfw",
) -> FaceSplit | VerificationSet:
    """LFW plus its training identities when ``train/<Name>/`` sits beside ``lfw/``: a
    FaceSplit (train pids 0..P-1 in sorted name order); otherwise the VerificationSet alone."""
    data_root, images_dir = find_lfw_root(root)
    table, schema, lm_path = load_landmarks(data_root, landmarks)
    matcher = KeypointMatcher(name, table, (data_root, images_dir))
    vs = _verification_set(data_root, images_dir, matcher, schema, lm_path, align, name)
    train_dir = vs.root / TRAIN_DIR
    if not train_dir.is_dir():
        return replace(vs, keypoint_report=matcher.finish())
    train = [replace(r, align=align) for r in read_identity_folders(train_dir, vs.root, matcher)]
    vs = replace(vs, keypoint_report=matcher.finish())
    overlap = sorted({Path(r.path).parent.name for r in train} & set(vs.identities))
    if overlap:
        logger.warning(
            "%s: %d people are both in %s and in the verification images (e.g. %s)",
            name,
            len(overlap),
            train_dir,
            overlap[0],
        )
    return FaceSplit(name, vs.root, train, vs, schema, vs.keypoint_report)


@register_dataset(
    DatasetInfo(
        "lfw",
        "face",
        EXPECTED_TREE,
        URL,
        published={
            "test": {
                "images": PUBLISHED_STATS["images"],
                "ids": PUBLISHED_STATS["identities"],
                "pairs": PUBLISHED_STATS["pairs"],
                "folds": PUBLISHED_STATS["folds"],
            }
        },
    )
)
def _lfw(cfg: DataConfig) -> FaceSplit | VerificationSet:
    return read_lfw_split(data_root(cfg.root), keypoints_path(cfg))
