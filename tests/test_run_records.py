"""Run folders and records: created atomically and exclusively, locked while written, read
strictly, every attempt kept; a full disk, Ctrl-C, a DataLoader worker's error or weights
gone non-finite are one clear line and leave nothing half-made."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MINI_MARKET

from reidbench import cli
from reidbench import fileio as record_io
from reidbench.config import RunConfig, resolve_config, to_dict
from reidbench.engine import trainer
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.reporting.records import (
    RESUMES,
    attempts,
    create_run_dir,
    read_run_config,
    run_lock,
    write_run_config,
)

TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--set", "model.size=nano", "--set", "model.depth=2", "--set", "data.height=64",
        "--set", "data.width=32", "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["-q", *args])
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete tiny run (1 epoch): its folder is copied by each test."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["-q", "run", *TINY, "--epochs", "1", "--output", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def interrupted_copy(run: Path, runs: Path) -> Path:
    """``run`` as if it had been stopped after its checkpoint (no metrics.json)."""
    target = runs / run.name
    shutil.copytree(run, target)
    (target / "metrics.json").unlink()
    (target / "timings.json").unlink()
    return target


# --- run folders: atomic and exclusive ---------------------------------------------------------


def test_run_folders_are_exclusive_even_when_the_check_loses_the_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As if another process created the folder right after every existence check: each call
    still gets a folder of its own."""
    monkeypatch.setattr(Path, "exists", lambda self: False)
    got = [create_run_dir(tmp_path, "20260101-000000-ape-x-s0") for _ in range(3)]
    assert [p.name for p in got] == ["20260101-000000-ape-x-s0", "20260101-000000-ape-x-s0-2",
                                     "20260101-000000-ape-x-s0-3"]
    assert all(p.is_dir() for p in got)


def test_concurrent_runs_never_share_a_folder(tmp_path: Path) -> None:
    start = threading.Barrier(8)
    got: list[Path] = []

    def make() -> None:
        start.wait()
        got.append(create_run_dir(tmp_path / "runs", "same-second-id"))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)


def test_a_new_run_never_writes_into_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ReidbenchError, match="already exists; a new run never writes into"):
        create_run_dir(tmp_path, "taken", exact=True)


