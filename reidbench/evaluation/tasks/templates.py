"""Template verification (IJB-B / IJB-C 1:1): image features averaged per media and summed per
template (insightface's procedure, ``evaluation.templates``), template pairs scored by cosine."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from reidbench.datasets.base import TemplateSet
from reidbench.evaluation.tasks.base import Extract, Preview, Rows, Task
from reidbench.evaluation.templates import evaluate_templates
from reidbench.evaluation.verification import tar_rows

if TYPE_CHECKING:
    from reidbench.retrieval.rerank import RerankParams

log = logging.getLogger(__name__)


class TemplateTask(Task):
    """The template pairs of a ``TemplateSet`` (test only: ``reidbench evaluate --run``)."""

    kind = "templates"
    split: TemplateSet

    def __init__(self, split: TemplateSet) -> None:
        super().__init__(split)

    def evaluate(
        self, extract: Extract, *, metric: str = "cosine", max_rank: int = 50,
        rerank: RerankParams | None = None,
    ) -> dict[str, Any]:
        """Every image once, then the template pairs; the ranking settings do not apply."""
        feats = extract(self.split.images, "template image features")
        metrics = {"task": self.kind, **evaluate_templates(self.split, feats.feats)}
        log.info("templates: %d pairs of %d templates, AUC %.4f", metrics["num_pairs"],
                 metrics["num_templates"], metrics["auc"])
        return metrics

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return (f"AUC {metrics['auc']:.4f}  EER {metrics['eer']:.4f}  ({metrics['num_pairs']} pairs "
                f"of {metrics['num_templates']} templates)")

    @staticmethod
    def rows(metrics: dict[str, Any]) -> Rows:
        return [("auc", metrics["auc"]), ("eer", metrics["eer"]), *tar_rows(metrics)]

    def test_preview(self, part: str) -> Preview:
        """Every image, labelled with its template."""
        return self.split.images, lambda r: f"template {r.pid}"
