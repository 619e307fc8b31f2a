"""`reidbench data ...`: generate, preview, list and check datasets (parsing and a few calls)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from reidbench.errors import ConfigError, DatasetError

log = logging.getLogger("reidbench")

SYNTHETIC = ("synthetic-reid", "synthetic-faces")
DATA_ROOT_HELP = "data root (default: $REIDBENCH_DATA, else ./datasets)"


def add_data_parser(sub: Any) -> None:
    """The ``data`` command and its sub-commands, on the CLI's subparsers ``sub``."""
    data = sub.add_parser("data", help="generate, preview, list and check datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    synth = dsub.add_parser("synth", help="generate an embedded synthetic dataset")
    synth.add_argument("name", choices=SYNTHETIC, help="which synthetic set")
    synth.add_argument("--root", required=True, type=Path, help="output folder")
    synth.add_argument("--seed", type=int, default=0, metavar="S",
                       help="seed of the generator (default 0): same seed, same files")
    synth.add_argument("--ids", type=int, help="number of identities (default: generator's)")
    synth.add_argument(
        "--train-ids", type=int, help="synthetic-faces: training identities (default: generator's)"
    )
    prev = dsub.add_parser("preview", help="draw a grid of samples with their keypoints")
    prev.add_argument("name", help="registered dataset name, or folder:<path>")
    prev.add_argument("--data-root", help=DATA_ROOT_HELP)
    prev.add_argument("--out", required=True, type=Path, help="PNG to write")
    prev.add_argument(
        "--split",
        default="train",
        choices=("train", "query", "gallery"),
        help="split to sample; for face sets 'train' is the training identities "
        "and query/gallery show the verification images",
    )
    prev.add_argument("--num", type=int, default=32, help="number of samples")
    prev.add_argument("--keypoints", help="keypoint sidecar CSV replacing the dataset's own")
    prev.add_argument("--seed", type=int, default=0, metavar="S",
                      help="seed of the drawn samples (default 0)")
    dsub.add_parser("list", help="list datasets and their expected trees")
    check = dsub.add_parser(
        "check", help="validate a dataset tree; counts per split against the published ones"
    )
    check.add_argument("name", help="registered dataset name, or folder:<path>")
    check.add_argument("--data-root", help=DATA_ROOT_HELP)
    check.add_argument("--keypoints", help="keypoint sidecar CSV replacing the dataset's own")
    check.add_argument(
        "--images",
        default="header",
        choices=("none", "header", "decode"),
        help="open every image file: none, header (format recognised; default) "
        "or decode (full decode, catches truncated files; slow)",
    )
    check.add_argument(
        "--json", action="store_true", help='print {"splits": {...}, ...} as JSON instead of a table'
    )
    kp = dsub.add_parser(
        "keypoints",
        help="detect keypoints on every image and write the dataset's keypoint sidecar "
        "(needs: pip install 'reidbench[keypoints]')",
    )
    kp.add_argument("name", help="registered dataset name, or folder:<path>")
    kp.add_argument("--data-root", help=DATA_ROOT_HELP)
    kp.add_argument(
        "--detector",
        help="blazepose (body, COCO-17) or facemesh (5 ArcFace landmarks); default: facemesh "
        "for face sets, else blazepose",
    )
    kp.add_argument(
        "--out",
        type=Path,
        help="sidecar to write or continue (default: where the dataset reads it, "
        "<dataset folder>/keypoints.csv, landmarks.csv for lfw); elsewhere, pass it to runs "
        "with --set data.keypoints=FILE",
    )


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        return _list()
    if args.data_command == "synth":
        return _synth(args)
    if args.data_command == "check":
        return _check(args)
    if args.data_command == "keypoints":
        from reidbench.cli_keypoints import extract_dataset_keypoints

        return extract_dataset_keypoints(args)
    return _preview(args)


def _list() -> int:
    from reidbench.datasets.catalog import dataset_infos

    for info in dataset_infos():
        sys.stdout.write(f"{info.name:16s} {info.kind:10s} {info.tree}\n{'':27s} source: {info.source}\n")
    return 0


def _synth(args: argparse.Namespace) -> int:
    if args.name == "synthetic-reid":
        from reidbench.synthetic.reid import generate_synthetic_reid as generate
    else:
        from reidbench.synthetic.faces import generate_synthetic_faces as generate
    kwargs = {"seed": args.seed, **({"num_ids": args.ids} if args.ids else {})}
    if args.train_ids is not None:
        if args.name != "synthetic-faces":
            raise ConfigError("--train-ids applies to synthetic-faces only")
        kwargs["num_train_ids"] = args.train_ids
    from reidbench.datasets.textio import os_errors

    with os_errors(f"data synth {args.name}"):
        manifest = generate(args.root, **kwargs)
    log.info("wrote %s to %s: %s", args.name, args.root, manifest.get("counts"))
    return 0


def _check(args: argparse.Namespace) -> int:
    from reidbench.config import DataConfig
    from reidbench.datasets.catalog import build_dataset, dataset_info
    from reidbench.datasets.checks import check_report, format_report

    cfg = DataConfig(name=args.name, root=args.data_root, keypoints=args.keypoints)
    data = build_dataset(cfg)  # every layout problem is a DatasetError naming the path
    info = dataset_info(args.name)
    report = check_report(args.name, data, info.published if info else None, args.images)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    if report["unreadable"]:
        first = report["unreadable"][0]
        raise DatasetError(
            f"{args.name}: {len(report['unreadable'])} unreadable image file(s), "
            f"first {first['path']}: {first['error']}"
        )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from reidbench.config import DataConfig
    from reidbench.datasets.catalog import build_dataset
    from reidbench.reporting.preview import preview_dataset

    # an unknown name is the registry's one-line error, raised by build_dataset
    data = build_dataset(DataConfig(name=args.name, root=args.data_root, keypoints=args.keypoints))
    records = preview_dataset(data, args.split, args.out, args.num, args.seed)
    log.info("wrote %s (%d samples of %s)", args.out, len(records), args.name)
    return 0
