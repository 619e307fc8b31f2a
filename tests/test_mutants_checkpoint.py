"""Checkpoints: what the mutation run found undefended (scripts/mutation_test.py).

- The reader passes ``weights_only=True`` and ``map_location="cpu"`` itself: torch's own default
  was ``weights_only=False`` before 2.6, so relying on it would unpickle arbitrary objects there.
- The one-line messages name the file and the exact place: a directory or a missing path, a
  value deep inside a list or dict (``history[0].loss[1]``), a key that is not a string, a model
  entry versus a plain state dict, a state refused before it is written.
- ``error_summary`` and ``_unpickler_reason`` (the lines the messages quote), on the formats
  they document.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from reidbench.engine import checkpoint as ckpt_module
from reidbench.engine.checkpoint import (
    CheckpointError,
    check_training_checkpoint,
    error_summary,
    model_weights,
    read_checkpoint,
    save_checkpoint,
)


def training_state(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "model": {"w": torch.zeros(2)}, "loss": {}, "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": 1}, "epoch": 1, "step": 3, "train_seconds": 0.5,
        "history": [{"epoch": 1, "loss": 0.25}], "torch_rng": torch.zeros(4, dtype=torch.uint8),
        "cuda_rng": None,
    }
    state.update(changes)
    return state


def test_the_reader_asks_for_weights_only_on_the_cpu(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path, training_state())
    seen: list[dict[str, Any]] = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "load", spy)
    loaded = read_checkpoint(path)
    assert seen == [{"map_location": "cpu", "weights_only": True}]
    assert torch.equal(loaded["model"]["w"], torch.zeros(2))


def test_a_directory_or_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(tmp_path))} is a directory$"):
        read_checkpoint(tmp_path)
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(missing))} does not exist$"):
        read_checkpoint(missing)


def test_a_state_refused_before_writing_names_the_checkpoint_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(tmp_path / 'checkpoint.pt'))} is"):
        save_checkpoint(tmp_path, training_state(epoch="one"))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_values_deep_in_lists_and_dicts_are_checked_and_located(tmp_path: Path) -> None:
    where = tmp_path / "checkpoint.pt"
    at = re.escape(str(where))
    bad_value = training_state(history=[{"epoch": 1, "loss": [0.5, {1, 2}]}])
    with pytest.raises(CheckpointError,
                       match=rf"checkpoint {at} is malformed: 'history\[0\]\.loss\[1\]' holds a set"):
        check_training_checkpoint(bad_value, where)
    bad_key = training_state(history=[{"epoch": 1, (1, 2): 0.5}])
    with pytest.raises(CheckpointError,
                       match=rf"checkpoint {at} is malformed: 'history\[0\]' holds a key \(1, 2\) "
                             "that is not a string or an integer"):
        check_training_checkpoint(bad_key, where)


def test_model_weights_name_the_model_entry_or_the_state_dict(tmp_path: Path) -> None:
    where = tmp_path / "w.pt"
    at = re.escape(str(where))
    with pytest.raises(CheckpointError, match=rf"checkpoint {at} is malformed: 'model' holds entry 'b'"):
        model_weights({"model": {"a": torch.zeros(1), "b": 3}}, where)
    with pytest.raises(CheckpointError,
                       match=rf"checkpoint {at} is malformed: 'state dict' holds entry 'b'"):
        model_weights({"a": torch.zeros(1), "b": 3}, where)


def test_error_summary_keeps_one_line_or_an_introduced_pair() -> None:
    assert error_summary(RuntimeError("one line\nsecond")) == "one line"
    assert error_summary(RuntimeError(
        "Error(s) in loading state_dict for M:\n\tMissing key(s): 'w'.\n\tmore")) == (
        "Error(s) in loading state_dict for M: Missing key(s): 'w'.")
    assert error_summary(RuntimeError("ends with a colon:")) == "ends with a colon:"
    assert error_summary(KeyError()) == "KeyError"


def test_unpickler_reason_quotes_the_refused_global() -> None:
    reason = ckpt_module._unpickler_reason
    text = ("Weights only load failed. This file can still be loaded, to do so you have two "
            "options.\n\nWeightsUnpickler error: Unsupported global: GLOBAL posix.system was not "
            "an allowed global by default. Please use `torch.serialization.add_safe_globals`.")
    assert reason(pickle.UnpicklingError(text)) == "Unsupported global: GLOBAL posix.system"
    other = "Weights only load failed.\nWeightsUnpickler error:\n  Unsupported operand 149. Please x"
    assert reason(pickle.UnpicklingError(other)) == "Unsupported operand 149"
    plain = "it holds objects other than tensors and plain values"
    assert reason(pickle.UnpicklingError("something else")) == plain
    assert reason(pickle.UnpicklingError("WeightsUnpickler error:   ")) == plain


def test_a_fresh_checkpoint_with_epoch_and_step_zero_is_valid(tmp_path: Path) -> None:
    state = training_state(epoch=0, step=0)
    assert check_training_checkpoint(state, tmp_path / "c.pt") is state


@pytest.mark.parametrize(("changes", "message"), [
    ({"epoch": -1}, "'epoch' holds epoch -1, step 3"),
    ({"step": -2}, "'epoch' holds epoch 1, step -2"),
    ({"train_seconds": "x"}, "'train_seconds' holds a str, expected int or float"),
    ({"optimizer": {"param_groups": []}}, "'optimizer' holds no 'state' dict and 'param_groups' list"),
    ({"optimizer": {"state": {}}}, "'optimizer' holds no 'state' dict and 'param_groups' list"),
    ({"history": [{"epoch": 1}, 3]}, "'history' holds entries that are not dicts"),
    ({"torch_rng": torch.zeros(4)}, "'torch_rng' holds RNG states that are not byte tensors"),
    ({"cuda_rng": [torch.zeros(4, dtype=torch.uint8), 1]},
     "'torch_rng' holds RNG states that are not byte tensors"),
    ({"scheduler": {"f": object()}}, "'scheduler.f' holds a object; a checkpoint holds tensors"),
])
def test_each_malformed_part_is_named_with_the_file(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    where = tmp_path / "c.pt"
    with pytest.raises(CheckpointError,
                       match=rf"^checkpoint {re.escape(str(where))} is malformed: {re.escape(message)}"):
        check_training_checkpoint(training_state(**changes), where)
