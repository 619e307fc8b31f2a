"""The leaderboards: group-bys of the tidy run and robustness tables (``reporting.tidy``).

- ``task_leaderboard``: one row per (dataset, model, recipe key of ``reporting.recipe``) of one
  task, with the mean and the sample standard deviation (``ddof=1``; empty for one seed) over
  seeds of every clean metric and of the robustness scores, the number of seeds, and 95 %
  hierarchical bootstrap intervals (``reporting.bootstrap``) of the robustness scores;
- ``comparison``: each model minus a reference model (default APE) of the same recipe, paired by
  seed and by evaluation sample, per perturbation, with its interval and whether the interval
  excludes 0 ("beyond the noise");
- ``curves``: mean headline metric per severity with its interval, for the plots.

A robustness score is the mean over severities > 0 of perturbed / clean headline metric (mAP
for re-ID, accuracy for verification); 1.0 means no degradation. Point values come from the
robustness CSVs; intervals need the per-sample files beside them (else they are empty).
When one seed was recorded twice with the same recipe, the newest run counts, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import numpy as np
import pandas as pd

from reidbench.reporting.bootstrap import RESAMPLES, Statistic, hierarchical_bootstrap, interval
from reidbench.reporting.leaderboard import REID_FRACTIONS
from reidbench.reporting.recipe import KEY
from reidbench.reporting.robustness_scores import HEADLINE, PerSample
from reidbench.reporting.tidy import Robustness

log = logging.getLogger(__name__)

METRICS = {"reid": list(REID_FRACTIONS), "verification": ["accuracy", "auc", "eer", "tar_at_far_1e-2"]}
REFERENCE = "ape"
PAIR_KEY = [k for k in KEY if k not in ("model", "arch")]  # what a comparison holds fixed
MEAN = "mean"  # the perturbation label of the overall score


def one_run_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with one run per (recipe key, seed): the newest (run ids sort by start time)."""
    if runs.empty:
        return runs
    ordered = runs.sort_values("run_id", kind="stable")
    dup = ordered.duplicated([*KEY, "seed"], keep="last")
    for run_id in ordered.loc[dup, "run_id"]:
        log.warning("run %s: a newer run of the same recipe and seed exists; the leaderboard "
                    "counts the newer one", run_id)
    return ordered[~dup]


def run_scores(rob: Robustness, task: str) -> pd.DataFrame:
    """Robustness score per run (index) and perturbation (columns, plus ``mean``) of the
    task's headline metric."""
    frame = rob.frame
    if frame.empty or "metric" not in frame:
        return pd.DataFrame()
    cells = frame[(frame["metric"] == HEADLINE[task]) & (frame["severity"] > 0)]
    if cells.empty:
        return pd.DataFrame()
    scores = cells.pivot_table(index="run_id", columns="perturbation", values="ratio",
                               aggfunc="mean", sort=False)
    scores[MEAN] = scores.mean(axis=1)
    return scores


def _cells(rob: Robustness, run_id: str, task: str) -> dict[str, list[int]]:
    """Perturbation -> severities > 0 swept for ``run_id`` (headline metric)."""
    frame = rob.frame
    mine = frame[(frame["run_id"] == run_id) & (frame["metric"] == HEADLINE[task])
                 & (frame["severity"] > 0)]
    return {p: sorted(g["severity"]) for p, g in mine.groupby("perturbation", sort=False)}


def _arrays(per_sample: PerSample, run_id: str, cells: dict[str, list[int]], tag: Hashable = ""
            ) -> dict[Hashable, np.ndarray] | None:
    """The per-sample arrays of one run (clean + every cell), keyed (tag, perturbation,
    severity); None if one is missing."""
    keys = [("clean", 0)] + [(p, s) for p, sevs in cells.items() for s in sevs]
    if any((run_id, p, s) not in per_sample for p, s in keys):
        return None
    return {(tag, p, s): np.asarray(per_sample[(run_id, p, s)], np.float64) for p, s in keys}


def _scores(means: dict[Hashable, np.ndarray], cells: dict[str, list[int]], tag: Hashable = ""
            ) -> dict[str, np.ndarray]:
    clean = np.maximum(means[(tag, "clean", 0)], 1e-12)
    out = {p: np.mean([means[(tag, p, s)] / clean for s in sevs], axis=0) for p, sevs in cells.items()}
    out[MEAN] = np.mean([out[p] for p in cells], axis=0)
    out["clean"] = means[(tag, "clean", 0)]
    return out


def _common_cells(rob: Robustness, run_ids: list[str], task: str) -> dict[str, list[int]]:
    """The perturbation/severity cells every run in ``run_ids`` was swept on."""
    each = [_cells(rob, r, task) for r in run_ids]
    if not each:
        return {}
    perts = [p for p in each[0] if all(p in c for c in each)]
    return {p: sorted(set.intersection(*(set(c[p]) for c in each))) for p in perts}


