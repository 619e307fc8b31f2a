"""What every evaluation task is: the test protocol of one kind of split (``task_for``).

A task knows which images of its split to extract, how to score their features into metrics
(the ``task`` value of those metrics is its ``kind``), how to summarise and print them, which
images a preview shows, and, where a robustness sweep applies, how to evaluate one
(perturbation, severity) cell. Running the model is the caller's: ``evaluate`` receives an
``Extract`` that turns records into features (the engine's, with its model, transform, device
and progress bar).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from reidbench.data.records import ImageRecord
from reidbench.datasets.base import Split
from reidbench.errors import ReidbenchError
from reidbench.evaluation.reid import Features
from reidbench.evaluation.robustness import Cell, Extractor, ImageStore, SweepSpec

if TYPE_CHECKING:
    from reidbench.data.perturb import Perturbation
    from reidbench.retrieval.rerank import RerankParams

# (records, what they are, e.g. "query features") -> their features, in order
Extract = Callable[[list[ImageRecord], str], Features]
Rows = list[tuple[str, Any]]
# the records a preview draws from, and how each is labelled (None: identity and camera)
Preview = tuple[list[ImageRecord], Callable[[ImageRecord], str] | None]


def format_value(value: Any) -> str:
    """A metric as `reidbench evaluate` prints it: 4 decimals, counts as they are, n/a."""
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def format_rows(rows: Rows) -> list[str]:
    """``name value`` lines, the name padded to 18 characters."""
    return [f"{name:18s} {format_value(value)}" for name, value in rows]


class Task(ABC):
    """The test side of one split. Subclasses set ``kind`` and implement ``evaluate``,
    ``summary`` and ``rows``; ``sweep_cells`` and ``example`` where robustness sweeps apply."""

    kind: ClassVar[str]  # the metrics' "task": reid | verification | templates

    def __init__(self, split: Split) -> None:
        self.split = split
        schema = split.keypoint_schema
        self.num_keypoints = schema.num_keypoints if schema else 0
        # keypoint permutation of a horizontal flip (flip test, mirrored keypoints)
        self.flip_perm = tuple(int(i) for i in schema.flip_permutation()) if schema else None

    @property
    def name(self) -> str:
        return self.split.name

    @property
    def train(self) -> list[ImageRecord] | None:
        """The split's training records; None for a test-only set (``reidbench run`` needs them)."""
        return getattr(self.split, "train", None)

    @abstractmethod
    def evaluate(
        self, extract: Extract, *, metric: str = "cosine", max_rank: int = 50,
        rerank: RerankParams | None = None,
    ) -> dict[str, Any]:
        """Extract the test images' features and score them: the metrics, ``task`` first."""

    @staticmethod
    @abstractmethod
    def summary(metrics: dict[str, Any]) -> str:
        """One line with the headline metrics (the end of `reidbench run`)."""

    @staticmethod
    @abstractmethod
    def rows(metrics: dict[str, Any]) -> Rows:
        """The (name, value) rows `reidbench evaluate --features` prints."""

    def preview(self, part: str) -> Preview:
        """The records `reidbench data preview --split part` draws from, and how each is
        labelled (None: identity and camera). ``train`` is the training records where there are
        any; any other part is the task's own test images."""
        if part == "train" and self.train is not None:
            return self.train, None
        return self.test_preview(part)

    @abstractmethod
    def test_preview(self, part: str) -> Preview:
        """``preview`` of the test images (``part``: query or gallery where that applies)."""

    def sweep_cells(
        self, extractor: Extractor, spec: SweepSpec, metric: str, max_rank: int,
    ) -> Callable[[Perturbation | None, int], Cell]:
        """The evaluator of one robustness cell (``evaluation.robustness.sweep``)."""
        raise ReidbenchError(f"{self.name}: robustness sweeps cover re-ID ranking and pair "
                             f"verification, not {self.kind} evaluation")

    def example(self) -> tuple[ImageStore, str, int]:
        """The image a robustness report shows perturbed: its store, stream and index."""
        raise ReidbenchError(f"{self.name}: no robustness example for {self.kind} evaluation")
