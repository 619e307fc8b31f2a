"""MSMT17: images in per-identity folders, splits defined by four list files.

Reference: Wei, Zhang, Gao and Tian, "Person Transfer GAN to Bridge Domain Gap for Person
Re-Identification", CVPR 2018. URL: https://www.pkuvmc.com/dataset.html (by request to the
authors; not downloaded by reidbench).
Statistics: 4,101 identities (1,041 train, 3,060 test), 15 cameras; ``list_train.txt`` 30,248
and ``list_val.txt`` 2,373 images of the train identities (32,621 together), ``list_query.txt``
11,659 and ``list_gallery.txt`` 82,161 images. See ``PUBLISHED_STATS``.

Layout (V1; V2 names its folders ``mask_train_v2`` / ``mask_test_v2``)::

    <root>/msmt17/MSMT17_V1/        or <root>/MSMT17_V1/, or the version folder itself
      train/0000/0000_000_01_0303morning_0015_0.jpg ...
      test/0000/0000_000_01_0303morning_0008_0.jpg ...
      list_train.txt list_val.txt   "0000/0000_000_01_0303morning_0015_0.jpg 0" per line
      list_query.txt list_gallery.txt

Semantics follow torchreid's ``MSMT17``: the train split is ``list_train.txt`` only (val is
read and checked but not trained on, as the conventional protocol), pids are those of the
lists, the camera is the third ``_`` field of the file name minus one. Records keep the list
order (the lists define the dataset; no directory is listed). Train pids are relabelled to
0..P-1 in sorted order, which leaves the original lists (pids 0..1040) unchanged and keeps a
trimmed list usable by the classifier. Every malformed line, unknown camera or missing image is
an error naming ``list_*.txt:<line>``.
"""

from __future__ import annotations

from pathlib import Path

from reidbench.config import DataConfig
from reidbench.datasets.base import (
    BODY_KEYPOINTS,
    ImageRecord,
    KeypointReport,
    KeypointSchema,
    ReidSplit,
)
from reidbench.datasets.catalog import DatasetInfo, data_root, keypoints_path, register_dataset
from reidbench.datasets.keypoints import KeypointMatcher, load_sidecar
from reidbench.datasets.market1501 import Stats
from reidbench.datasets.textio import read_text
from reidbench.errors import DataNotFound, DatasetError

URL = "https://www.pkuvmc.com/dataset.html (MSMT17, by request to the authors)"
VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
LISTS = {
    "train": "list_train.txt",
    "val": "list_val.txt",
    "query": "list_query.txt",
    "gallery": "list_gallery.txt",
}
NUM_CAMS = 15
EXPECTED_TREE = (
    "<root>/msmt17/MSMT17_V1/{train,test}/<pid>/<pid>_<n>_<cam>_<date>_<frame>_<k>.jpg + "
    "list_train.txt, list_val.txt, list_query.txt, list_gallery.txt (V2: mask_train_v2, mask_test_v2)"
)

PUBLISHED_STATS: Stats = {
    "train": {"images": 30248, "ids": 1041, "cams": 15},
    "query": {"images": 11659, "ids": 3060, "cams": 15},
    "gallery": {"images": 82161, "ids": 3060, "cams": 15},
}