def score_intervals(rob: Robustness, run_ids: list[str], task: str, resamples: int = RESAMPLES,
                    seed: int = 0) -> tuple[dict[str, tuple[float, float]], int]:
    """95 % hierarchical bootstrap intervals of the robustness scores (per perturbation and
    ``mean``) of the runs ``run_ids`` (one per seed); and how many seeds they rest on (the
    runs with per-sample values; 0: no interval)."""
    cells = _common_cells(rob, run_ids, task)
    per_seed = [a for r in run_ids if cells and (a := _arrays(rob.per_sample, r, cells)) is not None]
    if not per_seed:
        return {}, 0
    reps = hierarchical_bootstrap(per_seed, lambda m: _scores(m, cells), resamples, seed)
    return {p: interval(v) for p, v in reps.items() if p != "clean"}, len(per_seed)


def task_leaderboard(runs: pd.DataFrame, rob: Robustness, task: str, resamples: int = RESAMPLES,
                     seed: int = 0) -> pd.DataFrame:
    """The leaderboard of ``task`` (columns documented in the README, "The leaderboards")."""
    runs = one_run_per_seed(runs[runs["task"] == task]) if not runs.empty else runs
    if runs.empty:
        return pd.DataFrame()
    metrics = METRICS[task]
    runs = runs.assign(**{m: pd.to_numeric(runs[m], errors="coerce") for m in metrics})
    scores = run_scores(rob, task)
    perts = [c for c in scores.columns if c != MEAN]
    with_scores = runs.join(scores.add_prefix("robustness_"), on="run_id") if not scores.empty else runs
    score_cols = [f"robustness_{p}" for p in perts] + ([f"robustness_{MEAN}"] if perts else [])
    grouped = with_scores.groupby(KEY, sort=True, dropna=False)
    table = grouped.agg(
        n_seeds=("seed", "size"),
        seeds=("seed", lambda s: ",".join(map(str, sorted(s)))),
        **{f"{m}_mean": (m, "mean") for m in metrics},
        **{f"{m}_std": (m, lambda x: x.std(ddof=1)) for m in metrics},
        **{f"{c}_mean": (c, "mean") for c in score_cols},
        **({f"robustness_{MEAN}_std": (f"robustness_{MEAN}", lambda x: x.std(ddof=1))} if perts else {}),
        runs=("run_id", lambda s: " ".join(sorted(s))),
    ).reset_index()
    if perts:
        found = [score_intervals(rob, run_ids.split(), task, resamples, seed) for run_ids in table["runs"]]
        table["robustness_seeds"] = [n for _, n in found]
        for p in [*perts, MEAN]:
            table[f"robustness_{p}_lo"] = [iv[p][0] if p in iv else np.nan for iv, _ in found]
            table[f"robustness_{p}_hi"] = [iv[p][1] if p in iv else np.nan for iv, _ in found]
    table = table.rename(columns={f"robustness_{p}_mean": f"robustness_{p}" for p in [*perts, MEAN]})
    order = [*KEY, "n_seeds", "seeds", *[c for m in metrics for c in (f"{m}_mean", f"{m}_std")]]
    for p in [*perts, MEAN] if perts else []:
        order += [f"robustness_{p}", f"robustness_{p}_lo", f"robustness_{p}_hi"]
    order += ([f"robustness_{MEAN}_std", "robustness_seeds"] if perts else []) + ["runs"]
    first = f"{HEADLINE[task]}_mean"
    return table[order].sort_values(["dataset", first, "model"], ascending=[True, False, True],
                                    kind="stable").reset_index(drop=True)