# --- the lock of a run being written -----------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.usefixtures("shared_data")
@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_run_in_use_cannot_be_resumed_and_a_killed_holder_frees_it(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = interrupted_copy(trained, tmp_path / "runs")
    before = files(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, err = run_cli(["run", "--resume", str(run)], capsys)
        assert code == 2 and one_line(err)
        assert f"run {run} is in use by another reidbench process" in err
        assert files(run) == before  # nothing written, nothing removed
    finally:
        holder.kill()  # kill -9: the OS releases the lock, nothing stale is left
        holder.wait()
    with run_lock(run):
        pass


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with pytest.raises(ReidbenchError, match="in use by another reidbench process"):
            with run_lock(tmp_path):
                pass
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


# --- strict records ------------------------------------------------------------------------------


def test_config_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config("market1501", "ape")
    path = tmp_path / "config.yaml"
    write_run_config(cfg, path)
    before = path.read_bytes()

    def disk_full(fh: object, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_io._Recording, "write", disk_full)
    with pytest.raises(ReidbenchError, match=f"cannot write {path}: No space left on device"):
        write_run_config(resolve_config("market1501", "kprpe"), path)
    assert path.read_bytes() == before and files(tmp_path) == ["config.yaml"]


@pytest.mark.parametrize("cut,missing", [
    ("drop-section", "run record {path} lacks train.epochs (and "),
    ("drop-key", "run record {path} lacks train.lr;"),
    ("half-file", "run record {path} lacks "),
    ("empty", "run record {path} lacks data (and 5 more: model, loss, train, ...)"),
])
def test_a_record_missing_keys_is_an_error_never_defaults(tmp_path: Path, cut: str, missing: str) -> None:
    cfg = resolve_config("market1501", "ape", flags={"train": {"epochs": 4, "lr": 1e-3}})
    path = tmp_path / "config.yaml"
    write_run_config(cfg, path)
    assert read_run_config(path) == cfg
    data = to_dict(cfg)
    if cut == "drop-section":
        data["train"] = {}
    elif cut == "drop-key":
        del data["train"]["lr"]
    if cut == "half-file":
        text = path.read_text()
        path.write_text(text[: len(text) // 2].rsplit("\n", 1)[0] + "\n")
    elif cut == "empty":
        path.write_text("")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        read_run_config(path)
    assert missing.format(path=path) in str(info.value) and "never filled with defaults" in str(info.value)


@pytest.mark.usefixtures("shared_data")
def test_a_resume_of_a_cut_record_is_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The defaults (epochs 12, lr 5e-4) never replace what the run was recorded with."""
    run = interrupted_copy(trained, tmp_path / "runs")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["train"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    for command in (["run", "--resume", str(run)], ["evaluate", "--run", str(run)]):
        code, err = run_cli(command, capsys)
        assert code == 2 and one_line(err), err
        assert f"run record {run / 'config.yaml'} lacks train; " in err


@pytest.mark.usefixtures("shared_data")
def test_resume_appends_to_environment_and_records_what_changed(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = interrupted_copy(trained, tmp_path / "runs")
    original = json.loads((run / "environment.json").read_text())
    code, err = run_cli(["run", "--resume", str(run), "--epochs", "2"], capsys)
    assert code == 0, err
    env = json.loads((run / "environment.json").read_text())
    assert {k: v for k, v in env.items() if k != RESUMES} == original  # the original, untouched
    (resume,) = env[RESUMES]
    assert resume["resumed_after_epoch"] == 1 and resume["changed"] == {"train.epochs": [1, 2]}
    assert resume["command"] and resume["started_utc"] >= original["started_utc"]
    assert attempts(env) == [original, resume]
    assert read_run_config(run / "config.yaml").train.epochs == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.usefixtures("shared_data")
def test_an_unreadable_environment_is_never_overwritten(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = interrupted_copy(trained, tmp_path / "runs")
    (run / "environment.json").write_text('{"device": "cpu", ')
    code, err = run_cli(["run", "--resume", str(run)], capsys)
    assert code == 2 and one_line(err) and "a resumed run appends to it and never overwrites" in err
    assert (run / "environment.json").read_text() == '{"device": "cpu", '


# --- faults while training -----------------------------------------------------------------------


class FullDisk:
    """A file on a full disk: every write fails with ENOSPC."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def torch_like_save(obj: object, fh: object) -> None:
    """What torch.save does when a write fails: its own error, without the OS error's text."""
    try:
        fh.write(b"PK")  # type: ignore[attr-defined]
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("disk", ["simulated", "/dev/full"])
def test_a_full_disk_while_saving_a_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    real_fdopen = os.fdopen

    def checkpoint_on_full_disk(fd: int, mode: str = "r") -> object:
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if ".checkpoint.pt." not in name:
            return real_fdopen(fd, mode)
        if disk == "simulated":
            return FullDisk(fd)
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode)

    if not os.path.exists("/proc/self/fd") or (disk == "/dev/full" and not os.path.exists(disk)):
        pytest.skip("needs /proc/self/fd (and /dev/full)")
    monkeypatch.setattr(record_io.os, "fdopen", checkpoint_on_full_disk)
    if disk == "simulated":
        monkeypatch.setattr(record_io.torch, "save", torch_like_save)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "1", "--output", str(out)], capsys)
    assert code == 2 and one_line(err), err
    assert "reidbench: error: cannot write " in err and "checkpoint.pt: No space left on device" in err
    assert "unexpected pos" not in err
    assert files(out) == []  # nothing half-made: no checkpoint, so the new folder is gone


@pytest.mark.usefixtures("shared_data")
def test_ctrl_c_in_the_first_epoch_leaves_nothing_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_outputs, calls = trainer._train_outputs, {"n": 0}

    def ctrl_c_at_the_second_step(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_outputs(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "_train_outputs", ctrl_c_at_the_second_step)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "1", "--output", str(out)], capsys)
    assert code == 130 and one_line(err)
    assert "--resume" not in err
    assert "interrupted before the first epoch finished: nothing was saved (the run folder" in err
    assert "was removed); start the run again with the same command" in err
    assert files(out) == []


