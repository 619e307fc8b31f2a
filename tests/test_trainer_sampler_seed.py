"""The training loader draws its P x K batches from the sampler built with the run's own seed
(``train.seed``), not the sampler's default: what the mutation run found undefended in
``engine.trainer.train`` (the resume tests all train with seed 0, the sampler's default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import MINI_MARKET

from reidbench import cli
from reidbench.data.sampler import build_sampler
from reidbench.engine import trainer
from reidbench.reporting.records import CONFIG, read_run_config

TINY = ["--dataset", "market1501", "--data-root", str(MINI_MARKET), "--batch-size", "16",
        "--set", "model.size=nano", "--set", "model.depth=1", "--set", "data.height=64",
        "--set", "data.width=32", "--set", "model.patch_size=8", "--set", "train.warmup_epochs=0"]


def epoch_order(sampler: Any, epoch: int = 0) -> list[int]:
    sampler.set_epoch(epoch)
    return [index for index, _ in sampler]


@pytest.mark.usefixtures("shared_data")
def test_the_loader_samples_with_the_runs_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    real = trainer.make_loader

    def spy(dataset: Any, batch_size: int, sampler: Any = None, *args: Any, **kwargs: Any) -> Any:
        seen.append((dataset, sampler))
        return real(dataset, batch_size, sampler, *args, **kwargs)

    monkeypatch.setattr(trainer, "make_loader", spy)
    assert cli.main(["-q", "run", *TINY, "--epochs", "1", "--seed", "7",
                     "--output", str(tmp_path)]) == 0
    ((dataset, sampler),) = seen
    assert sampler is not None  # P x K batches, not the DataLoader's sequential order
    (run,) = tmp_path.iterdir()
    cfg = read_run_config(run / CONFIG)
    assert cfg.train.seed == 7
    records = dataset.records
    pids, camids = [r.pid for r in records], [r.camid for r in records]

    def built(seed: int) -> list[int]:
        return epoch_order(build_sampler(cfg.data.sampler, pids, camids, cfg.train.batch_size,
                                         cfg.data.num_instances, seed))

    assert epoch_order(sampler) == built(7)
    assert built(7) != built(0)  # the seed decides the order: a seedless sampler is caught
