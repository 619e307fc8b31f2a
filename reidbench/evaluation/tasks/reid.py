"""Re-ID ranking: queries against a gallery (standard protocol: same identity and camera removed,
junk ignored), CMC, mAP and mINP."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from reidbench.datasets.base import ReidSplit
from reidbench.evaluation.reid import evaluate_reid
from reidbench.evaluation.robustness import (
    Cell,
    Extractor,
    ImageStore,
    PerturbedDataset,
    SweepSpec,
    binomial_se,
)
from reidbench.evaluation.tasks.base import Extract, Preview, Rows, Task

if TYPE_CHECKING:
    from reidbench.data.perturb import Perturbation
    from reidbench.retrieval.rerank import RerankParams


class ReidTask(Task):
    """Query vs gallery ranking of a ``ReidSplit``."""

    kind = "reid"
    split: ReidSplit

    def __init__(self, split: ReidSplit) -> None:
        super().__init__(split)

    def evaluate(
        self, extract: Extract, *, metric: str = "cosine", max_rank: int = 50,
        rerank: RerankParams | None = None,
    ) -> dict[str, Any]:
        query = extract(self.split.query, "query features")
        gallery = extract(self.split.gallery, "gallery features")
        result = evaluate_reid(query, gallery, metric, max_rank, rerank=rerank)
        metrics = {"task": self.kind, **result.as_dict()}
        metrics.update({"metric": metric, "num_query": len(self.split.query),
                        "num_gallery": len(self.split.gallery)})
        return metrics

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return (f"mAP {metrics['mAP']:.4f}  mINP {metrics['mINP']:.4f}  rank-1 {metrics['rank1']:.4f}  "
                f"rank-5 {metrics['rank5']:.4f}  rank-10 {metrics['rank10']:.4f}  "
                f"({metrics['num_valid_queries']} valid queries)")

    @staticmethod
    def rows(metrics: dict[str, Any]) -> Rows:
        cmc = metrics["cmc"]
        return [("mAP", metrics["mAP"]), ("mINP", metrics["mINP"]),
                *((f"rank-{r}", cmc[r - 1]) for r in (1, 5, 10, 20) if r <= len(cmc)),
                ("valid queries", metrics["num_valid_queries"]),
                ("skipped queries", metrics["num_skipped_queries"])]

    def test_preview(self, part: str) -> Preview:
        return getattr(self.split, part), None

    @cached_property
    def stores(self) -> dict[str, ImageStore]:
        """Query and gallery images, decoded once for every model a sweep evaluates."""
        return {"query": ImageStore(self.split.query), "gallery": ImageStore(self.split.gallery)}

    def example(self) -> tuple[ImageStore, str, int]:
        return self.stores["query"], "query", 0  # the first query

    def sweep_cells(
        self, extractor: Extractor, spec: SweepSpec, metric: str, max_rank: int,
    ) -> Callable[[Perturbation | None, int], Cell]:
        """Clean gallery features now; each cell re-extracts the queries (and, with
        ``side="both"``, the gallery) under its perturbation. Per-sample values: the AP of
        each valid query."""
        tf, k, perm = extractor.transform, self.num_keypoints, self.flip_perm
        query, gallery = self.stores["query"], self.stores["gallery"]
        gallery_clean = extractor(PerturbedDataset(gallery, tf, k), perm)

        def evaluate(pert: Perturbation | None, severity: int) -> Cell:
            start = time.perf_counter()
            q = extractor(PerturbedDataset(query, tf, k, pert, severity, spec.seed, "query"), perm)
            g = gallery_clean
            if pert is not None and spec.side == "both":
                g = extractor(PerturbedDataset(gallery, tf, k, pert, severity, spec.seed, "gallery"),
                              perm)
            result = evaluate_reid(q, g, metric, max_rank, verbose=False)
            n = result.num_valid_queries
            rank1 = float(result.cmc[0])
            ap = result.per_query_ap  # (valid queries,)
            return Cell(
                pert.name if pert else "clean", severity,
                {"mAP": float(result.mAP), "rank1": rank1},
                {"mAP": float(np.std(ap, ddof=1) / math.sqrt(len(ap))) if len(ap) > 1 else None,
                 "rank1": binomial_se(rank1, n)},
                n, time.perf_counter() - start, ap,
            )

        return evaluate
