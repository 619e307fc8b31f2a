"""engine/run.py, what the run_resume mutation run left undefended (scripts/mutation_test.py):

- ``find_resume_dir`` without a target takes the newest *interrupted* run of the same model,
  dataset and seed that has a checkpoint, skipping (not stopping at) runs without one, with an
  unreadable record or of another seed, and never a complete run; with a target, a folder path
  (relative to the working directory or absolute) or a run id under ``cfg.output``.
- ``run_experiment`` with a fixed ``run_dir`` (the study and bench scripts) creates exactly
  that folder, and refuses one that exists instead of renaming it.
- The records of a run: ``metrics.json``'s ``params`` is the model's parameter count;
  ``timings.json`` holds the times rounded to the millisecond and the training throughput
  ``steps * batch / train_seconds``; ``train.threads`` is applied.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import MINI_MARKET

from reidbench.config import resolve_config
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.run import find_resume_dir, run_experiment
from reidbench.engine.sources import load_model, source_from_run
from reidbench.errors import ReidbenchError
from reidbench.registry import load_builtins
from reidbench.reporting.records import CONFIG, METRICS, write_run_config

load_builtins()

TINY = ["model.size=nano", "model.depth=2", "data.height=64", "data.width=32", "model.patch_size=8",
        "train.warmup_epochs=0", "train.epochs=1", "train.batch_size=16"]


def record(runs: Path, name: str, *, seed: int = 0, checkpoint: bool = True,
           complete: bool = False, broken: bool = False) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    cfg = resolve_config("synthetic-reid", "ape", flags={"output": str(runs), "train": {"seed": seed}})
    write_run_config(cfg, run / CONFIG)
    if broken:
        (run / CONFIG).write_text("model: [unclosed\n", encoding="utf-8")
    if checkpoint:
        (run / CHECKPOINT).write_bytes(b"")
    if complete:
        (run / METRICS).write_text("{}", encoding="utf-8")
    return run


def test_resume_takes_the_newest_interrupted_match_and_skips_the_rest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record(runs, "r1")  # an older match
    record(runs, "r2", checkpoint=False)  # interrupted before its first checkpoint: skipped
    record(runs, "r3", broken=True)  # unreadable record: skipped with a warning
    expected = record(runs, "r4")
    record(runs, "r5", complete=True)  # complete: never resumed
    record(runs, "r6", seed=1)  # another seed
    cfg = resolve_config("synthetic-reid", "ape", flags={"output": str(runs), "train": {"seed": 0}})
    assert find_resume_dir(cfg, None) == expected
    other = resolve_config("synthetic-reid", "ape", flags={"output": str(runs), "train": {"seed": 2}})
    with pytest.raises(ReidbenchError, match="no interrupted ape run"):
        find_resume_dir(other, None)


def test_resume_target_is_a_folder_path_or_an_id_under_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = tmp_path / "runs"
    by_id = record(runs, "20260101-000000-ape")
    elsewhere = record(tmp_path / "moved", "kept")
    cfg = resolve_config("synthetic-reid", "ape", flags={"output": str(runs)})
    monkeypatch.chdir(tmp_path)
    assert find_resume_dir(cfg, "20260101-000000-ape") == by_id  # an id: under cfg.output
    assert find_resume_dir(cfg, "moved/kept") == Path("moved/kept")  # a folder, relative to here
    assert find_resume_dir(cfg, str(elsewhere)) == elsewhere
    with pytest.raises(ReidbenchError, match="no run record"):
        find_resume_dir(cfg, "missing")


def test_a_fixed_run_folder_is_created_exactly_with_its_records(tmp_path: Path) -> None:
    """One tiny run trained into a fixed folder name with one thread; its records. (One test,
    not a module fixture: mutmut runs only the tests it saw calling the mutated function.)"""
    cfg = resolve_config("market1501", "ape", flags={"output": str(tmp_path / "elsewhere"),
                                                     "data": {"root": str(MINI_MARKET)}},
                         overrides=[*TINY, "train.threads=1"])
    threads = torch.get_num_threads()
    try:
        run, _ = run_experiment(cfg, tmp_path / "runs" / "study-ape-s0")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert run.name == "study-ape-s0" and (run / METRICS).is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == ["study-ape-s0"]
    assert not (tmp_path / "elsewhere").exists()  # not a fresh id under cfg.output

    metrics = json.loads((run / METRICS).read_text(encoding="utf-8"))
    model = load_model(source_from_run(run), 0, torch.device("cpu"))
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    timings = json.loads((run / "timings.json").read_text(encoding="utf-8"))
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert timings["train_seconds"] == round(state["train_seconds"], 3)
    assert timings["train_images_per_second"] == round(state["step"] * 16 / state["train_seconds"], 2)
    for key in ("eval_seconds", "wall_seconds_this_invocation"):
        assert isinstance(timings[key], float) and round(timings[key], 3) == timings[key]
    assert timings["train_seconds"] + timings["eval_seconds"] <= timings["wall_seconds_this_invocation"] < 600

    # the same fixed folder again: refused, nothing renamed or added
    cfg = resolve_config("market1501", "ape", flags={"data": {"root": str(MINI_MARKET)}}, overrides=TINY)
    with pytest.raises(ReidbenchError):
        run_experiment(cfg, run)
    assert sorted(p.name for p in run.parent.iterdir()) == ["study-ape-s0"]
