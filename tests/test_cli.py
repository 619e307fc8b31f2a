"""The command line: clear one-line errors, an end-to-end run, resume and the leaderboard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("args,needle", [
    (["run", "--model", "nope"], "unknown model 'nope'; expected one of: ape, irpe, kprpe"),
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


def test_interrupted_run_resumes_to_the_same_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight"
    assert run_cli(["run", *TINY, "--epochs", "2", "--output", str(straight)], capsys)[0] == 0

    interrupted = tmp_path / "interrupted"
    real_epoch = trainer._train_epoch

    def stop_at_second_epoch(state, loader, device, cfg, epoch, run_dir, progress):  # type: ignore[no-untyped-def]
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(state, loader, device, cfg, epoch, run_dir, progress)

    monkeypatch.setattr(trainer, "_train_epoch", stop_at_second_epoch)
    code, err = run_cli(["run", *TINY, "--epochs", "2", "--output", str(interrupted)], capsys)
    assert code == 130 and "--resume" in err
    (run,) = interrupted.iterdir()
    assert not (run / "metrics.json").exists() and (run / "checkpoint.pt").exists()

    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    code, err = run_cli(["run", *TINY, "--epochs", "2", "--output", str(interrupted), "--resume"],
                        capsys)
    assert code == 0, err
    (ref_run,) = straight.iterdir()
    ref = json.loads((ref_run / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["mAP"] == ref["mAP"] and got["cmc"] == ref["cmc"]
    assert len((run / "history.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_to_change_the_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert run_cli(["run", *TINY, "--epochs", "1", "--output", str(out)], capsys)[0] == 0
    (run,) = out.iterdir()
    (run / "metrics.json").unlink()  # pretend it was interrupted after its checkpoint
    code, err = run_cli(["run", *TINY, "--epochs", "2", "--output", str(out), "--resume", str(run),
                         "--set", "train.lr=1.0"], capsys)
    assert code == 2 and "cannot change train.lr" in err


def test_console_entry_point_exit_code() -> None:
    proc = subprocess.run([sys.executable, "-m", "reidbench", "run", "--model", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "reidbench: error: unknown model 'nope'; expected one of: "
        "ape, irpe, kprpe, osnet, poster, resnet50, rpe"
    )


def test_nan_loss_stops_naming_term_and_step_and_keeps_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

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
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and not (run / "metrics.json").exists()
