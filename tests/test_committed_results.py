"""The committed results are what the library rebuilds from the committed records, and the
README's numbers are the records' numbers.

- ``results/**/leaderboard.{csv,md}``: byte for byte what ``reidbench leaderboard`` writes from
  the committed run folders (rebuilt into a temporary folder);
- ``results/**/robustness/<id>.md``: byte for byte the re-render of its CSV / JSON / per-sample
  file (``reporting.robustness.rebuild_report``, in a temporary folder; the plot is not
  compared);
- the README: the default run's table, the zoo table (seed 0), the benchmark's training times
  (seed 0), the robustness scores and every bootstrap interval it quotes (robustness reports
  and leaderboards) equal the records, compared at the
  precision the README prints (exact on values, tolerant to layout).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from reidbench import cli

RESULTS = REPO / "results"
LEADERBOARDS = [(RESULTS / "runs", RESULTS / "leaderboard.csv"),
                (RESULTS / "augmented" / "runs", RESULTS / "augmented" / "leaderboard.csv")]
REPORTS = sorted(RESULTS.glob("**/robustness/*.csv"))
README = REPO / "README.md"


def test_the_committed_results_are_there() -> None:
    for runs, board in LEADERBOARDS:
        assert board.is_file() and board.with_suffix(".md").is_file()
        assert any((run / "metrics.json").is_file() for run in runs.iterdir())
    assert {p.relative_to(RESULTS).as_posix() for p in REPORTS} >= {
        "robustness/synthetic-reid-query.csv", "robustness/synthetic-faces-query.csv",
        "augmented/robustness/synthetic-reid-query.csv"}


@pytest.mark.parametrize(("runs", "board"), LEADERBOARDS, ids=["results", "augmented"])
def test_leaderboard_is_the_rebuild_of_the_committed_runs(runs: Path, board: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaderboard.csv"
    assert cli.main(["-q", "leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    assert out.read_text() == board.read_text()
    assert out.with_suffix(".md").read_text() == board.with_suffix(".md").read_text()
    # the per-task leaderboards, the comparison and index.html (issue 17): the same files, the
    # same text but for the command line quoted in them and the PNG bytes (matplotlib's)
    made = sorted(p.name for p in tmp_path.iterdir() if p.name != "robustness")
    committed = sorted(p.name for p in board.parent.iterdir() if p.is_file() and
                       (p.name.startswith("leaderboard") or p.name == "index.html"))
    assert made == committed
    for name in made:
        if name not in ("leaderboard.csv", "leaderboard.md"):
            assert comparable(tmp_path / name) == comparable(board.parent / name), name


def comparable(path: Path) -> str:
    """A leaderboard file without the command line it quotes and the bytes of its images."""
    text = re.sub(r"^Regenerate: `.*`$", "Regenerate: <command>", path.read_text(), flags=re.M)
    text = re.sub(r'src="data:image/png;base64,[^"]*"', 'src="<png>"', text)
    return re.sub(r"<pre>reidbench [^<]*leaderboard[^<]*</pre>", "<pre><command></pre>", text)


@pytest.mark.parametrize("csv_path", REPORTS, ids=lambda p: p.relative_to(RESULTS).as_posix())
def test_robustness_report_is_the_rerender_of_its_csv(
    csv_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reidbench.reporting import robustness

    monkeypatch.setattr(robustness, "plot_png", lambda *a, **k: b"", raising=False)  # seconds of matplotlib
    stem = csv_path.stem
    for suffix in (".csv", ".json", "-per-sample.npz", "-examples.png"):
        src = csv_path.with_name(stem + suffix)
        if src.is_file():
            shutil.copy(src, tmp_path / src.name)
    markdown, _ = robustness.rebuild_report(tmp_path / csv_path.name)
    assert markdown.read_text() == csv_path.with_suffix(".md").read_text()


# --- the README's numbers --------------------------------------------------------------------------


def md_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table as rows of stripped cells (the separator row left out)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def table_with(text: str, *header: str) -> list[dict[str, str]]:
    """The one table whose header row holds ``header``, as dicts."""
    found = [t for t in md_tables(text) if all(h in t[0] for h in header)]
    assert len(found) == 1, f"expected one table with columns {header}, found {len(found)}"
    head, *rows = found[0]
    return [dict(zip(head, row)) for row in rows]


def same_value(printed: str, value: float | None) -> bool:
    """The README's number equals the record's at the README's precision ("-": no value)."""
    printed = printed.strip("* ").lstrip("+")
    if value is None:
        return printed in ("-", "")
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return printed == f"{value:.{decimals}f}"


