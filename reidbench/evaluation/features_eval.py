"""`reidbench evaluate`: metrics of a features file, and the lines the command prints.

``evaluate_features`` scores an ``.npz`` of saved features (``features_file``): pair features
by the verification task's protocol, query / gallery features by full ranking, FAISS top-k
retrieval (metrics truncated at k) or k-reciprocal re-ranking. ``run_lines`` formats the
metrics of a recorded run evaluated on a dataset (``engine.run.evaluate_run``). Every metric
is checked (``metrics.validate``) before it is printed or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.errors import ConfigError
from reidbench.evaluation.features_file import PairFeatures, load_features
from reidbench.evaluation.tasks import PairTask, ReidTask, Rows, format_rows, format_value
from reidbench.evaluation.verification import pair_scores, tar_rows
from reidbench.metrics.rank import evaluate_ranking_features
from reidbench.metrics.validate import check_metrics
from reidbench.metrics.verification import verification_metrics

# what `reidbench evaluate --run` prints of a run's metrics, in this order, where present
RUN_KEYS = ("mAP", "mINP", "rank1", "accuracy", "accuracy_std", "auc", "eer", "num_pairs",
            "num_templates", "num_valid_queries", "eval_seconds")


@dataclass(frozen=True)
class Evaluation:
    """Checked metrics (fractions in [0, 1]) and the lines `reidbench evaluate` prints."""

    metrics: dict[str, Any]
    lines: list[str]


def evaluate_features(
    path: Path, *, metric: str = "cosine", max_rank: int = 50, index: str = "flat",
    topk: int | None = None, rerank: bool = False, k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3,
) -> Evaluation:
    """The metrics of the features saved in ``path``.

    Pair features (``feats1``, ``feats2``, ``labels``): insightface's verification protocol on
    cosine scores (``metric`` must be cosine). Re-ID features: full-ranking CMC / mAP / mINP;
    with ``rerank``, after k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value``
    (``retrieval.rerank``; full ranking: no ``topk``); with ``topk``
    or an approximate ``index``, the top k of a FAISS search (``retrieval.topk``; k defaults
    to ``max_rank``).
    """
    data = load_features(path)
    metrics: dict[str, Any]
    notes: list[str] = []
    if isinstance(data, PairFeatures):  # the file's schema says which task it holds
        if metric != "cosine":
            raise ConfigError("verification follows insightface's protocol on L2-normalised "
                              "features: use --metric cosine")
        n = len(data.labels)
        feats = np.concatenate([data.feats1, data.feats2])
        pairs = np.stack([np.arange(n), n + np.arange(n)], 1)
        metrics = {"task": PairTask.kind,
                   **verification_metrics(pair_scores(feats, pairs), data.labels, data.folds)}
        rows = PairTask.rows(metrics)
    elif rerank:
        from reidbench.retrieval.rerank import RerankParams, evaluate_reranked

        if topk is not None:
            raise ConfigError("--rerank gives full-ranking metrics: drop --topk")
        params = RerankParams(k1, k2, lambda_value)
        result = evaluate_reranked(data.query, data.gallery, data.query_pids, data.gallery_pids,
                                   data.query_camids, data.gallery_camids, metric, params, max_rank)
        used = {"k1": params.k1, "k2": params.k2, "lambda": params.lambda_value}
        metrics = {"task": ReidTask.kind, "metric": metric, "rerank": used, **result.as_dict()}
        rows = ReidTask.rows(metrics)
    elif topk is not None or index != "flat":
        from reidbench.retrieval.topk import evaluate_index_topk

        k = topk or max_rank
        if k < 1:
            raise ConfigError(f"--topk must be >= 1, got {k}")
        top = evaluate_index_topk(data.query, data.gallery, data.query_pids, data.gallery_pids,
                                  data.query_camids, data.gallery_camids, k=k, metric=metric,
                                  kind=index)
        metrics = {"task": ReidTask.kind, "metric": metric, "index": index, **top.as_dict()}
        notes.append(f"metrics truncated at k={top.k} ({index} index): positives below rank k "
                     "count as missed")
        rows = _topk_rows(metrics, top.k)
    else:
        result = evaluate_ranking_features(
            data.query, data.gallery, data.query_pids, data.gallery_pids, data.query_camids,
            data.gallery_camids, metric=metric, max_rank=max_rank,
        )
        metrics = {"task": ReidTask.kind, "metric": metric, **result.as_dict()}
        rows = ReidTask.rows(metrics)
    check_metrics(metrics, f"metrics of {path}")
    return Evaluation(metrics, notes + format_rows(rows))


def _topk_rows(metrics: dict[str, Any], k: int) -> Rows:
    return [("mAP@k", metrics["mAP_at_k"]),
            *((f"rank-{r}", metrics["cmc"][r - 1]) for r in (1, 5, 10, 20) if r <= k),
            ("all positives in k", metrics["queries_with_all_positives_in_top_k"]),
            ("valid queries", metrics["num_valid_queries"]),
            ("skipped queries", metrics["num_skipped_queries"])]


def run_lines(metrics: dict[str, Any], run: str) -> Evaluation:
    """The checked metrics of run ``run`` evaluated on a dataset, and the lines printed: the
    model, run and dataset, every ``RUN_KEYS`` metric present, then TAR at FAR in both
    conventions."""
    check_metrics(metrics, f"metrics of run {run}")
    lines = [f"{metrics['model']} ({metrics['run_id']}) on {metrics['dataset']}"]
    lines += [f"{key:18s} {format_value(metrics[key])}" for key in RUN_KEYS if key in metrics]
    lines += format_rows(tar_rows(metrics))
    return Evaluation(metrics, lines)
