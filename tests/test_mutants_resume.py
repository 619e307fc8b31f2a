"""Resume, unit by unit: what the mutation run found undefended (scripts/mutation_test.py).

- A snapshot restored into a fresh state gives back every part of it: weights, the optimizer's
  moments, the schedule, the counters, the history and the RNG stream (the next random draw
  is the one the interrupted run would have made).
- The CUDA RNG states are saved when CUDA is there and restored only when both the record has
  them and CUDA is there (simulated: this machine has no GPU).
- Moving the optimizer to the device moves its tensors except ``step`` (the meta device exists
  in every torch build).
- A checkpoint that does not fit is one line naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from reidbench.engine import trainer
from reidbench.engine.trainer import TrainState
from reidbench.errors import ReidbenchError


def fresh_state(seed: int) -> TrainState:
    torch.manual_seed(seed)
    model, loss = nn.Linear(3, 2), nn.Linear(2, 1)
    optimizer = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return TrainState(model, loss, optimizer, scheduler)  # type: ignore[arg-type]


def take_steps(state: TrainState, n: int) -> None:
    for _ in range(n):
        out = state.loss(state.model(torch.randn(4, 3))).pow(2).mean()
        state.optimizer.zero_grad()
        out.backward()
        state.optimizer.step()
        state.scheduler.step()
        state.step += 1


def on_disk(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot as a checkpoint file holds it: written and read back (no shared tensors)."""
    buffer = io.BytesIO()
    torch.save(snapshot, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_restored_snapshot_continues_the_same_trajectory(tmp_path: Path) -> None:
    state = fresh_state(0)
    take_steps(state, 3)
    state.epoch, state.train_seconds, state.history = 1, 2.5, [{"epoch": 1, "loss": 0.5}]
    snap = on_disk(trainer._snapshot(state))
    take_steps(state, 2)  # the uninterrupted run goes on...
    expected = {k: v.clone() for k, v in state.model.state_dict().items()}
    after = torch.rand(3)

    resumed = fresh_state(1)  # ...and a new process starts from other weights and RNG
    trainer._restore(resumed, snap, tmp_path / "checkpoint.pt")
    assert (resumed.epoch, resumed.step, resumed.train_seconds) == (1, 3, 2.5)
    assert resumed.history == [{"epoch": 1, "loss": 0.5}]
    assert resumed.scheduler.last_epoch == 3
    take_steps(resumed, 2)
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert torch.equal(torch.rand(3), after)


def test_cuda_rng_states_are_saved_and_restored_when_cuda_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restored: list[Any] = []
    states = [torch.zeros(8, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = fresh_state(0)
    snap = trainer._snapshot(state)
    assert snap["cuda_rng"] is states
    trainer._restore(fresh_state(1), snap, tmp_path / "c.pt")
    assert restored == [states]
    trainer._restore(fresh_state(1), {**snap, "cuda_rng": None}, tmp_path / "c.pt")
    assert restored == [states]  # a record without CUDA states sets nothing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer._snapshot(state)["cuda_rng"] is None
    trainer._restore(fresh_state(1), snap, tmp_path / "c.pt")
    assert restored == [states]  # no CUDA here: the recorded states are not set


def test_the_optimizer_moves_except_its_step_counter() -> None:
    state = fresh_state(0)
    take_steps(state, 1)
    trainer._move_optimizer(state.optimizer, torch.device("meta"))
    for values in state.optimizer.state.values():
        assert values["exp_avg"].device.type == "meta"
        assert values["exp_avg_sq"].device.type == "meta"
        if isinstance(values.get("step"), torch.Tensor):
            assert values["step"].device.type == "cpu"


def test_a_checkpoint_that_does_not_fit_names_the_file(tmp_path: Path) -> None:
    snap = trainer._snapshot(fresh_state(0))
    other = fresh_state(0)
    other.model = nn.Linear(3, 5)
    with pytest.raises(ReidbenchError, match=r"checkpoint .*c\.pt does not fit this run's model"):
        trainer._restore(other, snap, tmp_path / "c.pt")
