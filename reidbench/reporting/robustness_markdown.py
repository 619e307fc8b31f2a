"""The markdown robustness report: setup, per-perturbation tables, each model's robustness score
and how the reference model (KP-RPE) compares with every other, from the CSV rows alone."""

from __future__ import annotations

import math
from typing import Any

from reidbench.errors import ReidbenchError
from reidbench.reporting.robustness_scores import (
    BOOTSTRAP,
    HEADLINE,
    REFERENCE_MODEL,
    PerSample,
    Row,
    bootstrap_differences,
    mean_or_none,
    metrics_of,
    model_labels,
    perturbations_of,
    relative_se,
    robustness_scores,
    severities_of,
    value_at,
)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def to_markdown(rows: list[Row], meta: dict[str, Any] | None = None, csv_name: str = "",
                png_name: str = "", examples_name: str = "", per_sample: PerSample | None = None,
                ) -> str:
    """The report: setup, robustness scores, the reference-model comparison, full tables.
    ``per_sample`` gives paired bootstrap intervals in the comparison."""
    if not rows:
        raise ReidbenchError("no robustness rows to report")
    meta = meta or {}
    first = rows[0]
    task, dataset, side = first["task"], first["dataset"], first["side"]
    headline = HEADLINE.get(task, metrics_of(rows)[0])
    labels = model_labels(rows)
    perts, sevs, metrics = perturbations_of(rows), severities_of(rows), metrics_of(rows)
    perturbed = "queries" if task == "reid" else "the second image of each pair"
    if side == "both":
        perturbed = "queries and gallery" if task == "reid" else "both images of each pair"
    out = [f"# Robustness to misalignment: {dataset}", ""]
    out.append(f"Perturbed: {perturbed}; perturbation seed {first['seed']}; {first['num_samples']} "
               f"{'valid queries' if task == 'reid' else 'pairs'}. Every number below is read from "
               f"`{csv_name or 'the CSV'}` (one row per model x perturbation x severity x metric).")
    if meta.get("command"):
        out += ["", "Regenerate with:", "", "```", meta["command"], "```"]
    out += ["", "## Models", "", "| model | run | " + " | ".join(f"clean {m}" for m in metrics)
            + " | train s | robustness eval s |", "|---|---|" + "---|" * (len(metrics) + 2)]
    by_run = {m.get("run_id"): m for m in meta.get("models", [])}
    for (model, run), label in labels.items():
        clean = [value_at(rows, (model, run), m, perts[0], 0) for m in metrics]
        info = by_run.get(run, {})
        out.append(f"| {label} | `{run}` | " + " | ".join(_num(v, 4) for v in clean)
                   + f" | {_num(info.get('train_seconds'), 0)} | {_num(info.get('robustness_seconds'), 0)} |")
    out += ["", "## Perturbations", "", "| perturbation | " + " | ".join(f"severity {s}" for s in sevs
                                                                        if s > 0) + " |",
            "|---|" + "---|" * len([s for s in sevs if s > 0])]
    for pert in perts:
        params = {r["severity"]: r["parameters"] for r in rows if r["perturbation"] == pert}
        out.append(f"| {pert} | " + " | ".join(params.get(s, "") for s in sevs if s > 0) + " |")
    out += ["", "Severity 0 is the clean image. Geometric perturbations move image and keypoints with "
            "one matrix (KP-RPE gets the moved keypoints); `kpnoise` moves only the keypoints.",
            "Parameters: `reidbench/data/perturb.py`."]
    for name, why in sorted((meta.get("skipped") or {}).items()):
        out += ["", f"**`{name}` was skipped**: {why}."]
    for metric in [headline] + [m for m in metrics if m != headline]:
        scores = robustness_scores(rows, metric)
        out += ["", f"## Robustness score ({metric})", "",
                f"Mean over severities {_range(sevs)} of perturbed {metric} / clean {metric} "
                "(1.000 = no degradation).", "",
                "| model | " + " | ".join(perts) + " | mean |", "|---|" + "---|" * (len(perts) + 1)]
        for label, s in scores.items():
            out.append(f"| {label} | " + " | ".join(_num(s.get(p)) for p in perts)
                       + f" | {_num(s.get('mean'))} |")
        if metric == headline:
            out += _comparison(rows, headline, perts, per_sample)
    for metric in metrics:
        out += ["", f"## {metric} by severity", "",
                "| model | perturbation | " + " | ".join(str(s) for s in sevs) + " |",
                "|---|---|" + "---|" * len(sevs)]
        for key, label in labels.items():
            for pert in perts:
                out.append(f"| {label} | {pert} | "
                           + " | ".join(_num(value_at(rows, key, metric, pert, s)) for s in sevs) + " |")
    if png_name:
        out += ["", f"![metrics vs severity, one panel per perturbation]({png_name})"]
    if examples_name:
        out += ["", "What the models see (one query, every perturbation and severity, keypoints drawn):",
                "", f"![examples]({examples_name})"]
    return "\n".join(out) + "\n"


