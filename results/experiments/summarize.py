"""Print the positional-loss experiment table from run records (README.md in this folder).

Usage: python3 results/experiments/summarize.py [results/experiments/runs]

Every number comes from a run's config.yaml, metrics.json, timings.json and history.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def load(run: Path) -> dict[str, Any]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    timings_path = run / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    return {"run": run.name, "cfg": cfg, "history": history, "metrics": metrics, "timings": timings}


def describe(cfg: dict[str, Any]) -> str:
    loss = cfg["loss"]
    terms = " + ".join(
        f"{w:g} {t}" + (f" (margin {loss['rp_margin']:g})" if t == "rp_triplet" else "")
        for t, w in zip(loss["terms"], loss["weights"])
    )
    return terms


def positional_term(cfg: dict[str, Any]) -> str | None:
    return next((t for t in cfg["loss"]["terms"] if t in ("rp_triplet", "jsd")), None)


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def main(root: Path) -> None:
    runs = [load(p) for p in sorted(root.iterdir()) if (p / "history.jsonl").is_file()]
    emit("| run | loss | seed | threads | epochs | mAP | rank-1 | mINP | train s |")
    emit("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m, c = r["metrics"], r["cfg"]
        emit(
            f"| {r['run']} | {describe(c)} | {c['train']['seed']} | {c['train']['threads']} | "
            f"{len(r['history'])} | {fmt(m.get('mAP'))} | {fmt(m.get('rank1'))} | {fmt(m.get('mINP'))} | "
            f"{fmt(r['timings'].get('train_seconds'), 0)} |"
        )
    emit()
    emit(
        "| run | term | term at epochs 1 / 10 / 20 / 40 | rel_norm 1 / 10 / 20 / 40 | "
        "d_pos 1 / 40 | d_neg 1 / 40 | max grad_norm |"
    )
    emit("|---|---|---|---|---|---|---|")
    for r in runs:
        term = positional_term(r["cfg"])
        if term is None:
            continue
        h = r["history"]
        at = [h[i - 1] for i in (1, 10, 20, 40) if i <= len(h)]
        emit(
            f"| {r['run']} | {term} | {' / '.join(fmt(e[term]) for e in at)} | "
            f"{' / '.join(fmt(e[term + '_rel_norm'], 3) for e in at)} | "
            f"{fmt(h[0][term + '_d_pos'], 3)} / {fmt(h[-1][term + '_d_pos'], 3)} | "
            f"{fmt(h[0][term + '_d_neg'], 3)} / {fmt(h[-1][term + '_d_neg'], 3)} | "
            f"{max(e['grad_norm'] for e in h):.1f} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/experiments/runs"))
