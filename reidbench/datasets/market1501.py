"""Market-1501 and every dataset in its on-disk layout (the synthetic re-ID set included).

Reference: Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015.
URL: https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html (not downloaded by reidbench).
Statistics: 1,501 identities (751 train, 750 test), 6 cameras; 12,936 train and 3,368 query
images; 19,732 files in bounding_box_test, 15,913 of them gallery images once junk is dropped
(distractors, pid 0, included). See ``PUBLISHED_STATS``.

Semantics follow torchreid's ``Market1501``: junk images (pid -1) are dropped everywhere,
distractors (pid 0) stay in the gallery, cameras become 0-indexed and train pids are relabelled
0..P-1 in sorted pid order. Unlike torchreid, file lists are sorted and names are parsed from
the file name only (never from the directory path), and a malformed name is an error naming the
file rather than a silent skip or an assertion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reidbench.config import DataConfig
from reidbench.datasets.base import (
    BODY_KEYPOINTS,
    JUNK_PID,
    ImageRecord,
    KeypointSchema,
    ReidSplit,
)
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.keypoints import KeypointMatcher, load_sidecar
from reidbench.errors import DataNotFound, DatasetError

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
NAME_PATTERN = re.compile(r"^(-1|\d+)_c(\d+)(?:s\d+)?_.*\.jpg$", re.IGNORECASE)


Stats = dict[str, dict[str, int]]


@dataclass(frozen=True)
class LayoutSpec:
    """What differs between datasets in the Market-1501 layout."""

    name: str
    folder_names: tuple[str, ...]  # names the dataset folder may have below a data root
    num_cams: int
    max_pid: int
    url: str
    name_format: str = "PPPP_cCsS_FFFFFF_BB.jpg"  # file names, as the dataset documents them
    example: str = "0002_c1s1_000451_03.jpg"  # one valid file name
    published: Stats | None = None  # per split images / ids / cams of the full dataset

    def expected_tree(self) -> str:
        return (
            f"<root>/{self.folder_names[0]}/{{bounding_box_train,bounding_box_test,query}}/{self.name_format}"
        )


# Published statistics of the full Market-1501 (after junk removal, as torchreid counts them).
PUBLISHED_STATS: Stats = {
    "train": {"images": 12936, "ids": 751, "cams": 6},
    "query": {"images": 3368, "ids": 750, "cams": 6},
    "gallery": {"images": 15913, "ids": 751, "cams": 6},
}

MARKET1501 = LayoutSpec(
    name="market1501",
    folder_names=("Market-1501-v15.09.15", "market1501", "Market-1501"),
    num_cams=6,
    max_pid=1501,
    url="https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html",
    published=PUBLISHED_STATS,
)


def find_layout_root(root: Path, spec: LayoutSpec) -> Path:
    """Locate the folder holding the three split folders.

    Accepts the folder itself, a parent holding it under one of ``spec.folder_names`` and a
    parent two levels up (torchreid's ``<root>/market1501/Market-1501-v15.09.15``).
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataNotFound(
            f"{spec.name}: data root {root} does not exist. Expected tree: "
            f"{spec.expected_tree()}. reidbench never downloads data; get it from {spec.url}."
        )
    candidates = [root]
    for name in spec.folder_names:
        candidates.append(root / name)
        candidates.extend(root / name / inner for inner in spec.folder_names)
    for candidate in candidates:
        if all((candidate / d).is_dir() for d in SPLIT_DIRS.values()):
            return candidate
    raise DataNotFound(
        f"{spec.name}: no bounding_box_train/, bounding_box_test/ and query/ under {root} "
        f"(looked in {root} and {', '.join(spec.folder_names)} below it). Expected tree: "
        f"{spec.expected_tree()}. reidbench never downloads data; get it from {spec.url}."
    )


def parse_name(path: Path, spec: LayoutSpec) -> tuple[int, int]:
    """(pid, 0-indexed camid) from a Market-style file name; DatasetError if malformed."""
    match = NAME_PATTERN.match(path.name)
    if match is None:
        raise DatasetError(
            f"{spec.name}: malformed file name {path} (expected {spec.name_format}, "
            f"e.g. {spec.example}, or -1_... for junk)"
        )
    pid, cam = int(match.group(1)), int(match.group(2))
    if not (pid == JUNK_PID or 0 <= pid <= spec.max_pid) or not 1 <= cam <= spec.num_cams:
        raise DatasetError(
            f"{spec.name}: {path} has pid {pid} / camera {cam}; expected pid -1..{spec.max_pid} "
            f"and camera 1..{spec.num_cams}"
        )
    return pid, cam - 1


def read_split_dir(
    folder: Path,
    spec: LayoutSpec,
    keypoints: KeypointMatcher,
    data_root: Path,
    relabel: bool,
) -> list[ImageRecord]:
    """Read one split folder, sorted by file name, junk dropped, pids relabelled if asked."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
    parsed = [(p, *parse_name(p, spec)) for p in files]
    label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in parsed if pid != JUNK_PID}))}
    records = []
    for path, pid, camid in parsed:
        if pid == JUNK_PID:
            continue  # a sidecar row of a junk image names a file of the tree: not reported
        kps = keypoints.lookup(path, path.relative_to(data_root).as_posix())
        records.append(
            ImageRecord(
                path=str(path),
                pid=label[pid] if relabel else pid,
                camid=camid,
                keypoints=kps,
            )
        )
    return records


def read_market_layout(
    root: Path,
    spec: LayoutSpec = MARKET1501,
    keypoints_csv: Path | None = None,
    schema: KeypointSchema | None = BODY_KEYPOINTS,
) -> ReidSplit:
    """Read a dataset in the Market-1501 layout into a ReidSplit.

    Keypoints come from ``keypoints_csv`` (default ``<layout root>/keypoints.csv`` when present),
    keyed by paths relative to the layout root; their schema comes from the sidecar's header
    (``schema`` when it has none and K matches).
    """
    data_root = find_layout_root(root, spec)
    table, schema = load_sidecar(spec.name, data_root, keypoints_csv, schema)
    keypoints = KeypointMatcher(spec.name, table, (data_root,))
    splits = {
        split: read_split_dir(data_root / d, spec, keypoints, data_root, relabel=split == "train")
        for split, d in SPLIT_DIRS.items()
    }
    for split, records in splits.items():
        if not records:
            raise DatasetError(
                f"{spec.name}: {data_root / SPLIT_DIRS[split]} holds no .jpg images. "
                f"Expected tree: {spec.expected_tree()}"
            )
    return ReidSplit(
        name=spec.name,
        root=data_root,
        keypoint_schema=schema,
        keypoint_report=keypoints.finish(),
        **splits,
    )


def register_market_layout(spec: LayoutSpec) -> None:
    """Register a dataset in the Market-1501 file layout, described by its ``LayoutSpec``."""

    @register_dataset(DatasetInfo(spec.name, "reid", spec.expected_tree(), spec.url,
                                  published=spec.published))
    def build(cfg: DataConfig) -> ReidSplit:
        return read_market_layout(data_root(cfg.root), spec, keypoints_path(cfg))


register_market_layout(MARKET1501)