def _range(sevs: list[int]) -> str:
    pos = [s for s in sevs if s > 0]
    if len(pos) > 1 and pos == list(range(pos[0], pos[-1] + 1)):
        return f"{pos[0]}-{pos[-1]}"
    return ", ".join(map(str, pos)) or "(none)"


def _comparison(
    rows: list[Row], metric: str, perts: list[str], per_sample: PerSample | None = None,
) -> list[str]:
    """Does the reference model (KP-RPE) degrade less than each other model, and by how much?"""
    labels = model_labels(rows)
    refs = [key for key in labels if key[0] == REFERENCE_MODEL]
    others = [key for key in labels if key[0] != REFERENCE_MODEL]
    if len(refs) != 1 or not others:
        return []
    ref = refs[0]
    name = labels[ref]
    scores = robustness_scores(rows, metric)
    sevs = severities_of(rows)
    intervals = {key: bootstrap_differences(per_sample, ref[1], key[1], perts, sevs)
                 for key in others} if per_sample and metric in HEADLINE.values() else {}
    paired = bool(intervals) and all(v is not None for v in intervals.values())
    unit = "queries" if rows[0]["task"] == "reid" else "pairs (fold thresholds held fixed)"
    noise = (f"`[lo, hi]` is the 95 % paired bootstrap interval of the score difference over the "
             f"{unit} ({BOOTSTRAP} resamples, the same ones for both models); `~` marks an "
             "interval that contains 0." if paired else
             "`~` marks a score difference smaller than twice its standard error, taken unpaired "
             "(the two models' errors added as if independent, which overstates it).")
    out = ["", f"### Does {name} degrade less than the others?", "",
           f"Robustness score of {name} minus that of the other model (positive: {name} keeps more "
           f"of its clean {metric}); in brackets the difference in mean perturbed {metric} itself. "
           + noise, "",
           f"| perturbation | {name} score | " + " | ".join(f"vs {labels[k]}" for k in others)
           + f" | {name} degrades less than |", "|---|---|" + "---|" * (len(others) + 1)]
    wins_total = clear_total = 0
    for pert in perts + ["mean"]:
        s_ref = scores[name].get(pert)
        if s_ref is None:
            continue
        cells, wins, clear, losses = [], [], 0, []
        for key in others:
            s_o = scores[labels[key]].get(pert)
            if s_o is None:
                cells.append("-")
                continue
            diff = s_ref - s_o
            abs_diff = _mean_perturbed(rows, ref, metric, pert) - _mean_perturbed(rows, key, metric, pert)
            interval = (intervals.get(key) or {}).get(pert) if paired else None
            if interval is not None:
                noisy = interval[0] <= 0.0 <= interval[1]
                text = f"{_signed(diff)} [{_signed(interval[0])}, {_signed(interval[1])}]"
            else:
                se_ref, se_o = (_mean_se(rows, k, metric, pert, perts) for k in (ref, key))
                noisy = se_ref is not None and se_o is not None and abs(diff) < 2 * math.hypot(se_ref, se_o)
                text = _signed(diff)
            cells.append(f"{text}{' ~' if noisy else ''} ({_signed(abs_diff)})")
            if diff > 0:
                wins.append(labels[key])
            elif not noisy:
                losses.append(labels[key])
            clear += not noisy and diff > 0
        verdict = (f"{len(wins)} of {len(cells)}" + (f" ({', '.join(wins)})" if wins else "")
                   + (f"; {clear} beyond noise" if wins else "")
                   + (f"; degrades more than {', '.join(losses)} beyond noise" if losses else ""))
        label = "**all (mean)**" if pert == "mean" else pert
        out.append(f"| {label} | {_num(s_ref)} | " + " | ".join(cells) + f" | {verdict} |")
        wins_total += len(wins) == len(cells) and pert != "mean"
        clear_total += clear == len(cells) and pert != "mean"
    out += ["", f"{name} degrades less than every other model under {wins_total} of {len(perts)} "
            f"perturbations, and beyond the evaluation noise under {clear_total}. One training seed "
            "per model: the spread between training seeds is not measured here and may exceed the "
            "evaluation-set noise marked above."]
    if "kpnoise" in perts:
        out += ["", "`kpnoise` changes only the keypoints, which APE, RPE and iRPE never read (their "
                f"score is 1 by construction); {name}'s score there measures how much its embedding "
                "depends on the keypoints it is given."]
    return out


def _mean_perturbed(rows: list[Row], key: tuple[str, str], metric: str, pert: str) -> float:
    perts = [pert] if pert != "mean" else perturbations_of(rows)
    vals = [r["value"] for r in rows if (r["model"], r["run_id"]) == key and r["metric"] == metric
            and r["perturbation"] in perts and r["severity"] > 0 and r["value"] is not None]
    return mean_or_none(vals) or 0.0


def _mean_se(rows: list[Row], key: tuple[str, str], metric: str, pert: str, perts: list[str],
             ) -> float | None:
    if pert != "mean":
        return relative_se(rows, key, metric, pert)
    return mean_or_none([v for p in perts if (v := relative_se(rows, key, metric, p)) is not None])


