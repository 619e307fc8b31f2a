"""The command line: clear one-line errors, an end-to-end run, resume and the leaderboard."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.engine import trainer

# a tiny but real configuration: the real mini Market-1501, 2-block ViT, small batches
TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--set", "model.size=nano", "--set", "model.depth=2", "--set", "data.height=64",
        "--set", "data.width=32", "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["-q", *args])
    return code, capsys.readouterr().err


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("args,needle", [
    (["run", "--model", "no-such-model"], "unknown model 'no-such-model'; expected one of: ape"),
    (["run", "--dataset", "nope"], "unknown dataset 'nope'; expected one of:"),
    (["run", "--dataset", "market1501", "--data-root", "/definitely/missing"],
     "/definitely/missing does not exist"),
    (["run", "--set", "train.lr"], "malformed --set 'train.lr'"),
    (["run", "--set", "train.bogus=1"], "unknown config key train.bogus"),
    (["run", "--epochs", "two"], "argument --epochs: invalid int value"),
    (["run", "--resume", "no-such-run", "--output", "/tmp/none"], "no run record"),
    (["run", *TINY, "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) if "--epochs" in args else _nullcontext() as exc:
        code, err = run_cli(args, capsys)
    if exc is not None:
        code, err = exc.value.code, capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_empty_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["run", "--dataset", "market1501", "--data-root", str(tmp_path)], capsys)
    assert code == 2 and "no bounding_box_train/" in err


@pytest.mark.usefixtures("shared_data")
def test_end_to_end_run_and_leaderboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "1", "--output", str(out)], capsys)
    assert code == 0, err
    (run,) = out.iterdir()
    for name in ("config.yaml", "metrics.json", "environment.json", "timings.json",
                 "history.jsonl", "checkpoint.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["mAP"] <= 1 and metrics["num_valid_queries"] == 30
    assert len(metrics["cmc"]) == 32  # max_rank clipped to the gallery size
    csv = tmp_path / "lb.csv"
    assert cli.main(["-q", "leaderboard", "--runs", str(out), "--out", str(csv)]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("dataset,task,model,size,mAP") and len(lines) == 2
    assert f"{metrics['mAP']:.4f}" in lines[1] and run.name in lines[1]
    assert (tmp_path / "lb.md").read_text().count("\n") == 3


@pytest.mark.usefixtures("shared_data")
def test_interrupted_run_resumes_to_the_same_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exactness: a run stopped after epoch 1 and resumed with the command the interruption
    prints ends with the metrics of the run that was never stopped. (That alone would also hold
    if resume ignored the checkpoint: see the next test.)"""
    straight = tmp_path / "straight"
    assert run_cli(["run", *TINY, "--epochs", "2", "--output", str(straight)], capsys)[0] == 0

    interrupted = tmp_path / "interrupted"
    real_epoch = trainer._train_epoch

    def stop_at_second_epoch(state, loader, device, cfg, epoch, run_dir):  # type: ignore[no-untyped-def]
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(state, loader, device, cfg, epoch, run_dir)

    monkeypatch.setattr(trainer, "_train_epoch", stop_at_second_epoch)
    code, err = run_cli(["run", *TINY, "--epochs", "2", "--output", str(interrupted)], capsys)
    (run,) = interrupted.iterdir()
    assert code == 130
    assert err.strip().endswith(f"continue from the last checkpoint with: reidbench run --resume {run}")
    assert not (run / "metrics.json").exists() and (run / "checkpoint.pt").exists()

    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    printed = shlex.split(err.strip().rsplit("with: ", 1)[1])
    assert printed[0] == "reidbench"
    code, err = run_cli(printed[1:], capsys)  # exactly what it said
    assert code == 0, err
    (ref_run,) = straight.iterdir()
    ref = json.loads((ref_run / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["mAP"] == ref["mAP"] and got["cmc"] == ref["cmc"]
    assert len((run / "history.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 1-epoch run; tests copy it."""
    out = tmp_path_factory.mktemp("one-epoch")
    assert cli.main(["-q", "run", *TINY, "--epochs", "1", "--output", str(out)]) == 0
    (run,) = out.iterdir()
    return run


@pytest.mark.usefixtures("shared_data")
def test_resume_continues_from_the_checkpoint_state(
    one_epoch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resume uses what the checkpoint holds, not a fresh start with the same seed: weights
    changed in the checkpoint give the metrics that `evaluate --run` gives for those weights
    (an independent path: model loading and evaluation only), and its counters carry on."""
    from reidbench.engine.checkpoint import load_checkpoint, save_checkpoint

    runs = tmp_path / "runs"
    ckpt = load_checkpoint(one_epoch)
    gen = torch.Generator().manual_seed(0)
    ckpt["model"] = {k: v + 0.5 * torch.randn(v.shape, generator=gen) if k.startswith("backbone.")
                     else v for k, v in ckpt["model"].items()}  # not the neck's BN statistics
    ckpt["train_seconds"] = 1000.0
    reference, resumed = runs / "reference", runs / "resumed"
    for copy in (reference, resumed):
        shutil.copytree(one_epoch, copy)
        save_checkpoint(copy, ckpt)
    (resumed / "metrics.json").unlink()  # interrupted after its (only) epoch's checkpoint

    assert run_cli(["evaluate", "--run", str(reference), "--json", str(tmp_path / "ref.json")],
                   capsys)[0] == 0
    expected = json.loads((tmp_path / "ref.json").read_text())
    code, err = run_cli(["run", "--resume", str(resumed)], capsys)
    assert code == 0, err
    got = json.loads((resumed / "metrics.json").read_text())
    untouched = json.loads((one_epoch / "metrics.json").read_text())
    assert got["mAP"] != untouched["mAP"]  # the change matters ...
    assert got["mAP"] == expected["mAP"] and got["cmc"] == expected["cmc"]  # ... and was used
    assert got["epochs"] == 1  # no epoch trained again
    assert json.loads((resumed / "timings.json").read_text())["train_seconds"] == 1000.0


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("extra,needle", [
    (["--set", "train.lr=1.0"], "cannot change train.lr (it ran with 0.00035, this command gives 1.0)"),
    (["--model", "kprpe"], "cannot change model.name (it ran with 'ape', this command gives 'kprpe')"),
    (["--model", "ape_small"], "cannot change model.size (it ran with 'nano', this command gives "
                               "'small')"),
    (["--dataset", "synthetic-reid"], "cannot change data.name (it ran with 'market1501', this "
                                      "command gives 'synthetic-reid')"),
    (["--config", "CONFIG"], "cannot change train.seed (it ran with 0, this command gives 3)"),
])
def test_resume_refuses_to_change_the_recipe(
    one_epoch: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    needle: str,
) -> None:
    run = tmp_path / "runs" / one_epoch.name
    shutil.copytree(one_epoch, run)
    (run / "metrics.json").unlink()  # pretend it was interrupted after its checkpoint
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  seed: 3\n  epochs: 2\n")
    extra = [str(config) if a == "CONFIG" else a for a in extra]
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, err = run_cli(["run", "--epochs", "2", "--resume", str(run), *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.usefixtures("shared_data")
def test_resume_accepts_settings_that_agree_with_the_record(one_epoch: Path, tmp_path: Path) -> None:
    from reidbench.engine.run import resume_config, resume_request
    from reidbench.reporting.records import read_run_config

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  seed: 0\n  lr: 3.5e-4\ndata:\n  name: market1501\n")
    explicit = resume_request("ape_nano", "market1501", config,
                              {"train": {"epochs": 3}, "output": "elsewhere"}, ["train.lr=3.5e-4"])
    cfg = resume_config(one_epoch, explicit)
    saved = read_run_config(one_epoch / "config.yaml")
    assert cfg.train.epochs == 3 and cfg == replace(saved, train=replace(saved.train, epochs=3))


def test_console_entry_point_exit_code() -> None:
    from reidbench.registry import MODELS, load_builtins

    load_builtins()  # the subprocess lists every built-in model
    proc = subprocess.run([sys.executable, "-m", "reidbench", "run", "--model", "no-such-model"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "reidbench: error: unknown model 'no-such-model'; expected one of: "
        + ", ".join(MODELS.names())
    )


@pytest.mark.usefixtures("shared_data")
def test_nan_loss_stops_naming_term_and_step_and_keeps_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reidbench.losses import modules

    real = modules.TripletLoss.forward
    calls = {"n": 0}

    def flaky(self, out):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        value = real(self, out)
        return value * float("nan") if calls["n"] == 6 else value  # 4 steps per epoch

    monkeypatch.setattr(modules.TripletLoss, "forward", flaky)
    out = tmp_path / "runs"
    code, err = run_cli(["run", *TINY, "--epochs", "3", "--output", str(out)], capsys)
    assert code == 2
    assert "loss term 'triplet' is nan at epoch 2, step 6" in err
    (run,) = out.iterdir()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and not (run / "metrics.json").exists()
