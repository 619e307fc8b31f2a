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
from typing import TYPE_CHECKING, Any

import numpy as np

from reidbench.errors import ConfigError
from reidbench.evaluation.features_file import PairFeatures, load_features
from reidbench.evaluation.tasks import PairTask, ReidTask, Rows, format_rows, format_value
from reidbench.evaluation.verification import pair_scores, tar_rows
from reidbench.metrics.rank import evaluate_ranking_features
from reidbench.metrics.validate import check_metrics
from reidbench.metrics.verification import verification_metrics

if TYPE_CHECKING:
    from reidbench.retrieval.topk import IndexTopK

# what `reidbench evaluate --run` prints of a run's metrics, in this order, where present
RUN_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10", "accuracy", "accuracy_std", "auc", "eer", "num_pairs",
            "num_templates", "num_valid_queries", "eval_seconds")


@dataclass(frozen=True)
class Evaluation:
    """Checked metrics (fractions in [0, 1]) and the lines `reidbench evaluate` prints."""

    metrics: dict[str, Any]
    lines: list[str]


def evaluate_features(
    path: Path, *, metric: str = "cosine", max_rank: int = 50, index: str = "flat",
    topk: int | None = None, rerank: bool = False, k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3, nlist: int | None = None, nprobe: int | None = None,
    hnsw_m: int | None = None, ef_search: int | None = None, index_file: Path | None = None,
    recall_sample: int | None = None,
) -> Evaluation:
    """The metrics of the features saved in ``path``.

    Pair features (``feats1``, ``feats2``, ``labels``): insightface's verification protocol on
    cosine scores (``metric`` must be cosine). Re-ID features: full-ranking CMC / mAP / mINP;
    with ``rerank``, after k-reciprocal re-ranking with ``k1``, ``k2``, ``lambda_value``
    (``retrieval.rerank``; full ranking: no ``topk``); with ``topk``
    or an approximate ``index``, the top k of a FAISS search (``retrieval.topk``; k defaults
    to ``max_rank``), built with ``nlist``, ``nprobe``, ``hnsw_m``, ``ef_search`` (None:
    defaults), reused from / saved to ``index_file``, and with ``recall_sample`` its recall@k
    against exact search on that many seeded queries (``retrieval``).
    """
    from_index = {"--index-file": index_file, "--recall-sample": recall_sample}
    if (topk is None and index == "flat") or rerank:
        for flag, value in from_index.items():
            if value is not None:
                raise ConfigError(f"{flag} goes with a FAISS top-k search: add --topk K or "
                                  "--index ivf|hnsw" + (" (not --rerank)" if rerank else ""))
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
        from reidbench.retrieval.index import params_from_flags
        from reidbench.retrieval.topk import search_topk

        params = params_from_flags(index, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                                   ef_search=ef_search)
        k = topk or max_rank
        if k < 1:
            raise ConfigError(f"--topk must be >= 1, got {k}")
        found = search_topk(data.query, data.gallery, data.query_pids, data.gallery_pids,
                            data.query_camids, data.gallery_camids, k=k, metric=metric,
                            kind=index, params=params, index_file=index_file,
                            recall_sample=recall_sample)
        top = found.result
        metrics = {"task": ReidTask.kind, "metric": metric, "index": index, **top.as_dict(),
                   **_index_record(found, index_file)}
        notes.append(f"metrics truncated at k={top.k} ({index} index): positives below rank k "
                     "count as missed")
        notes += _index_notes(found, index_file)
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


def _index_record(found: IndexTopK, index_file: Path | None) -> dict[str, Any]:
    """What the metrics record about the index beyond its kind (nothing for a plain flat
    search, whose record stays as it was)."""
    record: dict[str, Any] = {}
    if found.index["kind"] != "flat":
        record["index_params"] = found.index
        record["index_build_seconds"] = round(found.build_seconds, 3)
    if index_file is not None:
        record["index_file"] = str(index_file)
        record["index_reused"] = found.reused
    if found.recall is not None:
        record["recall_at_k"] = found.recall.as_dict()
    return record


def _index_notes(found: IndexTopK, index_file: Path | None) -> list[str]:
    """How the index was made (for an approximate or saved one) and what recall measured."""
    info = found.index
    lines = []
    if info["kind"] != "flat" or index_file is not None:
        settings = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("kind", "gpu"))
        how = (f"reused from {index_file}" if found.reused
               else f"built in {found.build_seconds:.1f}s")
        if index_file is not None and not found.reused:
            how += f", saved to {index_file}"
        lines.append(f"{info['kind']} index{' on GPU' if info['gpu'] else ''}"
                     f"{f' ({settings})' if settings else ''}: {how}")
    if found.recall is not None:
        r = found.recall
        lines.append(f"recall@{r.k} of the {info['kind']} index against exact search on "
                     f"{r.num_sampled} sampled queries (seed {r.seed})")
    return lines


def _topk_rows(metrics: dict[str, Any], k: int) -> Rows:
    return [("mAP@k", metrics["mAP_at_k"]),
            *((f"rank-{r}", metrics["cmc"][r - 1]) for r in (1, 5, 10, 20) if r <= k),
            ("all positives in k", metrics["queries_with_all_positives_in_top_k"]),
            ("valid queries", metrics["num_valid_queries"]),
            ("skipped queries", metrics["num_skipped_queries"]),
            *(((f"recall@{r['k']} vs exact", r["recall"]),)
              if (r := metrics.get("recall_at_k")) else ())]


def run_lines(metrics: dict[str, Any], run: str) -> Evaluation:
    """The checked metrics of run ``run`` evaluated on a dataset, and the lines printed: the
    model, run and dataset, every ``RUN_KEYS`` metric present, then TAR at FAR in both
    conventions."""
    check_metrics(metrics, f"metrics of run {run}")
    lines = [f"{metrics['model']} ({metrics['run_id']}) on {metrics['dataset']}"]
    lines += [f"{key:18s} {format_value(metrics[key])}" for key in RUN_KEYS if key in metrics]
    lines += format_rows(tar_rows(metrics))
    return Evaluation(metrics, lines)
