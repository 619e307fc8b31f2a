"""Print the positional-loss experiment table from run records (results/experiments/README.md).

Usage: python3 scripts/experiments/summarize.py [results/experiments/runs]

Every number comes from a run's record (``reidbench.reporting.records``): its config, metrics,
timings and per-epoch history.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from reidbench.config import RunConfig
from reidbench.reporting.records import (
    CONFIG,
    HISTORY,
    METRICS,
    TIMINGS,
    list_runs,
    read_history,
    read_json,
    read_run_config,
)

POSITIONAL = ("rp_triplet", "jsd")


def load(run: Path) -> dict[str, Any]:
    """A run's config, history, metrics and timings (empty when the run has none)."""
    metrics = read_json(run / METRICS) if (run / METRICS).is_file() else {}
    timings = read_json(run / TIMINGS) if (run / TIMINGS).is_file() else {}
    return {"run": run.name, "cfg": read_run_config(run / CONFIG), "history": read_history(run),
            "metrics": metrics, "timings": timings}


def describe(cfg: RunConfig) -> str:
    """The loss of a run: ``1 ce + 1 triplet + 0.1 rp_triplet (margin 0.3)``."""
    loss = cfg.loss
    return " + ".join(
        f"{w:g} {t}" + (f" (margin {loss.rp_margin:g})" if t == "rp_triplet" else "")
        for t, w in zip(loss.terms, loss.weights)
    )


def positional_term(cfg: RunConfig) -> str | None:
    return next((t for t in cfg.loss.terms if t in POSITIONAL), None)


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def main(root: Path) -> None:
    runs = [load(p) for p in list_runs(root) if (p / HISTORY).is_file()]
    emit("| run | loss | seed | threads | epochs | mAP | rank-1 | mINP | train s |")
    emit("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        m, c = r["metrics"], r["cfg"]
        emit(
            f"| {r['run']} | {describe(c)} | {c.train.seed} | {c.train.threads} | "
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
