"""The robustness report: CSV (one row per model x perturbation x severity x metric), a PNG plot
(metric vs severity, one panel per perturbation, one line per model), an example grid of what
the models see, and a markdown report with the tables and each model's robustness score.

The markdown and the plot are built from the CSV rows alone (``rebuild_report`` re-renders them
from the file), so no number in the report is typed by hand. Columns are documented in
``results/robustness/README.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reidbench.errors import ReidbenchError
from reidbench.evaluation.robustness import Cell
from reidbench.reporting.io import atomic_write_bytes, atomic_write_json, atomic_write_text, csv_text

COLUMNS = [
    "dataset", "task", "model", "run_id", "side", "seed", "perturbation", "severity", "parameters",
    "metric", "value", "stderr", "clean", "ratio", "num_samples",
]
HEADLINE = {"reid": "mAP", "verification": "accuracy"}
REFERENCE_MODEL = "kprpe"  # the report asks whether this model degrades less than the others
NAMES = {"ape": "APE", "rpe": "RPE", "irpe": "iRPE", "kprpe": "KP-RPE", "poster": "POSTER"}
Row = dict[str, Any]
PerSample = dict[tuple[str, str, int], np.ndarray]  # (run id, perturbation, severity) -> per
#   query AP (re-ID) or per pair 1/0 correct (verification): see ``Cell.per_sample``
BOOTSTRAP = 1000  # paired bootstrap resamples of the queries or pairs


def cell_rows(
    clean: Cell, cells: Iterable[Cell], *, dataset: str, task: str, model: str, run_id: str,
    side: str, seed: int, describe: Callable[[str, int], str],
) -> list[Row]:
    """CSV rows of one model's sweep; ``describe(perturbation, severity)`` names the parameters."""
    rows = []
    for cell in cells:
        for metric, value in cell.values.items():
            ref = clean.values.get(metric)
            ratio = value / ref if value is not None and ref else None
            rows.append({
                "dataset": dataset, "task": task, "model": model, "run_id": run_id, "side": side,
                "seed": seed, "perturbation": cell.perturbation, "severity": cell.severity,
                "parameters": describe(cell.perturbation, cell.severity), "metric": metric,
                "value": value, "stderr": cell.stderr.get(metric), "clean": ref, "ratio": ratio,
                "num_samples": cell.num_samples,
            })
    return rows


def per_sample_arrays(run_id: str, clean: Cell, cells: Iterable[Cell]) -> PerSample:
    """Per-sample values of one model's sweep, keyed by (run id, perturbation, severity); the
    clean cell is ``(run_id, "clean", 0)``."""
    return {(run_id, c.perturbation, c.severity): c.per_sample for c in [clean, *cells]
            if c.per_sample is not None}


def per_sample_bytes(arrays: PerSample) -> bytes:
    """``.npz`` of the per-sample values (float32): ``keys`` (tab-joined run, perturbation,
    severity) and ``ap_<i>`` for the i-th key."""
    keys = list(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, keys=np.array(["\t".join(map(str, k)) for k in keys]),
                        **{f"ap_{i}": np.asarray(arrays[k], np.float32) for i, k in enumerate(keys)})
    return buf.getvalue()


def read_per_sample(path: Path) -> PerSample:
    with np.load(path) as data:
        out = {}
        for i, key in enumerate(data["keys"]):
            run, pert, sev = str(key).split("\t")
            out[(run, pert, int(sev))] = data[f"ap_{i}"]
    return out


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


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def to_csv(rows: list[Row]) -> str:
    return csv_text(rows, COLUMNS, _fmt)


