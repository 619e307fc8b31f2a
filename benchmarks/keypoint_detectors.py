"""Coverage and cost of the keypoint detectors on the real images in ``shared/data``.

Runs ``reidbench.keypoints.extract_keypoints`` (decode + detect + sidecar writes, what
``reidbench data keypoints`` does) with BlazePose on the 96 mini Market-1501 crops (128 x 64)
and with the face mesh on the 400 ORL faces (92 x 112 grey), into a temporary folder, after one
warm-up image. Columns:

- ``found``: images with keypoints / images, per split.
- ``wall s / 1k`` and ``CPU s / 1k``: wall time and ``time.process_time`` (all threads of this
  process, MediaPipe's included) per 1,000 images; on a shared machine the CPU time is the
  steadier of the two. The 1-minute load average before and after is printed: a load above the
  core count means other work was running and the wall times are pessimistic.

Needs the ``keypoints`` extra. Usage: ``python benchmarks/keypoint_detectors.py [--repeats 1]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from reidbench.data.loader import load_rgb
from reidbench.keypoints import build_detector, extract_keypoints

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def market_images() -> dict[str, list[str]]:
    root = DATA / "mini_market1501"
    splits = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    return {s: sorted(p.relative_to(root).as_posix() for p in (root / d).glob("*.jpg"))
            for s, d in splits.items()}


def orl_images() -> dict[str, list[str]]:
    root = DATA / "orl_faces"
    return {"all": sorted(p.relative_to(root).as_posix() for p in root.glob("s*/*.pgm"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="passes over each set")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average (1 min) before: {os.getloadavg()[0]:.2f}")
    print("| detector | set | found | wall s / 1k | CPU s / 1k |")
    print("|---|---|---|---|---|")
    for name, root, images in (("blazepose", DATA / "mini_market1501", market_images()),
                               ("facemesh", DATA / "orl_faces", orl_images())):
        detector = build_detector(name)
        first = next(iter(images.values()))[0]
        detector.detect(load_rgb(str(root / first)))  # warm-up: graph start, model load
        walls, cpus, result = [], [], None
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                result = extract_keypoints(root, images, detector, Path(tmp) / "keypoints.csv")
            walls.append(result.wall_seconds / result.processed)
            cpus.append(result.cpu_seconds / result.processed)
        detector.close()
        found = ", ".join(f"{c.split} {c.found}/{c.images}" for c in result.coverage)
        print(f"| {name} | {root.name} | {found} | {1000 * min(walls):.1f} | {1000 * min(cpus):.1f} |")
    print(f"load average (1 min) after: {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
