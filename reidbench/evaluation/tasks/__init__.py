"""Evaluation tasks, one object per kind of test protocol: re-ID ranking (``ReidTask``), pair
verification (``PairTask``) and template verification (``TemplateTask``). ``task_for`` builds
the task of any split an adapter returns; the engine, robustness sweeps, `reidbench evaluate`
and `reidbench data preview` ask the task instead of checking the split's type.

A new kind of split gets a new ``Task`` subclass (``base.Task``: ``evaluate``, ``summary``,
``rows``, ``test_preview``; ``sweep_cells`` and ``example`` for robustness sweeps) and one line
in ``task_for`` and ``TASKS``.
"""

from __future__ import annotations

from typing import Any

from reidbench.datasets.base import FaceSplit, ReidSplit, Split, TemplateSet, VerificationSet
from reidbench.evaluation.tasks.base import Extract, Preview, Rows, Task, format_rows, format_value
from reidbench.evaluation.tasks.pairs import PairTask
from reidbench.evaluation.tasks.reid import ReidTask
from reidbench.evaluation.tasks.templates import TemplateTask

__all__ = ["TASKS", "Extract", "PairTask", "Preview", "ReidTask", "Rows", "Task", "TemplateTask",
           "format_rows", "format_value", "summary_line", "task_for"]

# the "task" value of a task's metrics -> its class
TASKS: dict[str, type[Task]] = {task.kind: task for task in (ReidTask, PairTask, TemplateTask)}


def task_for(split: Split) -> Task:
    """The task that evaluates ``split``: the one place a split's type decides how it is tested."""
    if isinstance(split, ReidSplit):
        return ReidTask(split)
    if isinstance(split, FaceSplit):
        return PairTask(split, split.verification)
    if isinstance(split, VerificationSet):
        return PairTask(split, split)
    if isinstance(split, TemplateSet):
        return TemplateTask(split)
    raise TypeError(f"no evaluation task for a {type(split).__name__}")


def summary_line(metrics: dict[str, Any]) -> str:
    """One line with the headline metrics of a run (its task's ``summary``)."""
    return TASKS[metrics.get("task", "reid")].summary(metrics)
