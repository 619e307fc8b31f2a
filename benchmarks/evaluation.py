"""Re-ID evaluation at Market-1501 scale: features to metrics, next to torchreid and a matmul.

3,368 queries x 15,913 gallery, 512-d features with Market's identity and camera structure
(750 query identities, distractors as pid 0, 6 cameras). Rows, all in one run:

- ``reidbench``: ``evaluate_ranking_features`` (chunked cosine scores, positive ranks; exact
  CMC, mAP and mINP, no (Nq, Ng) matrix);
- ``torchreid``: its distance matrix (``compute_distance_matrix``, cosine) plus its Python
  ``evaluate_rank`` (the reference the metrics are tested against);
- ``matmul only``: the (Nq, Ng) similarity product alone, the floor for any exact evaluator;
- with ``--rerank``: ``reidbench +rerank`` (sparse k-reciprocal re-ranking on FAISS neighbour
  lists, then the same exact metrics) and ``torchreid +rerank`` (its three distance matrices,
  its dense ``re_ranking`` and ``evaluate_rank``), k1=20, k2=6, lambda=0.3.

``seconds`` is the median of ``--repeats`` runs; ``peak MB`` is the resident high-water mark
above the resident size before the call, measured in a fresh process per row (after one warm-up
call, with ``/proc/self/clear_refs`` resetting the mark), so each row's working memory is seen
alone. The metrics of reidbench and torchreid are printed side by side as a check.

Usage: ``python benchmarks/evaluation.py [--repeats 3] [--skip-torchreid] [--rerank]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from proc_status import status_kb

NQ, NG, DIM, IDS = 3368, 15913, 512, 750


def features(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((IDS + 1, DIM)).astype(np.float32)
    qp = np.sort(rng.integers(1, IDS + 1, NQ))
    gp = np.r_[rng.integers(1, IDS + 1, NG - 2798), np.zeros(2798, int)]  # + distractors
    qf = centres[qp] + 2.5 * rng.standard_normal((NQ, DIM)).astype(np.float32)  # mAP about 0.45
    gf = centres[gp] + 2.5 * rng.standard_normal((NG, DIM)).astype(np.float32)
    gf[gp == 0] = rng.standard_normal((2798, DIM)).astype(np.float32) * 2
    return {"qf": qf, "gf": gf, "qp": qp, "gp": gp, "qc": rng.integers(0, 6, NQ),
            "gc": rng.integers(0, 6, NG)}


def run_reidbench(d: dict[str, np.ndarray]) -> dict[str, float]:
    from reidbench.metrics.rank import evaluate_ranking_features

    r = evaluate_ranking_features(d["qf"], d["gf"], d["qp"], d["gp"], d["qc"], d["gc"],
                                  metric="cosine", max_rank=50)
    return {"mAP": r.mAP, "rank1": float(r.cmc[0])}


def run_torchreid(d: dict[str, np.ndarray]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.metrics.distance import compute_distance_matrix
        from torchreid.reid.metrics.rank import evaluate_rank

    dist = compute_distance_matrix(torch.from_numpy(d["qf"]), torch.from_numpy(d["gf"]),
                                   metric="cosine").numpy()
    cmc, mAP = evaluate_rank(dist, d["qp"], d["gp"], d["qc"], d["gc"], max_rank=50,
                             use_cython=False)
    return {"mAP": float(mAP), "rank1": float(cmc[0])}


def run_matmul(d: dict[str, np.ndarray]) -> dict[str, float]:
    q = torch.nn.functional.normalize(torch.from_numpy(d["qf"]), dim=1)
    g = torch.nn.functional.normalize(torch.from_numpy(d["gf"]), dim=1)
    s = q @ g.T
    return {"checksum": float(s[0, 0])}


def run_reidbench_rerank(d: dict[str, np.ndarray]) -> dict[str, float]:
    from reidbench.retrieval.rerank import evaluate_reranked

    r = evaluate_reranked(d["qf"], d["gf"], d["qp"], d["gp"], d["qc"], d["gc"], "cosine")
    return {"mAP": r.mAP, "rank1": float(r.cmc[0])}


def run_torchreid_rerank(d: dict[str, np.ndarray]) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.metrics.distance import compute_distance_matrix
        from torchreid.reid.metrics.rank import evaluate_rank
        from torchreid.reid.utils.rerank import re_ranking

    qf, gf = torch.from_numpy(d["qf"]), torch.from_numpy(d["gf"])
    qg, qq, gg = (compute_distance_matrix(a, b, metric="cosine").numpy()
                  for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    dist = re_ranking(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    cmc, mAP = evaluate_rank(dist, d["qp"], d["gp"], d["qc"], d["gc"], max_rank=50,
                             use_cython=False)
    return {"mAP": float(mAP), "rank1": float(cmc[0])}


ROWS = {"reidbench": run_reidbench, "torchreid": run_torchreid, "matmul only": run_matmul,
        "reidbench +rerank": run_reidbench_rerank, "torchreid +rerank": run_torchreid_rerank}
SLOW = ("torchreid", "reidbench +rerank", "torchreid +rerank")  # timed once, no warm-up


def child(name: str, repeats: int) -> None:
    d = features()
    fn = ROWS[name]
    if name not in SLOW:
        fn(d)  # warm-up
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = time.perf_counter()
    out = fn(d)
    times = [time.perf_counter() - start]
    peak = (status_kb("VmHWM") - before) * 1024
    for _ in range(repeats - 1):
        start = time.perf_counter()
        fn(d)
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times), "peak": peak, "out": out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-torchreid", action="store_true", help="it takes about a minute")
    parser.add_argument("--rerank", action="store_true",
                        help="also k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3): reidbench's "
                             "sparse one and, unless --skip-torchreid, torchreid's dense one "
                             "(several minutes and several GB)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeats)
        return
    print(f"{NQ} queries x {NG} gallery, {DIM}-d, cosine, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"{'evaluator':18s} {'seconds':>9s} {'x matmul':>9s} {'peak MB':>9s}  metrics")
    results = {}
    for name in ROWS:
        if ("torchreid" in name and args.skip_torchreid) or ("rerank" in name and not args.rerank):
            continue
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--repeats",
                               str(1 if name in SLOW else args.repeats)],
                              capture_output=True, text=True, env=env, check=True)
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results["matmul only"]["seconds"]
    for name, r in results.items():
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["out"].items() if k != "checksum")
        print(f"{name:18s} {r['seconds']:9.2f} {r['seconds'] / base:9.1f} "
              f"{r['peak'] / 2**20:9.0f}  {metrics}")
    if "torchreid" in results:
        print(f"reidbench is {results['torchreid']['seconds'] / results['reidbench']['seconds']:.0f}x "
              "faster than torchreid's Python evaluator")
    if "torchreid +rerank" in results and "reidbench +rerank" in results:
        ratio = results["torchreid +rerank"]["seconds"] / results["reidbench +rerank"]["seconds"]
        print(f"re-ranking: reidbench's sparse one is {ratio:.0f}x faster than torchreid's dense one")


if __name__ == "__main__":
    main()
