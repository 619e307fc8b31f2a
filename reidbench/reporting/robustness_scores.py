"""Robustness scores and their uncertainty, computed from the robustness CSV rows alone: each
model's score (mean over severities of perturbed metric / clean metric) and paired bootstrap
intervals of the score difference between two models."""

from __future__ import annotations

from typing import Any

import numpy as np

HEADLINE = {"reid": "mAP", "verification": "accuracy"}
REFERENCE_MODEL = "kprpe"  # the report asks whether this model degrades less than the others
NAMES = {"ape": "APE", "rpe": "RPE", "irpe": "iRPE", "kprpe": "KP-RPE", "poster": "POSTER"}
Row = dict[str, Any]
PerSample = dict[tuple[str, str, int], np.ndarray]  # (run id, perturbation, severity) -> per
#   query AP (re-ID) or per pair 1/0 correct (verification): see ``Cell.per_sample``
BOOTSTRAP = 1000  # paired bootstrap resamples of the queries or pairs



def bootstrap_differences(
    per_sample: PerSample, ref: str, other: str, perts: list[str], sevs: list[int],
    resamples: int = BOOTSTRAP, seed: int = 0,
) -> dict[str, tuple[float, float]] | None:
    """95 % paired bootstrap intervals of the robustness score difference ``ref - other`` per
    perturbation and for their mean, the metric being the mean of the per-sample values (mAP;
    k-fold accuracy with the fold thresholds held fixed): the queries or pairs are resampled
    with replacement, the same resample for both models, every severity and the clean
    reference. None if a cell is missing."""
    keys = [(run, "clean", 0) for run in (ref, other)]
    keys += [(run, p, s) for run in (ref, other) for p in perts for s in sevs if s > 0]
    if any(k not in per_sample for k in keys) or len({len(per_sample[k]) for k in keys}) != 1:
        return None
    n = len(per_sample[keys[0]])
    if n < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))

    def score(run: str, pert: str) -> np.ndarray:  # (resamples,)
        clean = per_sample[(run, "clean", 0)][idx].mean(1)
        ratios = [per_sample[(run, pert, s)][idx].mean(1) / np.maximum(clean, 1e-12)
                  for s in sevs if s > 0]
        return np.mean(ratios, axis=0)

    diffs = {p: score(ref, p) - score(other, p) for p in perts}
    diffs["mean"] = np.mean([diffs[p] for p in perts], axis=0)
    return {p: (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))) for p, d in diffs.items()}


def model_labels(rows: list[Row]) -> dict[tuple[str, str], str]:
    """(model, run_id) -> display name; the run id is added only where a model appears twice."""
    keys = list(dict.fromkeys((r["model"], r["run_id"]) for r in rows))
    counts: dict[str, int] = {}
    for model, _ in keys:
        counts[model] = counts.get(model, 0) + 1
    return {(m, run): NAMES.get(m, m) + (f" ({run})" if counts[m] > 1 else "") for m, run in keys}


def mean_or_none(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def robustness_scores(rows: list[Row], metric: str) -> dict[str, dict[str, float | None]]:
    """Per model label: perturbation -> mean over severities > 0 of value / clean, and "mean"
    over the perturbations. 1.0 means no degradation."""
    labels = model_labels(rows)
    out: dict[str, dict[str, float | None]] = {}
    for key, label in labels.items():
        mine = [r for r in rows if (r["model"], r["run_id"]) == key and r["metric"] == metric
                and r["severity"] > 0]
        scores: dict[str, float | None] = {}
        for pert in dict.fromkeys(r["perturbation"] for r in mine):
            scores[pert] = mean_or_none([r["ratio"] for r in mine
                                  if r["perturbation"] == pert and r["ratio"] is not None])
        scores["mean"] = mean_or_none([v for v in scores.values() if v is not None])
        out[label] = scores
    return out


def relative_se(rows: list[Row], key: tuple[str, str], metric: str, pert: str) -> float | None:
    """Mean over severities > 0 of stderr / clean: an upper bound on the standard error of a
    score when the severities' errors are fully correlated."""
    ses = [r["stderr"] / r["clean"] for r in rows
           if (r["model"], r["run_id"]) == key and r["metric"] == metric and r["perturbation"] == pert
           and r["severity"] > 0 and r["stderr"] is not None and r["clean"]]
    return mean_or_none(ses)


def perturbations_of(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r["perturbation"] for r in rows))


def severities_of(rows: list[Row]) -> list[int]:
    return sorted({r["severity"] for r in rows})


def metrics_of(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r["metric"] for r in rows))


def value_at(rows: list[Row], key: tuple[str, str], metric: str, pert: str, severity: int) -> float | None:
    for r in rows:
        if ((r["model"], r["run_id"]) == key and r["metric"] == metric and r["perturbation"] == pert
                and r["severity"] == severity):
            return r["value"]
    return None


