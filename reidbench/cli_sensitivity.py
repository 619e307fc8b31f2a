"""`reidbench robustness --kp-sensitivity`: parsing done by ``cli_robustness``; one library call."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("reidbench")


def cmd_kp_sensitivity(
    args: argparse.Namespace, sources: list[Any], severities: tuple[int, ...], command: str,
) -> int:
    from reidbench.engine.sensitivity import sensitivity_rows, write_sensitivity

    rows = sensitivity_rows(sources, severities, seed=args.perturb_seed, data_root=args.data_root,
                            device=args.device, batch_size=args.batch_size)
    out = Path(getattr(args, "output", None) or getattr(args, "out", None) or "results/robustness")
    report_id = args.id or f"{rows[0]['dataset']}-kp-sensitivity"
    paths = write_sensitivity(rows, out, report_id, command=command, overwrite=args.overwrite)
    for r in rows:
        log.info("kp sensitivity %-8s severity %d: mean 1-cos %.3g, %s %s -> %s", r["model"],
                 r["severity"], r["embedding_change"], r["metric"], r["clean_value"], r["noisy_value"])
    log.info("wrote %s and %s", paths["json"], paths["markdown"])
    return 0
