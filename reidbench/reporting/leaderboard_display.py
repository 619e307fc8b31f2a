"""The leaderboards as a reader sees them: the columns of ``reporting.aggregate``'s tables
formatted as strings (mean ± std, score [interval]) for the markdown and HTML pages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reidbench.reporting.aggregate import MEAN, METRICS

TASKS = {"reid": "re-ID ranking", "verification": "verification"}


@dataclass
class Published:
    """What ``publish`` built and wrote."""

    rows: list[dict[str, Any]]  # the per-run leaderboard
    skipped: list[str]
    boards: dict[str, pd.DataFrame] = field(default_factory=dict)  # task -> leaderboard
    comparisons: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _spread(mean: float, std: float) -> str:
    return _num(mean) + ("" if _num(std) == "" else f" ± {_num(std)}")


def _with_interval(value: float, lo: float, hi: float) -> str:
    text = _num(value, 3)
    return text if _num(lo) == "" else f"{text} [{lo:.3f}, {hi:.3f}]"


def display(board: pd.DataFrame, task: str) -> pd.DataFrame:
    """The leaderboard as a reader sees it (strings): recipe, mean ± std, scores [interval]."""
    perts = [c[len("robustness_"):-len("_lo")] for c in board.columns
             if c.startswith("robustness_") and c.endswith("_lo")]
    out = board[["dataset", "model", "size", "data", "eval_set", "epochs", "pretrained",
                 "keypoints", "augmentation", "recipe", "n_seeds"]].astype(str).copy()
    out = out.rename(columns={"n_seeds": "n"})
    for m in METRICS[task]:
        out[m] = [_spread(a, b) for a, b in zip(board[f"{m}_mean"], board[f"{m}_std"])]
    for p in perts:
        label = "robustness (all)" if p == MEAN else f"robustness {p}"
        out[label] = [_with_interval(v, lo, hi) for v, lo, hi in
                      zip(board[f"robustness_{p}"], board[f"robustness_{p}_lo"], board[f"robustness_{p}_hi"])]
    return out


def display_comparison(table: pd.DataFrame) -> pd.DataFrame:
    out = table[["dataset", "data", "epochs", "recipe", "model", "reference", "perturbation",
                 "n_seeds"]].astype(str).copy()
    out["difference [95 % interval]"] = [
        _with_interval(d, lo, hi) if _num(lo) == "" else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        for d, lo, hi in zip(table["difference"], table["difference_lo"], table["difference_hi"])]
    out["verdict"] = table["verdict"]
    return out


def markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def _where(perts: list[str]) -> str:
    """``under scale, rotate and on average`` (``mean`` is the average over perturbations)."""
    named = [p for p in perts if p != MEAN]
    text = f"under {', '.join(named)}" if named else ""
    return text + (" and " if named and MEAN in perts else "") + ("on average" if MEAN in perts else "")


def verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, recipe, model) of a comparison: what is beyond the noise, and
    on how many seeds (with one, the interval is the evaluation noise alone)."""
    out = []
    for (dataset, recipe, model), rows in table.groupby(["dataset", "recipe", "model"], sort=True):
        ref = rows["reference"].iloc[0]
        seeds = int(rows["n_seeds"].max())
        scored = rows[rows["perturbation"] != "clean"]
        higher = list(scored.loc[scored["verdict"] == "higher, beyond noise", "perturbation"])
        lower = list(scored.loc[scored["verdict"] == "lower, beyond noise", "perturbation"])
        parts = [f"degrades {word} than {ref} beyond the noise {_where(perts)}"
                 for word, perts in (("less", higher), ("more", lower)) if perts]
        if not parts:
            parts.append(f"cannot be told apart from {ref} under any perturbation")
        note = ("1 seed: the interval is the evaluation noise alone, seed-to-seed spread not "
                "measured" if seeds == 1 else f"{seeds} seeds")
        out.append(f"{model} on {dataset} (recipe {recipe}): {'; '.join(parts)} ({note}).")
    return out
