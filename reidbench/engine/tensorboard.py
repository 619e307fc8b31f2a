"""TensorBoard event files of a run: the training curves, beside ``history.jsonl``.

After every epoch, ``<run>/events.out.tfevents.*`` receives each number of that epoch's history
record under ``train/`` (every loss term, unweighted, and the weighted ``total``, ``grad_norm``,
``lr``, the loss diagnostics, ``seconds``) and ``train/images_per_second`` (images of all ranks
over the epoch's seconds); the evaluation metrics follow under ``eval/`` at the last epoch. The
step axis is the epoch. ``tensorboard --logdir results/runs`` shows one curve per run folder; a
resumed run adds a second event file that continues the first.

Only the main process writes (rank 0 under torchrun). The files are written by
``torch.utils.tensorboard``, which needs the ``tensorboard`` package (``pip install
'reidbench[tensorboard]'``, also in the ``cnn`` and ``dev`` extras); without it nothing is
written and one info line says how to get the curves. We do not write TensorBoard's record
format by hand: its only supported writer is that package.

Event files are TensorBoard's append-only streams, not records: the run's record of the same
numbers is ``history.jsonl`` (written atomically). The writer opens at the first finished
epoch, never earlier: a run stopped before its first
checkpoint leaves no event file behind (its folder is then removed, see ``engine.run``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import torch.distributed as dist

log = logging.getLogger(__name__)

INSTALL_HINT = ("training curves (TensorBoard event files) need the tensorboard package: "
                "pip install 'reidbench[tensorboard]'")
_hint_logged = False
NOT_CURVES = ("epoch", "step")  # the axes, not values


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _scalars(values: dict[str, Any]) -> dict[str, float]:
    """The finite real numbers of ``values`` (lists, strings, flags and NaN left out)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class TrainingCurves:
    """The event files of one training session in ``run_dir`` (see the module docstring)."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled and is_main_process()
        self._writer: Any = None

    def _open(self) -> Any:
        global _hint_logged
        if self._writer is None and self.enabled:
            if not tensorboard_available():
                if not _hint_logged:
                    log.info("%s", INSTALL_HINT)
                    _hint_logged = True
                self.enabled = False
                return None
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        return self._writer

    def epoch(self, record: dict[str, Any], images: int | None = None) -> None:
        """One history record (``trainer``'s per-epoch means); ``images``: how many images the
        epoch trained on, all ranks together, for ``train/images_per_second``."""
        writer = self._open()
        if writer is None:
            return
        step = int(record["epoch"])
        values = _scalars({k: v for k, v in record.items() if k not in NOT_CURVES})
        if images is not None and values.get("seconds", 0.0) > 0:
            values["images_per_second"] = images / values["seconds"]
        for key, value in values.items():
            writer.add_scalar(f"train/{key}", value, step)
        writer.flush()

    def evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        """The evaluation metrics of the model after ``epoch`` epochs (fractions in [0, 1])."""
        writer = self._open()
        if writer is None:
            return
        for key, value in _scalars(metrics).items():
            writer.add_scalar(f"eval/{key}", value, epoch)
        writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_evaluation(run_dir: Path, epoch: int, metrics: dict[str, Any]) -> None:
    """The evaluation metrics of a finished run as curves (``TrainingCurves.evaluation``)."""
    curves = TrainingCurves(run_dir)
    try:
        curves.evaluation(epoch, metrics)
    finally:
        curves.close()
