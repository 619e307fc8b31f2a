"""Top-k retrieval on a gallery of a million: exact flat search against IVF and HNSW, each built
once and then reused from ``--index-file``, with recall@k against exact search.

A synthetic clustered re-ID set (``--gallery`` x ``--dim``, default 1,000,000 x 256, about ten
images per identity around a Gaussian centre, 6 cameras; ``--queries`` queries of gallery
identities) is written once to a temporary folder; every row then runs in a fresh process that
loads it and times one ``search_topk`` call, the code path of ``reidbench evaluate --features
F --topk K [--index I --index-file P]`` (feature-file parsing aside):

- ``flat``: exact search, the reference;
- ``ivf build`` / ``hnsw build``: the index built (IVF: k-means on a seeded sample of the
  gallery) and saved; ``ivf reuse`` / ``hnsw reuse``: the same call again, the index read back
  from the file (fingerprint and sha256 checked), then searched;
- ``full ranking`` (with ``--full``): the exact CMC / mAP evaluator, no FAISS.

``seconds`` is one call (these are minutes at full size, not repeated); ``peak MB`` is the
resident high-water mark above the resident size before the call (``/proc/self/clear_refs``
resets the mark), so the loaded data is not counted; ``recall@k`` is measured after the timed
call, against exact search, on ``--recall-sample`` seeded queries. The header names the CPU,
FAISS's threads and, where FAISS has one, the GPU.

Usage: ``python benchmarks/million_gallery.py [--gallery 1000000] [--dim 256] [--queries 2000]
[--topk 20] [--nprobe 16] [--ef-search 128] [--full]``. Run it on a quiet machine: the numbers
are only worth the load beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from proc_status import status_kb

ROWS = ("flat", "ivf build", "ivf reuse", "hnsw build", "hnsw reuse", "full ranking")


def write_data(folder: Path, n: int, dim: int, nq: int, seed: int = 0, noise: float = 0.6) -> None:
    """The gallery and queries as .npy files in ``folder``, generated in chunks."""
    rng = np.random.default_rng(seed)
    ids = max(1, n // 10)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    gp = rng.integers(0, ids, n)
    gallery = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 16):
        e = min(n, s + (1 << 16))
        gallery[s:e] = centres[gp[s:e]] + noise * rng.standard_normal((e - s, dim), dtype=np.float32)
    qp = gp[rng.choice(n, nq, replace=False)]
    query = centres[qp] + noise * rng.standard_normal((nq, dim), dtype=np.float32)
    arrays = {"gallery": gallery, "query": query, "gp": gp, "qp": qp,
              "gc": rng.integers(0, 6, n), "qc": rng.integers(0, 6, nq)}
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)


def child(row: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from reidbench.metrics.rank import evaluate_ranking_features
    from reidbench.retrieval.index import IndexParams
    from reidbench.retrieval.index_file import load_or_build
    from reidbench.retrieval.recall import recall_at_k
    from reidbench.retrieval.topk import search_topk

    d = {name: np.load(folder / f"{name}.npy") for name in ("gallery", "query", "gp", "qp", "gc", "qc")}
    kind = row.split()[0]
    params = IndexParams(nprobe=args.nprobe, ef_search=args.ef_search)
    path = folder / f"{kind}.faiss" if kind in ("ivf", "hnsw") else None
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = time.perf_counter()
    if row == "full ranking":
        full = evaluate_ranking_features(d["query"], d["gallery"], d["qp"], d["gp"], d["qc"],
                                         d["gc"], metric="cosine", max_rank=args.topk)
        out = {"rank1": float(full.cmc[0]), "mAP": full.mAP}
    else:
        found = search_topk(d["query"], d["gallery"], d["qp"], d["gp"], d["qc"], d["gc"],
                            k=args.topk, metric="cosine", kind=kind, params=params,
                            index_file=path)
        out = {"rank1": float(found.result.cmc[0]), "mAP@k": found.result.mAP_at_k,
               "reused": found.reused, "index": found.index}
    seconds = time.perf_counter() - start
    peak = (status_kb("VmHWM") - before) * 1024
    if path is not None:  # recall, untimed: the saved index against exact search
        index, _ = load_or_build(path, d["gallery"], "cosine", kind, params)
        out["recall"] = recall_at_k(index, d["gallery"], d["query"], args.topk,
                                    args.recall_sample).recall
    return {"seconds": seconds, "peak": peak, **out}


def device_line() -> str:
    import faiss

    from reidbench.retrieval import gpu

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    where = f"CPU {cpu}, {os.cpu_count()} cores, FAISS {faiss.__version__} with " \
            f"{faiss.omp_get_max_threads()} threads"
    if gpu.available():
        try:
            import torch

            name = torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - the name is a courtesy
            name = "GPU 0"
        where += f"; FAISS flat/IVF on {name}"
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--recall-sample", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="also the exact full-ranking evaluator")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args)))
        return
    folder = Path(tempfile.mkdtemp(prefix="million_gallery."))
    try:
        write_data(folder, args.gallery, args.dim, args.queries)
        print(f"{args.gallery} gallery x {args.dim}-d, {args.queries} queries, cosine, top-"
              f"{args.topk}, nprobe {args.nprobe}, ef_search {args.ef_search}")
        print(device_line())
        print(f"{'row':13s} {'seconds':>9s} {'peak MB':>9s} {'rank-1':>7s} "
              f"{'recall@k':>9s}  index")
        for row in ROWS:
            if row == "full ranking" and not args.full:
                continue
            command = [sys.executable, __file__, "--child", row, "--folder", str(folder),
                       "--topk", str(args.topk), "--nprobe", str(args.nprobe), "--ef-search",
                       str(args.ef_search), "--recall-sample", str(args.recall_sample)]
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            recall = f"{r['recall']:.4f}" if "recall" in r else "exact"
            index = ", ".join(f"{k}={v}" for k, v in r.get("index", {}).items() if k != "kind")
            print(f"{row:13s} {r['seconds']:9.2f} {r['peak'] / 2**20:9.0f} {r['rank1']:7.4f} "
                  f"{recall:>9s}  {index}")
    finally:
        shutil.rmtree(folder)  # the temporary folder this run created, and only it


if __name__ == "__main__":
    main()
