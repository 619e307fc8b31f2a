"""Pair verification (LFW protocol): cosine scores of image pairs, k-fold accuracy, ROC AUC,
EER and TAR at FAR in both conventions (``metrics.verification``)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from reidbench.datasets.base import FaceSplit, VerificationSet
from reidbench.evaluation.robustness import (
    Cell,
    Extractor,
    ImageStore,
    PerturbedDataset,
    SweepSpec,
    auc_se,
    binomial_se,
)
from reidbench.evaluation.tasks.base import Extract, Preview, Rows, Task
from reidbench.evaluation.verification import evaluate_verification, pair_scores, tar_rows
from reidbench.metrics.verification import kfold_accuracy, verification_metrics

if TYPE_CHECKING:
    from reidbench.data.perturb import Perturbation
    from reidbench.retrieval.rerank import RerankParams

log = logging.getLogger(__name__)


class PairTask(Task):
    """The verification pairs of a ``FaceSplit`` (its ``verification`` set) or of a
    ``VerificationSet`` itself (``pairs``)."""

    kind = "verification"

    def __init__(self, split: FaceSplit | VerificationSet, pairs: VerificationSet) -> None:
        super().__init__(split)
        self.pairs = pairs

    def evaluate(
        self, extract: Extract, *, metric: str = "cosine", max_rank: int = 50,
        rerank: RerankParams | None = None,
    ) -> dict[str, Any]:
        """Every image once, then the pairs; ``metric``, ``max_rank`` and ``rerank`` are ranking
        settings and do not apply (insightface's protocol: cosine on normalised features)."""
        feats = extract(self.pairs.images, "pair image features")
        metrics = {"task": self.kind, **evaluate_verification(self.pairs, feats)}
        log.info("verification: %d pairs, %d-fold accuracy %.4f +- %.4f, AUC %.4f",
                 metrics["num_pairs"], metrics["num_folds"], metrics["accuracy"],
                 metrics["accuracy_std"], metrics["auc"])
        return metrics

    @staticmethod
    def summary(metrics: dict[str, Any]) -> str:
        return (f"{metrics['num_folds']}-fold accuracy {metrics['accuracy']:.4f} "
                f"(std {metrics['accuracy_std']:.4f})  AUC {metrics['auc']:.4f}  "
                f"EER {metrics['eer']:.4f}  ({metrics['num_pairs']} pairs)")

    @staticmethod
    def rows(metrics: dict[str, Any]) -> Rows:
        return [("accuracy", metrics["accuracy"]), ("accuracy_std", metrics["accuracy_std"]),
                ("auc", metrics["auc"]), ("eer", metrics["eer"]), *tar_rows(metrics)]

    def test_preview(self, part: str) -> Preview:
        """The paired images, labelled with the person's name."""
        names = self.pairs.identities
        return self.pairs.images, lambda r: names[r.pid][:18]

    @cached_property
    def stores(self) -> dict[str, ImageStore]:
        """Every paired image, decoded once for every model a sweep evaluates."""
        return {"images": ImageStore(self.pairs.images)}

    def example(self) -> tuple[ImageStore, str, int]:
        return self.stores["images"], "pairs", int(self.pairs.pairs[0, 1])  # second image of pair 0

    def sweep_cells(
        self, extractor: Extractor, spec: SweepSpec, metric: str, max_rank: int,
    ) -> Callable[[Perturbation | None, int], Cell]:
        """Clean features of every paired image now; each cell re-extracts the second image of
        every pair (``side="both"``: both images) under its perturbation and scores the pairs.
        Per-sample values: 1/0 whether each pair is classified right at its fold's threshold."""
        tf, k, perm = extractor.transform, self.num_keypoints, self.flip_perm
        vs, store = self.pairs, self.stores["images"]
        pairs = np.asarray(vs.pairs, np.int64)
        paired = np.unique(pairs)  # images in no pair are never scored: not extracted
        found = extractor(PerturbedDataset(store, tf, k, indices=paired), perm).feats
        n = len(store)
        clean = np.zeros((n, found.shape[1]), found.dtype)
        clean[paired] = found
        moved = np.unique(pairs[:, 1]) if spec.side == "query" else paired

        def evaluate(pert: Perturbation | None, severity: int) -> Cell:
            start = time.perf_counter()
            if pert is None:
                scores = pair_scores(clean, pairs)
            else:
                ds = PerturbedDataset(store, tf, k, pert, severity, spec.seed, "pairs", indices=moved)
                perturbed = clean.copy()
                perturbed[moved] = extractor(ds, perm).feats
                first = pairs[:, 0] + (n if spec.side == "both" else 0)
                scores = pair_scores(np.concatenate([clean, perturbed]),
                                     np.stack([first, pairs[:, 1] + n], 1))
            m: dict[str, Any] = verification_metrics(scores, vs.labels, vs.folds)
            labels = np.asarray(vs.labels).astype(int)
            distances = 2.0 - 2.0 * scores  # the k-fold protocol's squared L2 of unit features
            kfold = kfold_accuracy(distances, labels, np.asarray(vs.folds))
            fold_ids = np.searchsorted(np.unique(vs.folds), vs.folds)
            correct = ((distances < kfold.thresholds[fold_ids]) == labels.astype(bool)).astype(np.float64)
            pos, neg = int(labels.sum()), int((labels == 0).sum())
            tar = m["tar_at_far"].get("0.01")
            auc = float(m["auc"])
            values = {"accuracy": float(m["accuracy"]), "auc": auc,
                      "tar_at_far_1e-2": None if tar is None else float(tar)}
            folds = int(m["num_folds"])
            stderr = {
                "accuracy": float(m["accuracy_std"]) / math.sqrt(folds) if folds > 1 else None,
                "auc": auc_se(auc, pos, neg),
                "tar_at_far_1e-2": None if tar is None else binomial_se(float(tar), pos),
            }
            return Cell(pert.name if pert else "clean", severity, values, stderr, len(pairs),
                        time.perf_counter() - start, correct)

        return evaluate
