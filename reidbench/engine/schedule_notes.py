"""Notes on a learning-rate schedule that cannot do what its settings suggest."""

from __future__ import annotations

from reidbench.config import TrainConfig


def warmup_note(train: TrainConfig) -> str | None:
    """A note when training ends inside the linear warm-up (``warmup_epochs >= epochs``, e.g.
    ``--epochs 2`` with a preset of 5 warm-up epochs): the learning rate only ever rises,
    reaching ``epochs / warmup_epochs`` of ``train.lr`` at the last step, and the cosine decay
    never starts. None when the schedule leaves its warm-up."""
    if train.warmup_epochs <= 0 or train.warmup_epochs < train.epochs:
        return None
    peak = train.epochs / train.warmup_epochs
    return (f"train.epochs={train.epochs} <= train.warmup_epochs={train.warmup_epochs}: the "
            f"schedule never leaves its linear warm-up (the learning rate reaches {peak:.0%} of "
            f"train.lr={train.lr:g} at the last step; no cosine decay); to train with the full "
            f"schedule, lower the warm-up, e.g. --set train.warmup_epochs="
            f"{max(0, train.epochs // 5)}")
