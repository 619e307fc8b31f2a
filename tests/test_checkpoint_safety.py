"""Checkpoints are read safely: a hostile file runs no code on any command that reads one, and a
malformed, foreign or truncated file is one line and exit 2. The format round-trips through the
safe reader, and no module of the package loads a file any other way."""

from __future__ import annotations

import ast
import builtins
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import MINI_MARKET, REPO

from reidbench import cli
from reidbench.engine.checkpoint import (
    CheckpointError,
    check_training_checkpoint,
    load_checkpoint,
    model_weights,
    read_checkpoint,
    save_checkpoint,
)

TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--set", "model.size=nano", "--set", "model.depth=2", "--set", "data.height=64",
        "--set", "data.width=32", "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0"]


class Payload:
    """Unpickling this runs ``open(marker, "w")`` through ``exec``: code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def write_hostile(path: Path, marker: Path, fmt: str) -> None:
    """A checkpoint whose model weights are the payload: torch's zip format or a raw pickle."""
    obj = {"model": {"w": Payload(marker)}, "epoch": 1}
    if fmt == "zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_the_payload_is_live(tmp_path: Path, fmt: str) -> None:
    """The hostile file really runs code when unpickled unsafely (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    write_hostile(tmp_path / "evil.pt", marker, fmt)
    if fmt == "zip":
        torch.load(tmp_path / "evil.pt", weights_only=False)
    else:
        pickle.loads((tmp_path / "evil.pt").read_bytes())
    assert marker.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One complete tiny run: its folder is copied by each test."""
    out = tmp_path_factory.mktemp("trained")
    assert cli.main(["-q", "run", *TINY, "--epochs", "1", "--output", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def copy_run(run: Path, runs: Path, complete: bool) -> Path:
    target = runs / run.name
    shutil.copytree(run, target)
    if not complete:
        (target / "metrics.json").unlink()
    return target


def hostile_commands(run: Path, runs: Path, hostile: Path) -> dict[str, list[str]]:
    return {
        "run --resume RUN": ["run", "--resume", str(run)],
        "run --resume (automatic)": ["run", *TINY, "--output", str(runs), "--resume"],
        "robustness --checkpoint": ["robustness", "--model", "ape", "--dataset", "market1501",
                                    "--data-root", str(MINI_MARKET), "--checkpoint", str(hostile),
                                    "--out", str(runs.parent / "rob"), *TINY[4:]],
        "robustness (latest run)": ["robustness", "--model", "ape", "--dataset", "market1501",
                                    "--data-root", str(MINI_MARKET), "--runs", str(runs),
                                    "--out", str(runs.parent / "rob")],
        "evaluate --run": ["evaluate", "--run", str(run)],
    }


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("fmt", ["zip", "pickle"])
@pytest.mark.parametrize("command", ["run --resume RUN", "run --resume (automatic)",
                                     "robustness --checkpoint", "robustness (latest run)",
                                     "evaluate --run"])
def test_hostile_checkpoint_runs_no_code(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, fmt: str
) -> None:
    runs = tmp_path / "runs"
    complete = command.startswith(("robustness", "evaluate"))
    run = copy_run(trained, runs, complete)
    marker = tmp_path / "pwned"
    write_hostile(run / "checkpoint.pt", marker, fmt)
    hostile = tmp_path / "loose" / "evil.pt"  # a checkpoint file without a run record beside it
    hostile.parent.mkdir()
    shutil.copy(run / "checkpoint.pt", hostile)
    capsys.readouterr()
    code = cli.main(["-q", *hostile_commands(run, runs, hostile)[command]])
    err = capsys.readouterr().err
    assert not marker.exists(), "code in the checkpoint ran"
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot be loaded safely" in err and "weights_only=True" in err
    assert "evil.pt" in err or f"{run.name}/checkpoint.pt" in err


@pytest.mark.usefixtures("shared_data")
@pytest.mark.parametrize("content,needle", [
    (b"", "cannot be read (EOFError): the file is truncated or not a PyTorch checkpoint"),
    (b"this is not a checkpoint at all", "the file is truncated or not a PyTorch checkpoint"),
    ("truncated", "the file is truncated or not a PyTorch checkpoint"),
    ([1, 2, 3], "is not a reidbench training checkpoint: it holds a list, expected a dict"),
    ({"model": {}, "epoch": 1}, "is not a reidbench training checkpoint: it lacks 'loss'"),
    ("epoch-is-text", "'epoch' holds a str, expected int"),
    ("model-holds-a-list", "'model' holds entry 'w' = a list, expected a tensor"),
    ("wrong-shapes", "does not fit this run's model, loss or optimizer: Error(s) in loading"),
])
def test_malformed_checkpoint_on_resume_is_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, needle: str
) -> None:
    run = copy_run(trained, tmp_path / "runs", complete=False)
    path = run / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "epoch-is-text":
        torch.save({**good, "epoch": "1"}, path)
    elif content == "model-holds-a-list":
        torch.save({**good, "model": {"w": [1.0]}}, path)
    elif content == "wrong-shapes":
        torch.save({**good, "model": {k: v[..., :1] if v.ndim else v
                                      for k, v in good["model"].items()}}, path)
    else:
        torch.save(content, path)
    before = sorted(p.name for p in run.iterdir())
    env = (run / "environment.json").read_bytes()
    capsys.readouterr()
    code = cli.main(["-q", "run", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written, no .tmp left
    if content != "wrong-shapes":  # checked before the attempt is recorded
        assert (run / "environment.json").read_bytes() == env


@pytest.mark.usefixtures("shared_data")
def test_training_checkpoint_round_trips_through_the_safe_reader(trained: Path, tmp_path: Path) -> None:
    """What the trainer saves (state dicts, optimizer and scheduler state, RNG byte tensors, the
    history) is all the safe reader accepts, and comes back equal."""
    ckpt = load_checkpoint(trained)  # written by the trainer, read with weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["step"] > 0 and ckpt["optimizer"]["state"]
    assert ckpt["torch_rng"].dtype == torch.uint8 and ckpt["history"][0]["epoch"] == 1
    save_checkpoint(tmp_path, ckpt)
    again = load_checkpoint(tmp_path)
    assert again.keys() == ckpt.keys()
    for key, value in ckpt["model"].items():
        assert torch.equal(again["model"][key], value), key
    assert torch.equal(again["torch_rng"], ckpt["torch_rng"])
    assert again["history"] == ckpt["history"]
    assert again["scheduler"] == ckpt["scheduler"]


def test_save_refuses_a_state_the_safe_reader_would_refuse(tmp_path: Path) -> None:
    ckpt = {"model": {"w": torch.zeros(1)}, "loss": {}, "optimizer": {"state": {}, "param_groups": []},
            "scheduler": {}, "epoch": 1, "step": 2, "train_seconds": 0.5, "history": [],
            "torch_rng": torch.get_rng_state(), "cuda_rng": None}
    assert check_training_checkpoint(ckpt, tmp_path / "c.pt") is ckpt
    with pytest.raises(CheckpointError, match="'history' holds a tuple"):
        save_checkpoint(tmp_path, {**ckpt, "history": ({"epoch": 1},)})
    with pytest.raises(CheckpointError, match=r"'scheduler.step' holds a function; a checkpoint "
                                              "holds tensors and plain values only"):
        save_checkpoint(tmp_path, {**ckpt, "scheduler": {"step": lambda: None}})
    assert not any(tmp_path.iterdir())


def test_model_weights_accepts_a_plain_state_dict(tmp_path: Path) -> None:
    weights = {"a": torch.ones(2), "b": torch.zeros(1)}
    torch.save(weights, tmp_path / "w.pt")
    got = model_weights(read_checkpoint(tmp_path / "w.pt"), tmp_path / "w.pt")
    assert got.keys() == weights.keys() and torch.equal(got["a"], weights["a"])
    with pytest.raises(CheckpointError, match="holds no model weights"):
        model_weights([1, 2], tmp_path / "w.pt")


def test_no_module_loads_a_file_unsafely() -> None:
    """Every torch file goes through fileio.load_torch_file (weights_only=True); nothing else
    unpickles (or loads YAML unsafely). Calls are found in the syntax tree, so docstrings and
    messages that name torch.load do not count."""
    unsafe_calls = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("joblib", "load"),
                    ("yaml", "load"), ("yaml", "unsafe_load"), ("dill", "load"), ("dill", "loads")}
    found, safe_loads = [], []
    for path in sorted((REPO / "reidbench").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)):
                continue
            call = (node.func.value.id, node.func.attr)
            keywords = {k.arg: k.value for k in node.keywords}
            flags = [k for k in ("weights_only", "allow_pickle")
                     if isinstance(keywords.get(k), ast.Constant)
                     and keywords[k].value is (k == "allow_pickle")]
            weights_only = keywords.get("weights_only")
            if (call == ("torch", "load") and rel == "reidbench/fileio.py"
                    and isinstance(weights_only, ast.Constant) and weights_only.value is True):
                safe_loads.append(node.lineno)
            elif call in unsafe_calls or flags:
                found.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
    assert len(safe_loads) == 1, safe_loads  # the one reader: fileio.load_torch_file
