"""``torchrun`` on the CPU: a real 2-process Gloo run of ``reidbench run`` trains one model (the
ranks end with the same weights, those of the checkpoint), writes exactly one run record, gives
the metrics one process computes from that checkpoint (sharded extraction gathered in order),
and resumes under torchrun. Sharding and its inverse are checked on their own, by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MINI_MARKET, require_shared_data

from reidbench.engine import distributed
from reidbench.engine.checkpoint import read_checkpoint
from reidbench.engine.distributed import World
from reidbench.engine.run import evaluate_run
from reidbench.registry import load_builtins

REPO = Path(__file__).resolve().parents[1]
# 16 identities x 2 train images: batch 8 = P 2 x K 4 per rank, so 2 ranks x 2 identities a step
TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "8",
        "--set", "model.size=nano", "--set", "model.depth=1", "--set", "model.embed_dim=32",
        "--set", "model.num_heads=2", "--set", "data.height=32", "--set", "data.width=16",
        "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0", "--set",
        "eval.batch_size=3", "--device", "cpu"]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 -m reidbench -q <args>`` (a free port, one
    thread per process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "--monitor-interval", "0.2", "-m", "reidbench", "-q", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without "
                    "torch.distributed")
def test_two_process_gloo_run_is_one_run(tmp_path: Path) -> None:
    require_shared_data(MINI_MARKET)
    out = tmp_path / "runs"
    done = torchrun(["run", *TINY, "--epochs", "1", "--output", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = out.iterdir()  # exactly one record, written by rank 0
    names = {p.name for p in run.iterdir()}
    assert {"checkpoint.pt", "config.yaml", "environment.json", "history.jsonl", "metrics.json",
            "timings.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.loads((run / "metrics.json").read_text())
    env = json.loads((run / "environment.json").read_text())
    assert env["distributed"] == {"world_size": 2, "backend": "gloo"}
    # both ranks hashed their final weights; they agree, and they are the checkpoint's
    ranks = metrics["distributed"]["weights_sha256_by_rank"]
    weights = read_checkpoint(run / "checkpoint.pt")["model"]
    assert len(ranks) == 2 and ranks[0] == ranks[1] == distributed.state_digest(weights)
    # the P x K sampler split each step over the ranks: 16 ids / (2 ranks x 2 ids) = 4 steps
    (epoch,) = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert epoch["step"] == 4
    # sharded extraction (3-image batches dealt to 2 ranks) = one process on the same weights
    load_builtins()
    single = evaluate_run(run, device_name="cpu")
    for key in ("rank1", "mAP", "mINP", "cmc", "num_query", "num_gallery"):
        assert metrics[key] == single[key], key


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without "
                    "torch.distributed")
def test_resume_under_torchrun(tmp_path: Path) -> None:
    """An interrupted 2-process run continues from its checkpoint under torchrun; rank 0 records
    the attempt (two torchrun starts: in the slow set)."""
    require_shared_data(MINI_MARKET)
    out = tmp_path / "runs"
    done = torchrun(["run", *TINY, "--epochs", "1", "--output", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = out.iterdir()
    (run / "metrics.json").unlink()
    (run / "timings.json").unlink()
    again = torchrun(["run", *TINY, "--resume", str(run), "--epochs", "2"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [run.name]
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["epochs"] == 2
    (attempt,) = json.loads((run / "environment.json").read_text())["resumes"]
    assert attempt["resumed_after_epoch"] == 1 and attempt["distributed"]["world_size"] == 2
    assert len((run / "history.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("size,batch,total", [(2, 3, 11), (3, 2, 11), (4, 5, 7), (2, 4, 8)])
def test_batch_shards_deal_whole_batches_and_reassemble_in_order(size: int, batch: int,
                                                                  total: int) -> None:
    items = list(range(total))
    shards = [distributed.batch_shard(items, batch, World(rank, size)) for rank in range(size)]
    # batch i (items i*batch .. i*batch+batch-1) goes to rank i mod size, whole
    for i, start in enumerate(range(0, total, batch)):
        assert set(items[start:start + batch]) <= set(shards[i % size])
    assert sorted(x for s in shards for x in s) == items
    rows = [np.array(s, dtype=np.float32).reshape(-1, 1) * 10 if s else None for s in shards]
    back = distributed.unshard_rows(rows, total, batch)
    np.testing.assert_array_equal(back[:, 0], np.arange(total) * 10)


def test_one_process_is_untouched() -> None:
    """Outside torchrun: a world of one, the items as they are, no digest exchange."""
    assert distributed.world() == World()
    with distributed.session("cpu") as (world, device):
        assert (world, device) == (World(), None)
    assert distributed.batch_shard([1, 2, 3], 2, World()) == [1, 2, 3]
    assert distributed.check_in_sync(torch.nn.Linear(2, 2), World()) == []


def test_an_explicit_gpu_index_under_torchrun_is_refused() -> None:
    with pytest.raises(Exception, match="cuda:LOCAL_RANK"):
        distributed.device_for("cuda:1", 0)
    assert distributed.device_for("cpu", 3) == torch.device("cpu")