def comparison(board: pd.DataFrame, runs: pd.DataFrame, rob: Robustness, task: str,
               reference: str = REFERENCE, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Each model minus ``reference`` of the same recipe (``PAIR_KEY``), per perturbation
    (``clean``: the clean headline metric; ``mean``: the overall score): mean over the seeds
    both have of the per-seed difference, its 95 % hierarchical paired bootstrap interval
    (the same seeds and the same samples for both models) and the verdict."""
    if board.empty or "robustness_mean" not in board:
        return pd.DataFrame()
    scores = run_scores(rob, task)
    seed_of = dict(zip(runs["run_id"], runs["seed"]))
    out = []
    for _, group in board.groupby(PAIR_KEY, sort=True, dropna=False):
        refs = group[group["model"] == reference]
        if len(refs) != 1:
            if len(refs) > 1:
                log.warning("comparison: %d %s rows of one recipe (model settings differ): no "
                            "comparison for it", len(refs), reference)
            continue
        ref = refs.iloc[0]
        ref_runs = {seed_of[r]: r for r in ref["runs"].split()}
        for _, row in group[group["model"] != reference].iterrows():
            pairs = [(ref_runs[seed_of[r]], r) for r in sorted(row["runs"].split())
                     if seed_of[r] in ref_runs and r in scores.index and ref_runs[seed_of[r]] in scores.index]
            if pairs:
                out += _compare(row, reference, pairs, scores, rob, task, resamples, seed,
                                sorted(seed_of[r] for _, r in pairs))
    return pd.DataFrame(out)


def _compare(row: pd.Series, reference: str, pairs: list[tuple[str, str]], scores: pd.DataFrame,
             rob: Robustness, task: str, resamples: int, seed: int, seeds: list[int]) -> list[dict]:
    clean = rob.frame[(rob.frame["metric"] == HEADLINE[task])].groupby("run_id")["clean"].first()
    cells = _common_cells(rob, [r for pair in pairs for r in pair], task)
    per_seed = []
    for ref_run, run in pairs:
        a, b = _arrays(rob.per_sample, ref_run, cells, "ref"), _arrays(rob.per_sample, run, cells, "model")
        if a is None or b is None or len(next(iter(a.values()))) != len(next(iter(b.values()))):
            per_seed = []
            break
        per_seed.append(a | b)
    reps = {}
    if per_seed and cells:
        reps = hierarchical_bootstrap(
            per_seed, lambda m: {k: v - _scores(m, cells, "ref")[k]
                                 for k, v in _scores(m, cells, "model").items()}, resamples, seed)
    out = []
    for pert in ["clean", *[c for c in scores.columns if c != MEAN], MEAN]:
        if pert == "clean":
            mine = [clean.get(r) for _, r in pairs]
            theirs = [clean.get(r) for r, _ in pairs]
        else:
            mine = [scores.at[r, pert] for _, r in pairs]
            theirs = [scores.at[r, pert] for r, _ in pairs]
        if any(v is None or pd.isna(v) for v in [*mine, *theirs]):
            continue
        diff = float(np.mean(np.subtract(mine, theirs)))
        lo, hi = interval(reps[pert]) if pert in reps else (np.nan, np.nan)
        verdict = ("interval missing" if np.isnan(lo) else "within noise" if lo <= 0.0 <= hi
                   else "higher, beyond noise" if lo > 0 else "lower, beyond noise")
        out.append({**{k: row[k] for k in PAIR_KEY}, "model": row["model"], "reference": reference,
                    "metric": HEADLINE[task], "perturbation": pert, "n_seeds": len(pairs),
                    "seeds": ",".join(map(str, seeds)), "value": float(np.mean(mine)),
                    "reference_value": float(np.mean(theirs)), "difference": diff,
                    "difference_lo": lo, "difference_hi": hi, "verdict": verdict})
    return out


def _cell_means(cells: dict[str, list[int]]) -> Statistic:
    """The statistic of the curves: the resampled mean of every cell, ``"<perturbation>\t<severity>"``
    (severity 0: the clean values)."""

    def means(m: dict[Hashable, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{p}\t{s}": m[("", p, s) if s else ("", "clean", 0)]
                for p, sevs in cells.items() for s in [0, *sevs]}

    return means


def curves(board: pd.DataFrame, rob: Robustness, task: str, resamples: int = RESAMPLES,
           seed: int = 0) -> pd.DataFrame:
    """Mean over a leaderboard row's seeds of the headline metric per perturbation and
    severity (0 = clean), with its 95 % hierarchical bootstrap interval: the plots' data."""
    frame = rob.frame
    if board.empty or frame.empty or "metric" not in frame:
        return pd.DataFrame()
    headline = frame[frame["metric"] == HEADLINE[task]]
    out = []
    for i, row in board.iterrows():
        run_ids = row["runs"].split()
        mine = headline[headline["run_id"].isin(run_ids)]
        if mine.empty:
            continue
        means = mine.groupby(["perturbation", "severity"], sort=False)["value"].mean()
        cells = _common_cells(rob, run_ids, task)
        per_seed = [a for r in run_ids if cells and (a := _arrays(rob.per_sample, r, cells)) is not None]
        reps = hierarchical_bootstrap(per_seed, _cell_means(cells), resamples, seed) if per_seed else {}
        for (pert, sev), value in means.items():
            lo, hi = interval(reps[f"{pert}\t{sev}"]) if f"{pert}\t{sev}" in reps else (np.nan, np.nan)
            out.append({"row": i, "dataset": row["dataset"], "model": row["model"],
                        "perturbation": pert, "severity": int(sev), "value": value, "lo": lo, "hi": hi})
    return pd.DataFrame(out)
