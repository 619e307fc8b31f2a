"""``index.html``: the leaderboards, the comparison, the robustness curves with their intervals,
the example grids and the commands that regenerate them, in one file.

Self-contained on purpose: styles are inline, images are PNG data URIs, and the page names no
remote script, font, stylesheet or link, so it opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from reidbench.reporting.aggregate import PAIR_KEY
from reidbench.reporting.leaderboard import COLUMNS
from reidbench.reporting.leaderboard_display import (
    TASKS,
    Published,
    display,
    display_comparison,
    verdicts,
)
from reidbench.reporting.robustness_scores import HEADLINE, NAMES
from reidbench.reporting.tidy import Robustness

log = logging.getLogger(__name__)

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f0f0f0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
img { max-width: 100%; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return buf.getvalue()


def curves_png(points: pd.DataFrame, title: str, metric: str) -> bytes:
    """Headline metric vs severity, one panel per perturbation, one line per model; the band is
    the 95 % interval (hierarchical bootstrap), when there is one."""
    perts = list(dict.fromkeys(points["perturbation"]))
    fig = Figure(figsize=(2.6 * len(perts), 2.8), layout="constrained")
    axes = fig.subplots(1, len(perts), squeeze=False, sharey=True)[0]
    for ax, pert in zip(axes, perts):
        mine = points[points["perturbation"] == pert]
        for model, line in mine.groupby("model", sort=True):
            line = line.sort_values("severity")
            drawn = ax.plot(line["severity"], line["value"], marker="o", ms=3, lw=1.4,
                            label=NAMES.get(str(model), str(model)))
            band = line.dropna(subset=["lo", "hi"])
            if not band.empty:
                ax.fill_between(band["severity"], band["lo"], band["hi"], alpha=0.2,
                                color=drawn[0].get_color(), lw=0)
        ax.set_title(pert)
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=max(1, len(names)), frameon=False)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def _table(frame: pd.DataFrame, table_id: str) -> str:
    return frame.to_html(index=False, escape=True, border=0, table_id=table_id, na_rep="")


def html_page(result: Published, rob: Robustness, command: str, resamples: int, reference: str) -> str:
    """The page (see the module docstring)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="generator" content="reidbench leaderboard">',
             "<title>reidbench results</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>reidbench results</h1>",
             "<p>Every number on this page is rebuilt from the run records and robustness reports "
             "by the command below; nothing is typed by hand.</p>",
             f"<pre>{esc(command)}</pre>"]
    sweeps = sorted({m["command"] for m in rob.reports.values() if isinstance(m.get("command"), str)
                     and m["command"]})
    if sweeps:
        parts += ["<p>The robustness reports were made by:</p>",
                  "<pre>" + "\n".join(esc(c) for c in sweeps) + "</pre>"]
    for task, board in result.boards.items():
        metric = HEADLINE[task]
        parts += [f"<h2>Leaderboard: {esc(TASKS[task])}</h2>",
                  f"<p>One row per (dataset, model, recipe). Mean ± sample standard deviation "
                  f"(ddof=1) over n seeds. Robustness: mean over severities &gt; 0 of perturbed / "
                  f"clean {esc(metric)}, with its 95 % hierarchical bootstrap interval (seeds, then "
                  f"evaluation samples; {resamples} replicates).</p>",
                  _table(display(board, task), f"leaderboard-{task}")]
    comparisons = [c for c in result.comparisons.values() if not c.empty]
    parts.append(f"<h2>Each model minus {esc(reference)}</h2>")
    if comparisons:
        parts += ["<p>Paired by seed and by evaluation sample; <em>beyond noise</em>: the 95 % "
                  "interval excludes 0.</p>",
                  "<ul>" + "".join(f"<li>{esc(v)}</li>" for v in verdicts(pd.concat(comparisons)))
                  + "</ul>",
                  _table(display_comparison(pd.concat(comparisons, ignore_index=True)), "comparison")]
    else:
        parts.append(f"<p>No model shares a recipe and a swept seed with {esc(reference)}.</p>")
    parts.append("<h2>Robustness curves</h2>")
    for task, points in result.curves.items():
        if points.empty:
            continue
        board = result.boards[task]
        for n, (key, group) in enumerate(board.groupby(PAIR_KEY, sort=True, dropna=False)):
            mine = points[points["row"].isin(group.index)]
            if mine.empty:
                continue
            fields = dict(zip(PAIR_KEY, key))
            title = (f"{fields['dataset']} ({fields['data']}, {fields['epochs']} epochs, recipe "
                     f"{fields['recipe']}): mean over seeds, 95 % interval")
            parts += [f"<h3>{esc(title)}</h3>",
                      f'<img id="curves-{task}-{n}" alt="{esc(title)}" '
                      f'src="{data_uri(curves_png(mine, title, HEADLINE[task]))}">']
    if rob.examples:
        parts.append("<h2>What the models see</h2>")
        for report, path in sorted(rob.examples.items()):
            parts += [f"<h3>{esc(report)}</h3>",
                      f'<img id="examples-{esc(report)}" alt="examples of {esc(report)}" '
                      f'src="{data_uri(Path(path).read_bytes())}">']
    runs = pd.DataFrame(result.rows, columns=COLUMNS).map(
        lambda v: f"{v:.4f}" if isinstance(v, float) else str(v))
    parts += ["<h2>Every run</h2>", _table(runs, "runs"), "</body></html>"]
    return "\n".join(parts) + "\n"
