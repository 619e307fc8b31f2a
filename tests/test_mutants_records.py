"""Run records: what the mutation run found undefended (scripts/mutation_test.py).

Hand-written expectations for the record helpers: the run id's format, folder names on a
clash, the git commit and dirty flag (a throw-away repository made here), the environment's
fields, the dotted names of missing config keys and the message listing them, appending resumed
attempts, ``attempts`` and ``list_runs``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import reidbench
from reidbench.config import RunConfig, resolve_config, to_dict
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.reporting.records import (
    RESUMES,
    append_environment,
    attempts,
    create_run_dir,
    environment,
    git_commit,
    list_runs,
    missing_keys,
    new_run_id,
    read_history,
    read_json,
    read_run_config,
    write_environment,
    write_run_config,
)


def test_run_id_is_utc_stamp_model_dataset_seed() -> None:
    cfg = resolve_config(dataset="synthetic-reid")
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    expected = f"20240102-030405-{cfg.model.name}-synthetic-reid-s{cfg.train.seed}"
    assert new_run_id(cfg, now) == expected
    assert re.fullmatch(r"\d{8}-\d{6}-.*", new_run_id(cfg))


def test_a_clash_gets_the_next_free_suffix(tmp_path: Path) -> None:
    out = tmp_path / "runs"  # created on demand
    names = [create_run_dir(out, "r").name for _ in range(3)]
    assert names == ["r", "r-2", "r-3"]
    assert create_run_dir(out, "fresh", exact=True).name == "fresh"
    with pytest.raises(ReidbenchError, match="already exists"):
        create_run_dir(out, "r", exact=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_commit_and_dirty_flag(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    assert git_commit(tmp_path) == {"commit": None, "dirty": None}  # not a repository yet
    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "untracked.txt").write_text("not part of the tree")
    assert git_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f.txt").write_text("b")
    assert git_commit(tmp_path) == {"commit": head, "dirty": True}


def test_environment_fields() -> None:
    env = environment(torch.device("cpu"))
    assert env["device"] == "cpu" and env["device_name"] == "cpu"
    assert env["torch"] == torch.__version__
    assert env["cpu_threads"] == torch.get_num_threads()
    assert set(env["git"]) == {"commit", "dirty"}
    assert datetime.fromisoformat(env["started_utc"]).tzinfo is not None


def test_missing_keys_are_dotted_and_sections_count_whole() -> None:
    data = to_dict(resolve_config(dataset="synthetic-reid"))
    assert missing_keys(RunConfig, data) == []
    del data["train"]["lr"]
    data["model"] = "vit"  # not a mapping: the whole section is missing
    del data["data"]["height"]
    assert missing_keys(RunConfig, data) == ["data.height", "model", "train.lr"]
    assert missing_keys(RunConfig, None) == ["config"]


def test_read_run_config_lists_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_run_config(resolve_config(dataset="synthetic-reid"), path)
    assert read_run_config(path) == resolve_config(dataset="synthetic-reid")
    full = yaml.safe_load(path.read_text())
    one = json.loads(json.dumps(full))
    del one["train"]["lr"]
    path.write_text(yaml.safe_dump(one))
    with pytest.raises(ConfigError, match=r"lacks train\.lr; a run record"):
        read_run_config(path)
    five = json.loads(json.dumps(full))
    for key in ("lr", "epochs", "seed", "batch_size", "weight_decay"):
        del five["train"][key]
    path.write_text(yaml.safe_dump(five))
    first, *rest = missing_keys(RunConfig, five)
    assert len(rest) == 4
    with pytest.raises(ConfigError) as info:
        read_run_config(path)
    assert f"lacks {first} (and 4 more: {', '.join(rest[:3])}, ...);" in str(info.value)
    two = json.loads(json.dumps(full))
    del two["train"]["lr"], two["train"]["seed"]
    path.write_text(yaml.safe_dump(two))
    with pytest.raises(ConfigError, match=r"lacks train\.\w+ \(and 1 more: train\.\w+\);"):
        read_run_config(path)


def test_resumed_attempts_are_appended_and_listed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    append_environment(run, {"n": 1})  # no environment.json: the attempt is a resume only
    env = json.loads((run / "environment.json").read_text())
    assert env == {RESUMES: [{"n": 1}]}
    assert attempts(env) == [{"n": 1}]
    (run / "environment.json").write_text(json.dumps({"n": 0}))
    append_environment(run, {"n": 1})
    append_environment(run, {"n": 2})
    env = json.loads((run / "environment.json").read_text())
    assert env == {"n": 0, RESUMES: [{"n": 1}, {"n": 2}]}
    assert attempts(env) == [{"n": 0}, {"n": 1}, {"n": 2}]
    (run / "environment.json").write_text(json.dumps({RESUMES: "not a list"}))
    with pytest.raises(ReidbenchError, match="is not an environment record"):
        append_environment(run, {"n": 3})
    (run / "environment.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ReidbenchError, match="is not an environment record"):
        append_environment(run, {"n": 3})


def test_list_runs_by_name_and_completeness(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert list_runs(out) == []
    for name, done in (("b", True), ("a", False), ("c", True)):
        (out / name).mkdir(parents=True)
        (out / name / "config.yaml").write_text("x: 1\n")
        if done:
            (out / name / "metrics.json").write_text("{}")
    (out / "no-record").mkdir()
    assert [p.name for p in list_runs(out)] == ["a", "b", "c"]
    assert [p.name for p in list_runs(out, complete=True)] == ["b", "c"]
    assert [p.name for p in list_runs(out, complete=False)] == ["a"]


# --- survivors of the after-99219b7 mutation run (results/mutation/after-99219b7) ---


def test_run_dir_is_created_under_missing_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "runs"  # none of these exist yet
    assert create_run_dir(out, "r") == out / "r" and (out / "r").is_dir()


@pytest.fixture
def tokyo_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+9 (restored afterwards)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available on this platform")
    monkeypatch.setenv("TZ", "Etc/GMT-9")  # POSIX sign convention: 9 hours east of UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_run_id_stamp_is_utc_whatever_the_local_zone(tokyo_clock: None) -> None:
    cfg = resolve_config(dataset="synthetic-reid")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    stamp = datetime.strptime(new_run_id(cfg)[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    after = datetime.now(timezone.utc)
    assert before <= stamp <= after  # a local-time stamp would be 9 hours ahead


def test_run_id_makes_the_dataset_name_path_safe() -> None:
    base = resolve_config(dataset="synthetic-reid")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, name="folder:/data/my set.v2"))
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert new_run_id(cfg, now) == (
        f"20240102-030405-{cfg.model.name}-folder__data_my_set_v2-s{cfg.train.seed}")


def test_environment_names_every_version_and_the_cuda_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = environment(torch.device("cpu"))
    assert env["reidbench"] == reidbench.__version__
    assert env["python"] == platform.python_version()
    assert env["numpy"] == np.__version__
    assert env["platform"] == platform.platform()
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert environment(torch.device("cpu"))["processor"] == "riscv64"  # no processor name
    monkeypatch.setattr(platform, "processor", lambda: "Some CPU")
    assert environment(torch.device("cpu"))["processor"] == "Some CPU"
    # a CUDA device is named by the driver (asked here of a stand-in: no GPU needed)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"GPU of {device}")
    env = environment(torch.device("cuda", 1))
    assert env["device"] == "cuda:1" and env["device_name"] == "GPU of cuda:1"


def test_git_commit_defaults_to_the_checkout_holding_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs the git command")
    checkout = tmp_path / "checkout"
    (checkout / "reidbench").mkdir(parents=True)
    (checkout / "reidbench" / "__init__.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(git + args, cwd=checkout, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, check=True,
                          capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(reidbench, "__file__", str(checkout / "reidbench" / "__init__.py"))
    assert git_commit() == {"commit": head, "dirty": False}


def test_git_commit_of_a_folder_that_is_gone(tmp_path: Path) -> None:
    assert git_commit(tmp_path / "missing") == {"commit": None, "dirty": None}


def test_records_are_read_back_as_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    attempt = {"torch": "x", "command": ["reidbench", "run"], "note": "é"}
    write_environment(run, attempt)
    assert read_json(run / "environment.json") == attempt
    (run / "history.jsonl").write_text(
        '{"epoch": 1, "loss": 2.5}\n\n{"epoch": 2, "loss": 1.25}\n', encoding="utf-8")
    assert read_history(run) == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 1.25}]


def test_attempts_of_a_run_never_resumed() -> None:
    assert attempts({"n": 0}) == [{"n": 0}]
    assert attempts({}) == []


def test_missing_key_message_lists_up_to_three_more_without_an_ellipsis(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_run_config(resolve_config(dataset="synthetic-reid"), path)
    data = yaml.safe_load(path.read_text())
    for key in ("lr", "epochs", "seed", "batch_size"):
        del data["train"][key]
    path.write_text(yaml.safe_dump(data))
    first, *rest = missing_keys(RunConfig, data)
    with pytest.raises(ConfigError) as info:
        read_run_config(path)
    assert f"lacks {first} (and 3 more: {', '.join(rest)}); a run record" in str(info.value)
