"""The robustness plots: metric vs severity (one panel per perturbation, one line per model) and
the example grid of what the models see."""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure

from reidbench.reporting.robustness_scores import (
    Row,
    metrics_of,
    model_labels,
    perturbations_of,
    severities_of,
)


def plot_png(rows: list[Row], title: str = "") -> bytes:
    """Metric vs severity: one column of panels per perturbation, one row per metric, one line
    per model (error bars: +-1 standard error)."""
    labels = model_labels(rows)
    perts, sevs, metrics = perturbations_of(rows), severities_of(rows), metrics_of(rows)
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
    """A grid of the images a model sees: one row per perturbation, one column per severity
    (titled ``severity 0`` ... ``severity 5``), keypoints drawn (numbered colours as in
    ``reidbench data preview``)."""
    fig = examples_figure(examples, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def examples_figure(examples: dict[tuple[str, int], tuple[Any, Any]], title: str = "") -> Figure:
    """The figure of ``examples_png``."""
    perts = list(dict.fromkeys(p for p, _ in examples))
    sevs = sorted({s for _, s in examples})
    h, w = next(iter(examples.values()))[0].shape[:2]
    cell = 1.3
    fig = Figure(figsize=(cell * len(sevs) * max(w / h, 0.7) + 1.0, cell * len(perts)))
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
                ax.set_title(f"severity {sev}", fontsize=7)
            if j == 0:
                ax.set_ylabel(pert, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