def leaderboard_rows(seed: int = 0) -> dict[tuple[str, str], dict[str, str]]:
    """(dataset, model) -> the leaderboard row of its run with training seed ``seed`` (one each)."""
    with (RESULTS / "leaderboard.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["seed"]) == seed]
    board = {(r["dataset"], r["model"]): r for r in rows}
    assert len(board) == len(rows), "two runs of one model, dataset and seed"
    return board


def num(row: dict[str, str], key: str) -> float | None:
    return float(row[key]) if row[key] != "" else None


def default_run() -> dict:
    """metrics.json of the default run: ape on synthetic-reid, seed 0, in results/runs."""
    found = []
    for run in sorted((RESULTS / "runs").iterdir()):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        if (cfg["model"]["name"], cfg["data"]["name"], cfg["train"]["seed"]) == ("ape", "synthetic-reid", 0):
            found.append(json.loads((run / "metrics.json").read_text()))
    assert len(found) == 1
    return found[0]


def test_readme_default_run_numbers_are_the_recorded_ones() -> None:
    metrics = default_run()
    table = {row[""].strip("* "): row["measured"] for row in table_with(README.read_text(), "", "measured")}
    assert same_value(table["mAP"], metrics["mAP"])
    ranks = [v.strip() for v in table["rank-1 / rank-5 / rank-10"].split("/")]
    assert [same_value(v, metrics[k]) for v, k in zip(ranks, ("rank1", "rank5", "rank10"))] == [True] * 3
    assert same_value(table["mINP"], metrics["mINP"])
    counts = re.findall(r"(\d+) (?:queries|gallery images)", table["query / gallery"])
    assert [int(v) for v in counts] == [metrics["num_query"], metrics["num_gallery"]]
    assert metrics["num_valid_queries"] == metrics["num_query"]


ZOO_COLUMNS = {"mAP": "mAP", "rank-1": "rank1", "mINP": "mINP", "10-fold accuracy": "accuracy", "AUC": "auc",
               "TAR@FAR=1e-2": "tar_at_far_1e-2"}


def test_readme_zoo_table_is_the_leaderboard() -> None:
    rows = table_with(README.read_text(), "dataset", "model", "mAP", "10-fold accuracy")
    board = leaderboard_rows()
    assert {(r["dataset"], r["model"]) for r in rows} == set(board)
    for r in rows:
        record = board[(r["dataset"], r["model"])]
        for column, key in ZOO_COLUMNS.items():
            assert same_value(r[column], num(record, key)), (r["dataset"], r["model"], column, r[column])
        assert int(r["train s"]) == round(float(record["train_seconds"]))


def test_readme_benchmark_training_times_are_the_records() -> None:
    rows = table_with(README.read_text(), "command", "wall clock")
    board = leaderboard_rows()
    names = {"APE": "ape", "RPE": "rpe", "iRPE": "irpe", "KP-RPE": "kprpe"}
    header = next(c for c in rows[0] if c.startswith("training"))
    models = [names[m.strip()] for m in re.search(r"\((.*)\)", header).group(1).split("/")]  # type: ignore[union-attr]
    for row in rows:
        dataset = re.search(r"--dataset (\S+?)[` ]", row["command"]).group(1)  # type: ignore[union-attr]
        times = re.match(r"([\d /]+) s \((\d+) epochs\)", row[header])
        assert times, row[header]
        seconds = [int(v) for v in times.group(1).split("/")]
        assert seconds == [round(float(board[(dataset, m)]["train_seconds"])) for m in models]
        assert {int(board[(dataset, m)]["epochs"]) for m in models} == {int(times.group(2))}


def report_score_tables() -> dict[tuple[str, str], dict[str, list[str]]]:
    """(report path, metric) -> {model: [scale, ..., mean]} of every committed report's
    "Robustness score (metric)" section."""
    out = {}
    for path in sorted(RESULTS.glob("**/robustness/*.md")):
        if path.name == "README.md":
            continue
        sections = re.split(r"^## ", path.read_text(), flags=re.M)
        for section in sections:
            m = re.match(r"Robustness score \((.+?)\)", section)
            if m:
                (table,) = [t for t in md_tables(section) if t[0][0] == "model"][:1]
                out[(path.relative_to(RESULTS).as_posix(), m.group(1))] = {r[0]: r[1:] for r in table[1:]}
    return out


def test_readme_robustness_scores_are_the_reports() -> None:
    text = README.read_text()
    scores = report_score_tables()
    reid = scores[("robustness/synthetic-reid-query.md", "mAP")]
    faces = scores[("robustness/synthetic-faces-query.md", "accuracy")]
    # the bench log quoted for synthetic-reid
    logged = re.findall(r"robustness score \(mAP\) (\S+(?: \([\w-]+\))?)\s+((?:\w+ [\d.]+\s*){6})", text)
    assert len(logged) == len(reid)
    for model, values in logged:
        assert re.findall(r"[\d.]+", values) == reid[model], model
    # the synthetic-faces table
    (table,) = [t for t in md_tables(text) if t[0][:2] == ["model", "scale"]]
    assert {r[0]: r[1:] for r in table[1:]} == faces


def test_every_interval_the_readme_quotes_is_in_a_report() -> None:
    quoted = re.findall(r"\[([-+]?\d\.\d+), ([-+]?\d\.\d+)\]", README.read_text())
    assert len(quoted) >= 5
    reports = " ".join(p.read_text() for p in [*RESULTS.glob("**/robustness/*.md"),
                                                *RESULTS.glob("**/leaderboard*.md"),
                                                *RESULTS.glob("**/report.md")])
    for lo, hi in quoted:
        assert re.search(rf"\[{re.escape(lo)}, {re.escape(hi)}\]", reports), (lo, hi)