def find_msmt17_root(root: Path) -> tuple[Path, tuple[str, str]]:
    """The version folder (holding the list files) and its (train, test) folder names."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataNotFound(
            f"msmt17: data root {root} does not exist. Expected tree: {EXPECTED_TREE}. "
            f"reidbench never downloads data; get it from {URL}."
        )
    for base in (root, root / "msmt17", root / "MSMT17"):
        for version, dirs in VERSIONS.items():
            for candidate in (base / version, base):
                if all((candidate / d).is_dir() for d in dirs):
                    return candidate, dirs
    raise DataNotFound(
        f"msmt17: no MSMT17_V1/ (train/, test/) or MSMT17_V2/ (mask_train_v2/, mask_test_v2/) "
        f"under {root}. Expected tree: {EXPECTED_TREE}. reidbench never downloads data; get it "
        f"from {URL}."
    )


def camera_of(name: str) -> int | None:
    """1-based camera from ``<pid>_<n>_<cam>_...jpg``, or None if the name does not say."""
    parts = name.split("_")
    if len(parts) < 4 or not parts[2].isdigit():
        return None
    return int(parts[2])


def read_list(
    list_path: Path,
    image_dir: Path,
    data_root: Path,
    keypoints: KeypointMatcher,
) -> list[ImageRecord]:
    """One record per line of a list file, in file order; blank lines skipped."""
    if not list_path.is_file():
        raise DatasetError(
            f"msmt17: {list_path} does not exist. Expected tree: {EXPECTED_TREE}. "
            f"reidbench never downloads data; get it from {URL}."
        )
    out = []
    for lineno, line in enumerate(read_text(list_path, "an MSMT17 list file").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"msmt17: {list_path}:{lineno}"
        if len(fields) != 2 or not fields[1].isdigit():
            raise DatasetError(f"{where}: expected '<pid>/<file>.jpg <pid>', got {line.strip()!r}")
        rel, pid = fields[0].replace("\\", "/"), int(fields[1])
        cam = camera_of(Path(rel).name)
        if cam is None or not 1 <= cam <= NUM_CAMS or not rel.lower().endswith(".jpg"):
            raise DatasetError(
                f"{where}: {rel!r} is not <pid>_<n>_<cam>_<date>_<frame>_<k>.jpg with camera 01..{NUM_CAMS}"
            )
        path = image_dir / rel
        if not path.is_file():
            raise DatasetError(f"{where}: image {path} does not exist")
        kps = keypoints.lookup(path, path.relative_to(data_root).as_posix())
        out.append(ImageRecord(str(path), pid, cam - 1, kps))
    if not out:
        raise DatasetError(f"msmt17: {list_path} lists no images")
    return out


def read_msmt17_lists(
    root: Path,
    keypoints_csv: Path | None = None,
    schema: KeypointSchema | None = BODY_KEYPOINTS,
) -> tuple[Path, dict[str, list[ImageRecord]], KeypointSchema | None]:
    """The version folder, the four lists' records (raw pids) and the keypoint schema."""
    return _read_lists(root, keypoints_csv, schema)[:3]


def _read_lists(
    root: Path,
    keypoints_csv: Path | None,
    schema: KeypointSchema | None,
) -> tuple[Path, dict[str, list[ImageRecord]], KeypointSchema | None, KeypointReport | None]:
    """``read_msmt17_lists`` plus what became of the keypoint sidecar's rows."""
    data_root, (train_dir, test_dir) = find_msmt17_root(root)
    table, schema = load_sidecar("msmt17", data_root, keypoints_csv, schema)
    keypoints = KeypointMatcher("msmt17", table, (data_root,))
    lists = {}
    for split, filename in LISTS.items():
        image_dir = data_root / (train_dir if split in ("train", "val") else test_dir)
        lists[split] = read_list(data_root / filename, image_dir, data_root, keypoints)
    return data_root, lists, schema, keypoints.finish()


def read_msmt17(
    root: Path,
    keypoints_csv: Path | None = None,
    schema: KeypointSchema | None = BODY_KEYPOINTS,
) -> ReidSplit:
    """Read MSMT17 (V1 or V2 layout) into a ReidSplit: train = list_train.txt (pids relabelled
    in sorted order), query and gallery with raw pids."""
    data_root, lists, schema, report = _read_lists(root, keypoints_csv, schema)
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in lists["train"]}))}
    train = [ImageRecord(r.path, label[r.pid], r.camid, r.keypoints) for r in lists["train"]]
    return ReidSplit(
        "msmt17", data_root, train, lists["query"], lists["gallery"], schema, keypoint_report=report
    )


@register_dataset(DatasetInfo("msmt17", "reid", EXPECTED_TREE, URL, published=PUBLISHED_STATS))
def _msmt17(cfg: DataConfig) -> ReidSplit:
    return read_msmt17(data_root(cfg.root), keypoints_path(cfg))
