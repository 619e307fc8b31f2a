"""`reidbench data check`: per-split counts of a dataset, compared with its published statistics,
and a pass over its image files.

Counts: images, identities and cameras per split; verification sets add pairs and folds, IJB
template sets templates, media, pairs and genuine pairs (their 1:1 files name no subjects or
cameras: ``ids`` and ``cams`` are None). A split whose every count is at most the published one
is a subset (reported, not an error); more than published means another version of the data.

Keypoint coverage (``keypoint_coverage``): per split, the images that reach the model with
keypoints (a usable sidecar row, or IJB's meta landmarks), and of the others how many have no
row, an explicit empty row or a row dropped as invalid; plus the sidecar rows naming no image
(``reidbench.datasets.keypoints`` defines the rules).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from PIL import Image

from reidbench.datasets.base import Counts, ImageRecord, Split

log = logging.getLogger(__name__)

IMAGE_CHECKS = ("none", "header", "decode")


def compare_published(
    counts: dict[str, Counts],
    published: dict[str, dict[str, int]] | None,
) -> dict[str, str]:
    """Per split: ``full`` (every published count met exactly), ``subset`` (none above the
    published, some below), ``differs`` (some above) or ``n/a`` (nothing published)."""
    out = {}
    for split, have in counts.items():
        want = (published or {}).get(split)
        if not want:
            out[split] = "n/a"
            continue
        pairs = [(have.get(k), v) for k, v in want.items() if have.get(k) is not None]
        if any(h > w for h, w in pairs):
            out[split] = "differs"
        elif all(h == w for h, w in pairs):
            out[split] = "full"
        else:
            out[split] = "subset"
    return out


def all_images(data: Split) -> list[str]:
    """Every distinct image path of the dataset, sorted."""
    return sorted({r.path for records in data.parts().values() for r in records})


def has_keypoints(record: ImageRecord) -> bool:
    """Whether ``record`` reaches the model with keypoints (a usable row, or meta landmarks)."""
    return record.keypoints is not None or (
        record.align is not None and record.align.landmarks_px is not None
    )


def extract_command(dataset: str, data_root: str | Path | None) -> str:
    """The shell command that writes ``dataset``'s keypoint sidecar (quoted for a POSIX shell;
    ``reidbench.keypoints`` runs it); a ``folder:`` set names its path and takes no root."""
    parts = ["reidbench", "data", "keypoints", dataset]
    if data_root is not None and not dataset.startswith("folder:"):
        parts += ["--data-root", str(data_root)]
    return " ".join(shlex.quote(p) for p in parts)


def keypoint_coverage(data: Split) -> dict[str, Any]:
    """``{"sidecar", "num_keypoints", "rows", "splits": {split: {"images", "with_keypoints",
    "no_row", "empty_row", "invalid"}}, "invalid_rows", "invalid", "unknown_rows", "unknown"}``;
    ``invalid`` lists ``{"image", "reason"}``, ``unknown`` the sidecar paths naming no image."""
    report = data.keypoint_report
    invalid = report.invalid if report is not None else {}
    explicit = report.explicit if report is not None else frozenset()
    splits = {}
    for split, records in data.parts().items():
        have = sum(has_keypoints(r) for r in records)
        bad = sum(r.path in invalid for r in records if not has_keypoints(r))
        empty = sum(r.path in explicit for r in records if not has_keypoints(r))
        splits[split] = {
            "images": len(records),
            "with_keypoints": have,
            "no_row": len(records) - have - bad - empty,
            "empty_row": empty,
            "invalid": bad,
        }
    return {
        "sidecar": report.sidecar if report is not None else None,
        "num_keypoints": report.num_keypoints if report is not None else (
            data.keypoint_schema.num_keypoints if data.keypoint_schema is not None else 0
        ),
        "rows": report.rows if report is not None else 0,
        "splits": splits,
        "invalid_rows": len(invalid),
        "invalid": [{"image": path, "reason": why} for path, why in sorted(invalid.items())],
        "unknown_rows": len(report.unknown) if report is not None else 0,
        "unknown": list(report.unknown) if report is not None else [],
    }


def unreadable_images(paths: list[str], mode: str = "header") -> list[tuple[str, str]]:
    """``(path, reason)`` for each image that cannot be opened (``header``: the format is
    recognised from the header) or fully decoded (``decode``: also catches truncated files)."""
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"image check {mode!r}; expected one of {IMAGE_CHECKS}")
    bad = []
    if mode == "none":
        return bad
    for path in paths:
        try:
            with Image.open(path) as img:
                if mode == "decode":
                    img.load()
        except Exception as exc:  # noqa: BLE001 - whatever PIL raises for this file is its fault
            text = str(exc).splitlines()[0] if str(exc) else ""
            bad.append((path, f"{type(exc).__name__}: {text}" if text else type(exc).__name__))
    return bad


def check_report(
    name: str,
    data: Split,
    published: dict[str, dict[str, int]] | None,
    images: str = "header",
) -> dict[str, Any]:
    """Everything `reidbench data check` prints: counts, published counts, status per split and
    the unreadable images."""
    counts = data.counts()
    paths = all_images(data) if images != "none" else []
    bad = unreadable_images(paths, images)
    log.info("%s: checked %d image files (%s), %d unreadable", name, len(paths), images, len(bad))
    return {
        "dataset": name,
        "root": str(data.root),
        "splits": counts,
        "published": published,
        "status": compare_published(counts, published),
        "images_checked": len(paths),
        "image_check": images,
        "unreadable": [{"path": p, "error": e} for p, e in bad],
        "keypoints": {**keypoint_coverage(data), "command": extract_command(name, data.root)},
    }


def format_report(report: dict[str, Any]) -> str:
    """The human-readable table of a check report."""
    keys = ["images", "ids", "cams"]
    for counts in report["splits"].values():
        keys += [k for k in counts if k not in keys]
    published = report["published"] or {}
    lines = [
        f"{report['dataset']} at {report['root']}",
        f"{'split':8s}" + "".join(f"{k:>10s}" for k in keys) + "   status",
    ]
    for split, counts in report["splits"].items():
        row = "".join(f"{'-' if counts.get(k) is None else counts[k]:>10}" for k in keys)
        status = report["status"][split]
        want = published.get(split)
        if want:
            status += " (published: " + ", ".join(f"{k} {v:,}" for k, v in want.items()) + ")"
        lines.append(f"{split:8s}{row}   {status}")
    if report["image_check"] != "none":
        lines.append(
            f"{report['images_checked']} image files opened ({report['image_check']}), "
            f"{len(report['unreadable'])} unreadable"
        )
    for item in report["unreadable"][:10]:
        lines.append(f"  unreadable: {item['path']}: {item['error']}")
    if "keypoints" in report:
        lines += format_keypoints(report["keypoints"])
    return "\n".join(lines)


def format_keypoints(cov: dict[str, Any], examples: int = 5) -> list[str]:
    """The keypoint-coverage lines of ``format_report``."""
    if cov["sidecar"] is None:
        with_any = sum(c["with_keypoints"] for c in cov["splits"].values())
        if not with_any:
            line = "keypoints: none (no sidecar): every sample runs without keypoints"
            if cov.get("command"):
                line += f"; make them with: {cov['command']}"
            return [line]
        head = "keypoints: from the dataset's own landmarks (no sidecar)"
    else:
        head = (
            f"keypoints: {cov['num_keypoints']} per image from {cov['sidecar']} "
            f"({cov['rows']:,} rows)"
        )
    lines = [head, f"{'split':8s}{'with keypoints':>24s}{'no row':>10s}{'empty row':>11s}{'invalid':>9s}"]
    for split, c in cov["splits"].items():
        share = 100.0 * c["with_keypoints"] / c["images"] if c["images"] else 0.0
        ratio = f"{c['with_keypoints']} / {c['images']} ({share:.1f}%)"
        lines.append(f"{split:8s}{ratio:>24s}{c['no_row']:>10}{c['empty_row']:>11}{c['invalid']:>9}")
    if cov["invalid_rows"]:
        shown = ", ".join(f"{i['image']} ({i['reason']})" for i in cov["invalid"][:examples])
        more = ", ..." if cov["invalid_rows"] > examples else ""
        lines.append(f"{cov['invalid_rows']} row(s) dropped as invalid: {shown}{more}")
    if cov["unknown_rows"]:
        more = ", ..." if cov["unknown_rows"] > examples else ""
        lines.append(
            f"{cov['unknown_rows']} row(s) name no image of the dataset: "
            f"{', '.join(cov['unknown'][:examples])}{more}"
        )
    return lines
