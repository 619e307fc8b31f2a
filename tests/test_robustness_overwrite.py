"""`reidbench robustness` never replaces an existing report (e.g. a committed one) unless asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from reidbench import cli
from reidbench.engine import bench, sweep
from reidbench.errors import ReidbenchError


class Reached(ReidbenchError):
    """Raised instead of loading a model: the sweep got past its checks."""


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Reached("reached load_model")

    monkeypatch.setattr(sweep, "load_model", refuse)


def robustness(tmp_path: Path, extra: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"never read")
    code = cli.main(["-q", "robustness", "--model", "ape", "--checkpoint", str(ckpt), "--dataset",
                     "synthetic-reid", "--data-root", str(tmp_path / "data"), "--set",
                     "data.synth_ids=16", "--perturb", "rotate", "--severities", "0,1", *extra])
    return code, capsys.readouterr().err


def test_default_id_never_clobbers_the_committed_report(
    tmp_path: Path, no_models: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    committed = sorted((REPO / "results" / "robustness").glob("synthetic-reid-query*"))
    assert len(committed) == 6
    before = {p: p.read_bytes() for p in committed}
    monkeypatch.chdir(REPO)  # the default --out is results/robustness
    code, err = robustness(tmp_path, [], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "results/robustness/synthetic-reid-query.* already exists" in err
    assert "(made by `reidbench bench --dataset synthetic-reid --seeds 0,1,2`)" in err
    assert "--id NAME" in err and "--overwrite" in err and "nothing was evaluated" in err
    assert {p: p.read_bytes() for p in committed} == before


@pytest.mark.parametrize("existing", ["x.csv", "x.md", "x.png", "x-examples.png", "x.json",
                                      "x-per-sample.npz"])
def test_any_file_of_the_report_counts(tmp_path: Path, existing: str, no_models: None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / existing).write_text("mine")
    code, err = robustness(tmp_path, ["--out", str(out), "--id", "x"], capsys)
    assert code == 2 and "already exists" in err, err
    assert (out / existing).read_text() == "mine" and len(list(out.iterdir())) == 1


def test_overwrite_or_a_new_id_goes_ahead(tmp_path: Path, no_models: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "synthetic-reid-query.csv").write_text("old")
    for extra in (["--overwrite"], ["--id", "mine"]):
        code, err = robustness(tmp_path, ["--out", str(out), *extra], capsys)
        assert code == 2 and "reached load_model" in err, (extra, err)


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".hidden", ""])
def test_report_id_is_a_plain_name(tmp_path: Path, bad: str, no_models: None,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, err = robustness(tmp_path, ["--out", str(tmp_path / "out"), "--id", bad], capsys)
    assert code == 2 and "a report id is a plain name" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.csv").exists()


def test_bench_regenerates_its_own_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench replaces <output>/robustness/<dataset>-<side>.*: it made them (from its fresh runs)."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(bench, "run_experiment", lambda cfg: (tmp_path / cfg.model.name, {}))
    monkeypatch.setattr(bench, "source_from_run", lambda d: d.name)

    def sweep_models(sources: list[str], spec: Any, out_dir: Path, **kwargs: Any) -> Any:
        seen.update(kwargs, sources=sources, out_dir=out_dir)
        return sweep.RobustnessResult([], {}, {})

    monkeypatch.setattr(bench, "sweep_models", sweep_models)
    monkeypatch.setattr(bench, "publish", lambda *a, **k: bench.Published([], []))
    spec = bench.SweepSpec(("rotate",), (0, 1), "query", 0)
    bench.run_bench("synthetic-reid", ["ape", "kprpe"], spec, tmp_path)
    assert seen["overwrite"] is True and seen["sources"] == ["ape", "kprpe"]
    assert seen["out_dir"] == tmp_path / "robustness"


def test_committed_report_meta_names_bench(tmp_path: Path) -> None:
    """The refusal message quotes the command that made a report, read from its .json."""
    (tmp_path / "r.json").write_text(json.dumps({"command": "reidbench robustness --model ape"}))
    with pytest.raises(ReidbenchError, match=r"made by `reidbench robustness --model ape`"):
        sweep.check_report_free(tmp_path, "r")
    (tmp_path / "s.csv").write_text("x")
    (tmp_path / "s.json").write_bytes(b"\xff not json")
    with pytest.raises(ReidbenchError, match=r"s\.\* already exists; nothing"):
        sweep.check_report_free(tmp_path, "s")
    sweep.check_report_free(tmp_path, "free")
