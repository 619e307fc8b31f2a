"""IJB-B and IJB-C 1:1 template verification, in the layout of insightface's IJB evaluation.

References: Whitelam et al., "IARPA Janus Benchmark-B Face Dataset", CVPR Workshops 2017;
Maze et al., "IARPA Janus Benchmark - C: Face Dataset and Protocol", ICB 2018. The data is
distributed by NIST (https://www.nist.gov/programs-projects/face-challenges) under its own
licence; the ``loose_crop`` images and ``meta`` files below are those of insightface's IJB
evaluation package. reidbench never downloads either.

Layout (``ijbc_*`` likewise)::

    <root>/IJBB/                     or <root>/ijbb/, or the folder itself
      loose_crop/1.jpg ...           face crops
      meta/ijbb_face_tid_mid.txt     "<image> <template id> <media id>" per line
      meta/ijbb_template_pair_label.txt  "<template 1> <template 2> <label 1|0>" per line
      meta/ijbb_name_5pts_score.txt  "<image> x1 y1 ... x5 y5 <detector score>" per line

Landmarks are pixel coordinates in the crop (left eye, right eye, nose, left and right mouth
corners); every image is aligned with them onto the ArcFace 112x112 template, and they reach
KP-RPE as keypoints in the aligned image. Images are joined to landmarks by name (insightface
relies on the two files having the same order). Files are parsed with numpy, never an image
decoded: IJB-C's 469,375 crops and 15.7 million pairs read in seconds.

Scoring follows insightface (``reidbench.evaluation.templates.evaluate_templates``): image
features, optionally L2-normalised and weighted by the detector score, are averaged per media
and summed per template; the normalised template features are compared by cosine similarity,
pair chunk by pair chunk. IJB has no training split and no folds: ``reidbench run`` refuses it;
``reidbench evaluate --run`` scores a trained model on it (the template task,
``reidbench.evaluation.tasks``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidbench.config import DataConfig
from reidbench.datasets.base import FACE_KEYPOINTS, FaceAlign, ImageRecord, TemplateSet
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.keypoints import KeypointMatcher, load_sidecar
from reidbench.datasets.textio import check_utf8, read_text
from reidbench.errors import DataNotFound, DatasetError

log = logging.getLogger(__name__)

IMAGES_DIR = "loose_crop"
META_DIR = "meta"
URL = "https://www.nist.gov/programs-projects/face-challenges (IJB-B/C; insightface's IJB package)"


@dataclass(frozen=True)
class IJBSpec:
    name: str  # "ijbb" or "ijbc"
    published: dict[str, int]  # the full protocol's counts

    @property
    def folder_names(self) -> tuple[str, ...]:
        return (self.name.upper(), self.name, self.name.replace("ijb", "IJB-").upper())

    def meta(self, kind: str) -> str:
        return f"{META_DIR}/{self.name}_{kind}.txt"

    def expected_tree(self) -> str:
        return (
            f"<root>/{self.folder_names[0]}/{{{IMAGES_DIR}/<image>.jpg, "
            f"{self.meta('face_tid_mid')}, {self.meta('template_pair_label')}, "
            f"{self.meta('name_5pts_score')}}}"
        )


# Counts of the full 1:1 protocols as insightface's meta files hold them.
IJBB = IJBSpec("ijbb", {"images": 227630, "templates": 12115, "pairs": 8010270, "genuine": 10270})
IJBC = IJBSpec("ijbc", {"images": 469375, "templates": 23124, "pairs": 15658489, "genuine": 19557})
IJB_ALIGN_SIZE = 112


def find_ijb_root(root: Path, spec: IJBSpec) -> Path:
    """The folder holding ``loose_crop/`` and ``meta/``."""
    root = Path(root).expanduser()
    how = f"Expected tree: {spec.expected_tree()}. reidbench never downloads data; get it from {URL}."
    if not root.exists():
        raise DataNotFound(f"{spec.name}: data root {root} does not exist. {how}")
    for candidate in (root, *(root / n for n in spec.folder_names)):
        if (candidate / META_DIR).is_dir() or (candidate / IMAGES_DIR).is_dir():
            for part in (IMAGES_DIR, META_DIR):
                if not (candidate / part).is_dir():
                    raise DatasetError(f"{spec.name}: {candidate / part} is missing. {how}")
            return candidate
    raise DataNotFound(
        f"{spec.name}: no {IMAGES_DIR}/ and {META_DIR}/ under {root} (looked in "
        f"{', '.join(spec.folder_names)} below it too). {how}"
    )


def _bad_line(path: Path, columns: int, numeric_from: int) -> DatasetError:
    """The error for the first line of ``path`` without ``columns`` fields (numbers from field
    ``numeric_from`` on); called only once a fast parse has failed."""
    for lineno, line in enumerate(read_text(path, "an IJB meta file").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            return DatasetError(
                f"{path}:{lineno}: expected {columns} fields, got "
                f"{len(fields)}: {line.strip()!r} (truncated line?)"
            )
        try:
            [float(f) for f in fields[numeric_from:]]
        except ValueError:
            return DatasetError(f"{path}:{lineno}: non-numeric field in {line.strip()!r}")
    return DatasetError(f"{path}: cannot be parsed")


def _meta_path(data_root: Path, spec: IJBSpec, kind: str) -> Path:
    path = data_root / spec.meta(kind)
    if not path.is_file():
        raise DatasetError(
            f"{spec.name}: {path} does not exist. Expected tree: "
            f"{spec.expected_tree()}. reidbench never downloads data; get it from {URL}."
        )
    return path


def read_int_table(path: Path, columns: int) -> np.ndarray:
    """(N, columns) int64 of a whitespace-separated integer file; blank lines skipped."""
    try:
        table = np.loadtxt(path, dtype=np.int64, ndmin=2, encoding="utf-8")
    except UnicodeDecodeError:
        check_utf8(path, "an IJB meta file")  # raises, naming the line
        raise
    except ValueError:
        raise _bad_line(path, columns, 0) from None
    if table.size == 0:
        raise DatasetError(f"{path} is empty")
    if table.shape[1] != columns:
        raise _bad_line(path, columns, 0)
    return table


def read_text_table(path: Path, columns: int) -> tuple[list[str], np.ndarray]:
    """Names (first field) and (N, columns - 1) float64 of the other fields, per line."""
    names: list[str] = []
    values: list[str] = []
    for line in read_text(path, "an IJB meta file").splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise _bad_line(path, columns, 1)
        names.append(fields[0])
        values.extend(fields[1:])
    if not names:
        raise DatasetError(f"{path} is empty")
    try:
        numbers = np.array(values, dtype=np.float64).reshape(len(names), columns - 1)
    except ValueError:
        raise _bad_line(path, columns, 1) from None
    return names, numbers


def read_ijb(root: Path, spec: IJBSpec, keypoints_csv: Path | None = None) -> TemplateSet:
    """Read IJB-B or IJB-C (``spec``) into a TemplateSet; every problem names file and line."""
    data_root = find_ijb_root(root, spec)
    tid_path = _meta_path(data_root, spec, "face_tid_mid")
    pair_path = _meta_path(data_root, spec, "template_pair_label")
    lmk_path = _meta_path(data_root, spec, "name_5pts_score")

    face_names, ids = read_text_table(tid_path, 3)
    if not np.all(ids == np.round(ids)):
        raise _bad_line(tid_path, 3, 1)
    template_ids, media_ids = ids[:, 0].astype(np.int64), ids[:, 1].astype(np.int64)
    lmk_names, lmk_values = read_text_table(lmk_path, 12)
    if not np.isfinite(lmk_values).all():
        row = int(np.flatnonzero(~np.isfinite(lmk_values).all(1))[0])
        raise DatasetError(f"{lmk_path}: non-finite landmark or score for {lmk_names[row]}")
    row_of = {}
    for row, name in enumerate(lmk_names):
        if row_of.setdefault(name, row) != row:
            raise DatasetError(f"{lmk_path}: {name} is listed twice")
    on_disk = {e.name for e in os.scandir(data_root / IMAGES_DIR)}
    table, schema = load_sidecar(spec.name, data_root, keypoints_csv, FACE_KEYPOINTS)
    keypoints = KeypointMatcher(spec.name, table, (data_root,))

    images, rows = [], np.empty(len(face_names), dtype=np.int64)
    for i, name in enumerate(face_names):
        row = row_of.get(name)
        if row is None:
            raise DatasetError(f"{tid_path}: image {name} has no landmarks in {lmk_path}")
        if not (name in on_disk or "/" in name and (data_root / IMAGES_DIR / name).is_file()):
            raise DatasetError(f"{tid_path}: image {data_root / IMAGES_DIR / name} does not exist")
        rows[i] = row
        rel = f"{IMAGES_DIR}/{name}"
        align = FaceAlign(IJB_ALIGN_SIZE, 1.0, lmk_values[row, :10].reshape(5, 2))
        kps = keypoints.lookup(data_root / rel, rel)
        images.append(ImageRecord(str(data_root / rel), int(template_ids[i]), 0, kps, align))

    pairs = read_int_table(pair_path, 3)
    labels = pairs[:, 2]
    if not np.isin(labels, (0, 1)).all():
        line = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0]) + 1
        raise DatasetError(f"{pair_path}: pair {line} has label {labels[line - 1]}; expected 1 or 0")
    known = np.unique(template_ids)
    unknown = ~(np.isin(pairs[:, 0], known) & np.isin(pairs[:, 1], known))
    if unknown.any():
        k = int(np.flatnonzero(unknown)[0])
        raise DatasetError(
            f"{pair_path}: pair {k + 1} ({pairs[k, 0]} {pairs[k, 1]}) names a "
            f"template with no image in {tid_path}"
        )
    log.info(
        "%s: %d images, %d templates, %d pairs (%d genuine) from %s",
        spec.name,
        len(images),
        len(known),
        len(pairs),
        int(labels.sum()),
        data_root,
    )
    return TemplateSet(
        name=spec.name,
        root=data_root,
        images=images,
        template_ids=template_ids.astype(np.int32),
        media_ids=media_ids.astype(np.int32),
        detector_scores=lmk_values[rows, 10].astype(np.float32),
        template_pairs=pairs[:, :2].astype(np.int32),
        labels=labels.astype(np.int8),
        keypoint_schema=schema or FACE_KEYPOINTS,
        keypoint_report=keypoints.finish(),
    )


def _ijb_builder(spec: IJBSpec) -> Callable[[DataConfig], TemplateSet]:
    def build(cfg: DataConfig) -> TemplateSet:
        return read_ijb(data_root(cfg.root), spec, keypoints_path(cfg))

    return build


for _spec in (IJBB, IJBC):
    register_dataset(
        DatasetInfo(
            _spec.name,
            "templates",
            _spec.expected_tree(),
            URL,
            num_keypoints=5,
            published={"test": dict(_spec.published)},
        )
    )(_ijb_builder(_spec))