def read_csv(path: Path) -> list[Row]:
    """Rows of a robustness CSV with numbers parsed (empty cells -> None)."""
    if not path.is_file():
        raise ReidbenchError(f"robustness CSV {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != COLUMNS:
            raise ReidbenchError(f"{path} is not a robustness CSV: columns {reader.fieldnames}, "
                                 f"expected {COLUMNS}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            try:
                row: Row = dict(raw)
                for key in ("seed", "severity", "num_samples"):
                    row[key] = int(raw[key])
                for key in ("value", "stderr", "clean", "ratio"):
                    row[key] = float(raw[key]) if raw[key] else None
            except (TypeError, ValueError) as exc:
                raise ReidbenchError(f"{path}:{lineno}: malformed row ({exc})") from None
            rows.append(row)
    return rows


def model_labels(rows: list[Row]) -> dict[tuple[str, str], str]:
    """(model, run_id) -> display name; the run id is added only where a model appears twice."""
    keys = list(dict.fromkeys((r["model"], r["run_id"]) for r in rows))
    counts: dict[str, int] = {}
    for model, _ in keys:
        counts[model] = counts.get(model, 0) + 1
    return {(m, run): NAMES.get(m, m) + (f" ({run})" if counts[m] > 1 else "") for m, run in keys}


def _mean(values: list[float]) -> float | None:
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
            scores[pert] = _mean([r["ratio"] for r in mine
                                  if r["perturbation"] == pert and r["ratio"] is not None])
        scores["mean"] = _mean([v for v in scores.values() if v is not None])
        out[label] = scores
    return out


def _relative_se(rows: list[Row], key: tuple[str, str], metric: str, pert: str) -> float | None:
    """Mean over severities > 0 of stderr / clean: an upper bound on the standard error of a
    score when the severities' errors are fully correlated."""
    ses = [r["stderr"] / r["clean"] for r in rows
           if (r["model"], r["run_id"]) == key and r["metric"] == metric and r["perturbation"] == pert
           and r["severity"] > 0 and r["stderr"] is not None and r["clean"]]
    return _mean(ses)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _perturbations(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r["perturbation"] for r in rows))


def _severities(rows: list[Row]) -> list[int]:
    return sorted({r["severity"] for r in rows})


def _metrics(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(r["metric"] for r in rows))


def _value(rows: list[Row], key: tuple[str, str], metric: str, pert: str, severity: int) -> float | None:
    for r in rows:
        if ((r["model"], r["run_id"]) == key and r["metric"] == metric and r["perturbation"] == pert
                and r["severity"] == severity):
            return r["value"]
    return None


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
    headline = HEADLINE.get(task, _metrics(rows)[0])
    labels = model_labels(rows)
    perts, sevs, metrics = _perturbations(rows), _severities(rows), _metrics(rows)
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
        clean = [_value(rows, (model, run), m, perts[0], 0) for m in metrics]
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
                           + " | ".join(_num(_value(rows, key, metric, pert, s)) for s in sevs) + " |")
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
    sevs = _severities(rows)
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
    perts = [pert] if pert != "mean" else _perturbations(rows)
    vals = [r["value"] for r in rows if (r["model"], r["run_id"]) == key and r["metric"] == metric
            and r["perturbation"] in perts and r["severity"] > 0 and r["value"] is not None]
    return _mean(vals) or 0.0


def _mean_se(rows: list[Row], key: tuple[str, str], metric: str, pert: str, perts: list[str],
             ) -> float | None:
    if pert != "mean":
        return _relative_se(rows, key, metric, pert)
    return _mean([v for p in perts if (v := _relative_se(rows, key, metric, p)) is not None])