@pytest.mark.usefixtures("shared_data")
def test_ctrl_c_never_removes_what_the_run_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(state, loader, device, cfg, epoch, run_dir):  # type: ignore[no-untyped-def]
        (run_dir / "notes.txt").write_text("mine")  # the user's file, put there meanwhile
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_train_epoch", interrupted)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "1", "--output", str(out)], capsys)
    assert code == 130 and "was kept: it holds files this run did not write" in err
    (run,) = out.iterdir()
    assert files(run) == ["notes.txt"] and (run / "notes.txt").read_text() == "mine"


@pytest.mark.usefixtures("shared_data")
def test_ctrl_c_while_saving_a_checkpoint_leaves_no_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    saves = {"n": 0}

    def save_then_ctrl_c(obj: object, fh: object) -> None:
        saves["n"] += 1
        real_save(obj, fh)
        if saves["n"] == 2:  # the second epoch's checkpoint, half-way
            raise KeyboardInterrupt

    monkeypatch.setattr(record_io.torch, "save", save_then_ctrl_c)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "2", "--output", str(out)], capsys)
    assert code == 130 and one_line(err)
    (run,) = out.iterdir()
    assert f"continue from the last checkpoint with: reidbench run --resume {run}" in err
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1  # the previous one


@pytest.mark.usefixtures("shared_data")
def test_dataloader_worker_error_is_the_original_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "market"
    shutil.copytree(MINI_MARKET, root)
    broken = sorted((root / "bounding_box_train").iterdir())[0]
    broken.write_bytes(b"not a jpeg")
    code, err = run_cli(["run", *TINY, "--data-root", str(root), "--set", "data.num_workers=1",
                         "--epochs", "1", "--output", str(tmp_path / "runs")], capsys)
    assert code == 2 and one_line(err), err
    assert f"reidbench: error: cannot read image {broken}" in err
    assert "DataLoader worker" not in err and "Original Traceback" not in err


def test_worker_error_unwrapping() -> None:
    wrapped = ReidbenchError("Caught ReidbenchError in DataLoader worker process 0.\nOriginal "
                             "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                             "    raise ReidbenchError(msg)\nreidbench.errors.DatasetError: "
                             "cannot read image /a b.jpg: broken\n")
    got = trainer.worker_error(wrapped)
    assert isinstance(got, ReidbenchError) and str(got) == "cannot read image /a b.jpg: broken"
    assert trainer.worker_error(ReidbenchError("cannot read image /x.jpg")) is None
    assert trainer.worker_error(RuntimeError("Caught ValueError in DataLoader worker process 0.\n"
                                             "ValueError: a bug")) is None


@pytest.mark.usefixtures("shared_data")
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_weights_gone_non_finite_stop_the_run_naming_them_and_the_epoch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN that appears with an epoch's last step (no loss sees it) stops the run before it is
    saved, naming the weight and the epoch; the previous checkpoint stays."""
    real_build = trainer.build_state
    seen: dict[str, object] = {}

    def build(cfg: RunConfig, split: object, steps: int) -> trainer.TrainState:
        state = real_build(cfg, split, steps)  # type: ignore[arg-type]
        real_step = state.optimizer.step
        seen.update(steps=steps, numel=state.model.backbone.cls_token.numel())

        def step() -> None:
            real_step()
            if state.step + 1 == 2 * steps:  # the last step of epoch 2
                with torch.no_grad():
                    state.model.backbone.cls_token[0, 0, :3] = float("nan")

        state.optimizer.step = step  # type: ignore[method-assign]
        return state

    monkeypatch.setattr(trainer, "build_state", build)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "3", "--output", str(out)], capsys)
    steps = seen["steps"]
    assert code == 2 and one_line(err), err
    assert (f"weight 'model.backbone.cls_token' is non-finite (3 NaN and 0 infinite of "
            f"{seen['numel']} values) at the end of epoch 2 (step {2 * steps}); training stopped, "
            "the last good checkpoint") in err and "epoch 1) is kept" in err
    (run,) = out.iterdir()
    assert not (run / "metrics.json").exists()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and torch.isfinite(ckpt["model"]["backbone.cls_token"]).all()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[1]["stopped"] in err
    assert history[1]["good_steps"] == steps and history[1]["step"] == 2 * steps
