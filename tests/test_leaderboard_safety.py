"""`reidbench leaderboard` never makes things worse: typos, wrong outputs and malformed records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reidbench import cli
from reidbench.config import resolve_config
from reidbench.reporting.leaderboard import COLUMNS, first_attempt, rebuild_leaderboard
from reidbench.reporting.records import write_run_config

ENV = {"device": "cuda:0", "device_name": "NVIDIA H100", "git": {"commit": "a" * 40, "dirty": False}}


def fake_run(runs: Path, name: str, mAP: object = 0.5, dataset: str = "synthetic-reid",
             env: object = None) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    write_run_config(resolve_config(dataset=dataset), run / "config.yaml")
    metrics = {"task": "reid", "mAP": mAP, "mINP": 0.25, "rank1": 0.5, "rank5": 0.6, "rank10": 0.7,
               "num_valid_queries": 10, "params": 123, "epochs": 2}
    (run / "metrics.json").write_text(json.dumps(metrics))
    if env is not None:
        (run / "environment.json").write_text(json.dumps(env))
    return run


def lb(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["-q", "leaderboard", *args])
    return code, capsys.readouterr().err


@pytest.fixture
def board(tmp_path: Path) -> tuple[Path, Path, dict[Path, bytes]]:
    """A runs folder with two good runs and a leaderboard built from it: (runs, csv, contents)."""
    runs = tmp_path / "runs"
    fake_run(runs, "a", 0.4)
    fake_run(runs, "b", 0.6)
    out = tmp_path / "lb.csv"
    rebuild_leaderboard(runs, out)
    files = {p: p.read_bytes() for p in (out, out.with_suffix(".md"))}
    return runs, out, files


def unchanged(files: dict[Path, bytes]) -> bool:
    return all(p.read_bytes() == data for p, data in files.items())


@pytest.mark.parametrize("make,needle", [
    (lambda root: root / "runz", "does not exist; nothing was written"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "holds no run records"),
    (lambda root: (root / "f").write_text("x") and root / "f", "is not a folder"),
])
def test_a_runs_typo_keeps_the_leaderboard(
    board: tuple[Path, Path, dict[Path, bytes]], tmp_path: Path, make: object, needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, files = board
    code, err = lb(["--runs", str(make(tmp_path)), "--out", str(out)], capsys)  # type: ignore[operator]
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert unchanged(files)


def test_runs_without_a_sound_record_keep_the_leaderboard(
    board: tuple[Path, Path, dict[Path, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, files = board
    other = tmp_path / "other"
    (fake_run(other, "interrupted") / "metrics.json").unlink()
    fake_run(other, "broken", "abc")
    code, err = lb(["--runs", str(other), "--out", str(out)], capsys)
    assert code == 2 and "no complete, readable run among 2 records (1 incomplete, 1 malformed)" in err
    assert unchanged(files)


@pytest.mark.parametrize("name", ["lb.md", "lb", "lb.txt"])
def test_out_must_be_a_csv(board: tuple[Path, Path, dict[Path, bytes]], tmp_path: Path, name: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    runs, _, files = board
    code, err = lb(["--runs", str(runs), "--out", str(tmp_path / name)], capsys)
    assert code == 2 and "must end in .csv" in err and err.count("\n") == 1, err
    assert unchanged(files)
    assert {p.name for p in tmp_path.iterdir()} == {"runs", "lb.csv", "lb.md"}  # nothing new


@pytest.mark.parametrize("victim,content", [
    ("notes.csv", "name,score\nalice,3\n"),
    ("notes.md", "# my notes\n"),
    ("notes.csv", "\xff binary"),
])
def test_a_file_that_is_not_a_leaderboard_is_never_replaced(
    board: tuple[Path, Path, dict[Path, bytes]], tmp_path: Path, victim: str, content: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = board[0]
    (tmp_path / victim).write_text(content, encoding="latin-1")
    before = (tmp_path / victim).read_bytes()
    code, err = lb(["--runs", str(runs), "--out", str(tmp_path / "notes.csv")], capsys)
    assert code == 2 and "is not a leaderboard" in err and err.count("\n") == 1, err
    assert (tmp_path / victim).read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} == {"runs", "lb.csv", "lb.md", victim}


def test_a_directory_as_out_is_one_line(board: tuple[Path, Path, dict[Path, bytes]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").mkdir()
    code, err = lb(["--runs", str(board[0]), "--out", str(tmp_path / "d.csv")], capsys)
    assert code == 2 and "is a directory" in err and err.count("\n") == 1, err


def test_an_existing_leaderboard_is_rebuilt(board: tuple[Path, Path, dict[Path, bytes]],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    runs, out, _ = board
    fake_run(runs, "c", 0.9)
    code, err = lb(["--runs", str(runs), "--out", str(out)], capsys)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and [ln.split(",")[-1] for ln in lines[1:]] == ["c", "b", "a"]


def _write(run: Path, name: str, text: str | bytes) -> None:
    path = run / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.mark.parametrize("damage,problem", [
    (lambda r: _write(r, "config.yaml", ""), "lacks data"),
    (lambda r: _write(r, "config.yaml", "data: {name: x}\n"), "lacks data.root"),
    (lambda r: _write(r, "config.yaml", "a: [1\n"), "not valid YAML"),
    (lambda r: _write(r, "config.yaml", b"\xff\xfe"), "not UTF-8"),
    (lambda r: _write(r, "metrics.json", '{"mAP": "abc"}'), "mAP='abc' is not a number in [0, 1]"),
    (lambda r: _write(r, "metrics.json", '{"mAP": 2.34, "mINP": 3.68}'), "mAP=2.34 is not a number in"),
    (lambda r: _write(r, "metrics.json", '{"mAP": NaN}'), "mAP=nan is not a number in [0, 1]"),
    (lambda r: _write(r, "metrics.json", '{"mAP": 0.5}'), "metrics.json: no 'mINP'"),
    (lambda r: _write(r, "metrics.json", "[1, 2]"), "metrics.json: expected a JSON object, got list"),
    (lambda r: _write(r, "metrics.json", "{"), "metrics.json: cannot read"),
    (lambda r: _write(r, "metrics.json", b"\xff"), "metrics.json: cannot read (UnicodeDecodeError"),
    (lambda r: _write(r, "metrics.json", '{"task": "detection"}'), "unknown task 'detection'"),
    (lambda r: _write(r, "metrics.json", json.dumps(
        {"task": "reid", "mAP": 0.5, "mINP": 0.2, "rank1": 0.5, "rank5": 0.6, "rank10": 0.7,
         "num_valid_queries": -1})), "num_valid_queries=-1 is not a count"),
    (lambda r: _write(r, "environment.json", "not json"), "environment.json: cannot read"),
    (lambda r: _write(r, "environment.json", '{"attempts": []}'), "'attempts' is not a non-empty list"),
    (lambda r: _write(r, "timings.json", '{"train_seconds": -5}'), "train_seconds=-5 is not a number"),
])
def test_one_malformed_record_is_skipped_named_and_counted(
    tmp_path: Path, damage: object, problem: str, caplog: pytest.LogCaptureFixture,
) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "good-1", 0.4)
    damage(fake_run(runs, "bad", 0.9))  # type: ignore[operator]
    fake_run(runs, "good-2", 0.6)
    with caplog.at_level(logging.WARNING):
        rows, skipped = rebuild_leaderboard(runs, tmp_path / "lb.csv")
    assert [r["run_id"] for r in rows] == ["good-2", "good-1"]
    assert len(skipped) == 1 and skipped[0].startswith("bad: ") and problem in skipped[0], skipped
    assert "\n" not in skipped[0]
    assert any("skipped run bad: " in m and problem in m for m in caplog.messages)
    assert "bad" not in (tmp_path / "lb.csv").read_text()


def test_cli_reports_how_many_runs_were_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "good")
    fake_run(runs, "bad", "abc")
    with caplog.at_level(logging.INFO, logger="reidbench"):
        code = cli.main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "lb.csv")])
    assert code == 0, capsys.readouterr().err
    assert any("1 runs (1 skipped)" in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("env", [
    ENV,  # older runs: one flat object
    {**ENV, "resumes": [{"device": "cpu", "device_name": "cpu", "git": {"commit": "b" * 40}}]},
    {"attempts": [ENV, {"device": "cpu", "device_name": "cpu", "git": {"commit": "b" * 40}}]},
])
def test_provenance_comes_from_the_first_attempt(tmp_path: Path, env: dict) -> None:
    assert first_attempt(env)["device_name"] == "NVIDIA H100"
    fake_run(tmp_path / "runs", "r", env=env)
    (row,), _ = rebuild_leaderboard(tmp_path / "runs", tmp_path / "lb.csv")
    assert (row["device"], row["git_commit"]) == ("NVIDIA H100", "a" * 12)


def test_committed_leaderboards_rebuild_byte_for_byte(tmp_path: Path) -> None:
    from conftest import REPO

    for runs, csv in [("results/runs", "results/leaderboard.csv"),
                      ("results/augmented/runs", "results/augmented/leaderboard.csv")]:
        out = tmp_path / Path(csv).parent.name / "leaderboard.csv"
        rebuild_leaderboard(REPO / runs, out)
        assert out.read_bytes() == (REPO / csv).read_bytes()
        assert out.with_suffix(".md").read_bytes() == (REPO / csv).with_suffix(".md").read_bytes()


def test_bench_refuses_before_training_when_its_leaderboard_is_someone_elses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "leaderboard.csv").write_text("name,score\n")
    code = cli.main(["-q", "bench", "--models", "ape", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a leaderboard" in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # nothing trained