def plot_png(rows: list[Row], title: str = "") -> bytes:
    """Metric vs severity: one column of panels per perturbation, one row per metric, one line
    per model (error bars: +-1 standard error)."""
    labels = model_labels(rows)
    perts, sevs, metrics = _perturbations(rows), _severities(rows), _metrics(rows)
    fig = Figure(figsize=(2.8 * len(perts), 2.5 * len(metrics) + 0.6), layout="constrained")
    axes = fig.subplots(len(metrics), len(perts), squeeze=False, sharex=True, sharey="row")
    for i, metric in enumerate(metrics):
        for j, pert in enumerate(perts):
            ax = axes[i][j]
            for key, label in labels.items():
                pts = sorted((r["severity"], r["value"], r["stderr"]) for r in rows
                             if (r["model"], r["run_id"]) == key and r["metric"] == metric
                             and r["perturbation"] == pert and r["value"] is not None)
                if pts:
                    xs, ys, es = zip(*pts)
                    ax.errorbar(xs, ys, yerr=[e or 0.0 for e in es], marker="o", ms=3, lw=1.4,
                                capsize=2, label=label)
            if i == 0:
                ax.set_title(pert)
            if j == 0:
                ax.set_ylabel(metric)
            if i == len(metrics) - 1:
                ax.set_xlabel("severity")
            ax.set_xticks(sevs)
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=max(1, len(names)), frameon=False)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def examples_png(
    examples: dict[tuple[str, int], tuple[Any, Any]], title: str = "",
) -> bytes:
    """A grid of the images a model sees: one row per perturbation, one column per severity,
    keypoints drawn (numbered colours as in ``reidbench data preview``)."""
    perts = list(dict.fromkeys(p for p, _ in examples))
    sevs = sorted({s for _, s in examples})
    h, w = next(iter(examples.values()))[0].shape[:2]
    cell = 1.3
    fig = Figure(figsize=(cell * len(sevs) * max(w / h, 0.5) + 1.0, cell * len(perts)))
    axes = fig.subplots(len(perts), len(sevs), squeeze=False)
    for i, pert in enumerate(perts):
        for j, sev in enumerate(sevs):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (pert, sev) not in examples:
                ax.axis("off")
                continue
            image, kps = examples[(pert, sev)]
            ax.imshow(image)
            if kps is not None:
                ax.scatter(kps[:, 0] * w, kps[:, 1] * h, c=range(len(kps)), cmap="tab10", s=6,
                           vmin=0, vmax=9, edgecolors="none")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
            if i == 0:
                ax.set_title(str(sev), fontsize=8)
            if j == 0:
                ax.set_ylabel(pert, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def report_paths(out_dir: Path, report_id: str) -> dict[str, Path]:
    return {
        "csv": out_dir / f"{report_id}.csv", "markdown": out_dir / f"{report_id}.md",
        "plot": out_dir / f"{report_id}.png", "examples": out_dir / f"{report_id}-examples.png",
        "meta": out_dir / f"{report_id}.json", "per_sample": out_dir / f"{report_id}-per-sample.npz",
    }


def write_report(
    rows: list[Row], out_dir: Path, report_id: str, meta: dict[str, Any] | None = None,
    examples: bytes | None = None, per_sample: PerSample | None = None,
) -> dict[str, Path]:
    """Write ``<id>.csv``, ``<id>.json`` (meta), ``<id>-examples.png`` and
    ``<id>-per-sample.npz`` (if given), then the plot and the markdown rendered from them."""
    paths = report_paths(out_dir, report_id)
    atomic_write_text(paths["csv"], to_csv(rows))
    if per_sample:
        atomic_write_bytes(paths["per_sample"], per_sample_bytes(per_sample))
    else:
        paths["per_sample"].unlink(missing_ok=True)  # never pair a new CSV with an old sidecar
    if meta is not None:
        atomic_write_json(paths["meta"], meta)
    if examples is not None:
        atomic_write_bytes(paths["examples"], examples)
    rebuild_report(paths["csv"])
    return paths


def rebuild_report(csv_path: Path) -> tuple[Path, Path]:
    """Re-render ``<id>.md`` and ``<id>.png`` beside ``csv_path`` from the CSV (and its
    ``<id>.json`` meta, ``<id>-per-sample.npz`` and ``<id>-examples.png`` when present)."""
    rows = read_csv(csv_path)
    if not rows:
        raise ReidbenchError(f"{csv_path} has no rows")
    paths = report_paths(csv_path.parent, csv_path.stem)
    meta = json.loads(paths["meta"].read_text()) if paths["meta"].is_file() else {}
    title = f"{rows[0]['dataset']}: perturbed {rows[0]['side']}"
    atomic_write_bytes(paths["plot"], plot_png(rows, title))
    per_sample = read_per_sample(paths["per_sample"]) if paths["per_sample"].is_file() else None
    text = to_markdown(rows, meta, paths["csv"].name, paths["plot"].name,
                       paths["examples"].name if paths["examples"].is_file() else "", per_sample)
    atomic_write_text(paths["markdown"], text)
    return paths["markdown"], paths["plot"]
