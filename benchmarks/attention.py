"""Cost of each position encoding in one attention block: forward+backward time and memory.

For every encoding, one ``reidbench.layers.Attention`` block (dim 384, 6 heads, batch 32) runs
forward and backward at N = 128 patches (256x128 re-ID input, 16-pixel patches: a 16x8 grid)
and N = 196 (112x112 face input, 8-pixel patches: 14x14), plus one CLS token. Reference rows in
the same run: plain attention with no position term (PyTorch's fused scaled-dot-product kernel,
the ratios' denominator), the same computed with explicit probabilities (math path), and a naive
iRPE-contextual that materialises the (T, T, d) relative tensor. RoPE (axial, mixed) rotates q
and k and keeps the fused kernel. ``nope`` adds nothing to attention (its row is the plain one)
and ``cpe``'s convolution runs once per model, outside attention (``train_throughput.py`` has
both as whole models).

Columns:
- ``ms``: median wall time of forward+backward over ``--repeats`` runs after warm-up, with the
  ratio to plain attention at the same N.
- ``peak MB``: resident-memory high-water mark of one forward+backward above the process's
  resident size just before it, in a fresh subprocess per row (glibc's mmap threshold pinned
  to 64 KiB so freed buffers go back to the OS), with the ratio to plain attention.
- ``saved MB``: bytes of the tensors autograd keeps for backward (deduplicated by storage): a
  deterministic view of the activation memory.

Usage: ``python benchmarks/attention.py [--repeats 20] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from proc_status import status_kb

from reidbench.layers import Attention, AttentionContext
from reidbench.layers.irpe import IRPE, IRPEConfig, naive_contextual_key_term
from reidbench.layers.kprpe import kprpe_factory
from reidbench.layers.position import RelativePosition
from reidbench.layers.rel_index import bucket_ids
from reidbench.layers.rope import RotaryPosition
from reidbench.layers.rpe import ShawRPE

DIM, HEADS, BATCH = 384, 6, 32
GRIDS = {128: ((16, 8), 10), 196: ((14, 14), 5)}  # N -> (grid, keypoints: body / face)


class NaiveContextualKey(IRPE):
    """iRPE contextual on keys computed by materialising (H, T, T, d): the slow reference."""

    def bucket_terms(self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext) -> None:
        return None  # force the explicit path

    def logits_bias(self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        ids = bucket_ids(ctx.grid, "product", self.cfg.ratio, "piecewise", self.cfg.skip, q.device)
        return naive_contextual_key_term(q * self.scale, self.tables["k_product"], ids)


class ExplicitSoftmax(RelativePosition):
    """No position term, but attention computed as softmax(q k^T) v with the probabilities
    materialised (PyTorch's math path), to separate the kernel's cost from the encoding's."""

    @property
    def needs_probabilities(self) -> bool:
        return True


def randomise(module: torch.nn.Module) -> None:
    """Non-zero tables so no path is a no-op."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def encodings() -> dict[str, Callable[[], RelativePosition | None]]:
    head_dim = DIM // HEADS
    ctx_cfg = IRPEConfig(mode="contextual", on="k", method="product")

    def kprpe() -> RelativePosition:
        shared, factory = kprpe_factory(KEYPOINTS, 1, HEADS)
        randomise(shared)
        term = factory(0)
        term.shared_owner = shared  # keep it alive and inside the block's modules
        return term

    return {
        "plain (no position term)": lambda: None,
        "plain, explicit softmax": ExplicitSoftmax,
        "rpe (Shaw, keys)": lambda: ShawRPE(head_dim, HEADS, 4),
        "irpe bias (product)": lambda: IRPE(IRPEConfig(mode="bias", on="k"), head_dim, HEADS),
        "irpe contextual (product, k)": lambda: IRPE(ctx_cfg, head_dim, HEADS),
        "irpe contextual, naive (T,T,d)": lambda: NaiveContextualKey(ctx_cfg, head_dim, HEADS),
        "kprpe (product)": kprpe,
        "rope axial": lambda: RotaryPosition(head_dim, HEADS, "axial"),
        "rope mixed": lambda: RotaryPosition(head_dim, HEADS, "mixed"),
    }


KEYPOINTS = 10


CHUNK_ROWS: int | None = None  # --chunk-rows: the chunk budget of bucket attention, in rows


def setup(name: str, n: int) -> tuple[Attention, torch.Tensor, AttentionContext]:
    global KEYPOINTS
    grid, KEYPOINTS = GRIDS[n]
    torch.manual_seed(0)
    rel = encodings()[name]()
    if rel is not None:
        randomise(rel)
    block = Attention(DIM, HEADS, rel_pos=rel)
    if CHUNK_ROWS is not None:
        block.chunk_rows = CHUNK_ROWS
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 1 + n, DIM, generator=g, requires_grad=True)
    kps = torch.rand(BATCH, KEYPOINTS, 2, generator=g)
    return block, x, AttentionContext(grid, 1, kps)


def step(block: Attention, x: torch.Tensor, ctx: AttentionContext) -> None:
    block(x, ctx).sum().backward()


def saved_bytes(block: Attention, x: torch.Tensor, ctx: AttentionContext) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(x, ctx)
    out.sum().backward()
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    return sum(v for k, v in seen.items() if k not in params and k != x.untyped_storage().data_ptr())


def time_ms(name: str, n: int, repeats: int) -> float:
    block, x, ctx = setup(name, n)
    for _ in range(3):
        step(block, x, ctx)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(block, x, ctx)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def child(name: str, n: int) -> None:
    """Runs in a fresh process: after two warm-up passes (code paged in, buffers returned),
    the resident high-water mark of one forward+backward above the resident size before it."""
    block, x, ctx = setup(name, n)
    for _ in range(2):
        step(block, x, ctx)
        x.grad = None
        block.zero_grad(set_to_none=True)
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM (the peak) to the current resident size
    step(block, x, ctx)
    print(json.dumps({"peak": max(0, status_kb("VmHWM") - before) * 1024}))


def peak_bytes(name: str, n: int, threads: int) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(n), "--threads", str(threads),
         *([] if CHUNK_ROWS is None else ["--chunk-rows", str(CHUNK_ROWS)])],
        capture_output=True, text=True, env=env, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--chunk-rows", type=int,
                        help="bucket attention's chunk budget in query rows (default: the layer's)")
    parser.add_argument("--only", help="comma-separated substrings: run the matching encodings only")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CHUNK_ROWS
    CHUNK_ROWS = args.chunk_rows
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(f"one attention block, batch {BATCH}, dim {DIM}, {HEADS} heads, fwd+bwd, "
          f"{args.threads} threads, torch {torch.__version__}")
    header = (f"{'encoding':32s} {'N':>4s} {'ms':>8s} {'x plain':>8s} {'peak MB':>8s} "
              f"{'x plain':>8s} {'saved MB':>9s}")
    print(header)
    print("-" * len(header))
    for n in GRIDS:
        base_ms = base_peak = None
        for name in encodings():
            if args.only and base_ms is not None and not any(o in name for o in args.only.split(",")):
                continue
            ms = time_ms(name, n, args.repeats)
            peak = peak_bytes(name, n, args.threads) / 2**20
            block, x, ctx = setup(name, n)
            saved = saved_bytes(block, x, ctx) / 2**20
            if base_ms is None:
                base_ms, base_peak = ms, peak
            print(f"{name:32s} {n:4d} {ms:8.1f} {ms / base_ms:8.2f} {peak:8.1f} "
                  f"{peak / base_peak:8.2f} {saved:9.1f}", flush=True)


if __name__ == "__main__":
    main()
