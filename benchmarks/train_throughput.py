"""Training throughput of every position encoding next to timm's VisionTransformer.

Images per second of one full training step, in one run, for each device (CPU, and CUDA where
present), size (``nano``, ``small``) and precision (``fp32``, ``bf16``):

- ``timm``: ``timm.models.vision_transformer.VisionTransformer`` with the same width, depth,
  heads, MLP ratio, patch and input size (CLS token, token pooling, qkv bias), the reference row;
- ``ape``, ``rpe``, ``irpe``, ``kprpe``, ``rope``, ``cpe``, ``nope``: reidbench's ViT with each
  position encoding, built by the model registry from ``ModelConfig(name, size, patch_size)``
  (default settings of each encoding; KP-RPE reads ``--keypoints`` random keypoints per image;
  ``rope`` is the axial variant, ``rope-mixed`` the mixed one, ``model.rope.mode=mixed``).

The step is the same for every row: random (B, 3, H, W) images -> backbone -> (B, D) CLS
embedding -> linear classifier over ``--classes`` identities -> cross-entropy -> backward ->
AdamW step (``zero_grad(set_to_none=True)``). ``bf16`` wraps the forward pass and the loss in
``torch.autocast(device, torch.bfloat16)`` with fp32 weights; ``fp32`` is plain. Relative
encodings use whatever attention path reidbench's attention layer picks for the device.

Columns: ``images/s`` = batch * steps / wall time of ``--steps`` steps after ``--warmup`` steps
(CUDA synchronised before and after); ``x timm`` = ratio to the timm row of the same device,
size and precision; ``peak MB``: CUDA peak allocated memory of the row (``-`` on CPU). Every row
names its device (CPU model and thread count, or the CUDA device name).

The ``loader`` rows answer whether the data pipeline keeps up: images/s that reidbench's training
loader delivers (``ImageDataset`` decoding JPEGs without the image cache, the training transform
at the benchmark's input size with the Market-1501 recipe's pad 10 and erasing 0.5, the P x K
sampler, ``make_loader`` with pinned memory on CUDA) for each ``--loader-workers`` count, read
from ``--loader-images`` random 128x64 JPEGs (Market-1501's crop size) written to a temporary
folder. A loader row faster than the training rows of its device means the loader is not the
bottleneck at that worker count.

Usage: ``python benchmarks/train_throughput.py [--sizes nano,small] [--devices cpu,cuda]
[--precisions fp32,bf16] [--batch 64] [--steps 10] [--warmup 3] [--rounds 1] [--threads N]
[--loader-workers 0,4] [--loader-images 512]``
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import reidbench.models.vit  # noqa: F401  (registers the ViT variants)
from reidbench.config import ModelConfig, RopeConfig
from reidbench.data.loader import ImageDataset, make_loader
from reidbench.data.records import ImageRecord
from reidbench.data.sampler import PKSampler
from reidbench.data.transforms import Transform
from reidbench.models.vit import SIZES
from reidbench.registry import MODELS

ENCODINGS = ("ape", "rpe", "irpe", "kprpe", "rope", "rope-mixed", "cpe", "nope")
# rows that are a registered model with settings: row -> (model, ModelConfig fields)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "rope-mixed": ("rope", {"rope": RopeConfig(mode="mixed")}),
}
MODELS_ORDER = ("timm", *ENCODINGS)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_label(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return f"CPU {cpu_name()}, {threads} threads"


def timm_backbone(size: str, img: tuple[int, int], patch: int) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    dim, depth, heads = SIZES[size]
    return VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth,
                             num_heads=heads, mlp_ratio=4.0, qkv_bias=True, num_classes=0,
                             class_token=True, global_pool="token")


def backbone(name: str, size: str, img: tuple[int, int], patch: int, keypoints: int) -> nn.Module:
    if name == "timm":
        return timm_backbone(size, img, patch)
    name, fields = VARIANTS.get(name, (name, {}))
    cfg = ModelConfig(name=name, size=size, patch_size=patch, **fields)  # type: ignore[arg-type]
    return MODELS.get(name)(cfg, img, keypoints)  # type: ignore[operator,no-any-return]


class Step:
    """One training step of backbone + linear classifier + cross-entropy + AdamW."""

    def __init__(self, name: str, size: str, args: argparse.Namespace, device: torch.device,
                 precision: str) -> None:
        img = (args.height, args.width)
        self.model = backbone(name, size, img, args.patch, args.keypoints).to(device)
        dim = SIZES[size][0]
        self.head = nn.Linear(dim, args.classes).to(device)
        params = [*self.model.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(args.batch, 3, *img, generator=g).to(device)
        self.labels = torch.randint(args.classes, (args.batch,), generator=g).to(device)
        self.keypoints = torch.rand(args.batch, args.keypoints, 2, generator=g).to(device)
        self.timm = name == "timm"
        self.device, self.precision = device, precision
        self.model.train()

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            emb = self.model(self.images) if self.timm else self.model(self.images, self.keypoints)
            loss = F.cross_entropy(self.head(emb).float(), self.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def loader_rate(args: argparse.Namespace, device: torch.device, workers: int) -> float:
    """Images per second of one epoch of the training loader (see the module docstring)."""
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        records = []
        for i in range(args.loader_images):
            path = Path(folder) / f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(path)
            records.append(ImageRecord(str(path), pid=i // 4, camid=i % 2))
        transform = Transform(args.height, args.width, (0.485, 0.456, 0.406),
                              (0.229, 0.224, 0.225), train=True, flip_prob=0.5, pad=10,
                              erase_prob=0.5)
        dataset = ImageDataset(records, transform, 0, cache=False)
        sampler = PKSampler([r.pid for r in records], args.batch, 4, seed=0)
        loader = make_loader(dataset, args.batch, sampler, workers,
                             pin_memory=device.type == "cuda")
        start, images = time.perf_counter(), 0
        for batch in loader:
            images += batch["image"].to(device, non_blocking=device.type == "cuda").shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return images / (time.perf_counter() - start)


def run_steps(step: Callable[[], None], device: torch.device, steps: int) -> None:
    """Run ``steps`` steps, then wait for the device (CUDA work is asynchronous)."""
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step: Callable[[], None], device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` steps."""
    run_steps(step, device, warmup)  # untimed: caches, allocator, lazy optimizer state
    start = time.perf_counter()
    run_steps(step, device, steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="nano,small", help="comma-separated: " + ",".join(SIZES))
    parser.add_argument("--devices", default=None,
                        help="comma-separated cpu,cuda (default: cpu, and cuda when available)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated fp32,bf16")
    parser.add_argument("--models", default=",".join(MODELS_ORDER),
                        help="comma-separated rows (timm is the ratios' denominator)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    parser.add_argument("--rounds", type=int, default=1,
                        help="timed passes over all rows, order rotated each pass; > 1 reports "
                             "medians and the min-max of x timm (table's docstring)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--keypoints", type=int, default=17, help="K of KP-RPE (COCO-17 bodies)")
    parser.add_argument("--classes", type=int, default=751, help="classifier identities (Market)")
    parser.add_argument("--loader-workers", default="0,4",
                        help="comma-separated DataLoader worker counts of the loader rows ('' = none)")
    parser.add_argument("--loader-images", type=int, default=512,
                        help="JPEGs the loader rows read (one epoch)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",")
    precisions = args.precisions.split(",")
    names = args.models.split(",")
    devices = (args.devices.split(",") if args.devices
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for value, allowed, what in ((sizes, SIZES, "size"), (precisions, ("fp32", "bf16"), "precision"),
                                 (names, MODELS_ORDER, "model"), (devices, ("cpu", "cuda"), "device")):
        bad = [v for v in value if v not in allowed]
        if bad:
            parser.error(f"unknown {what} {bad}; expected {', '.join(allowed)}")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA device is available")
    if "cuda" in devices:  # one compiled FlexAttention graph per encoding x size x precision
        import torch._dynamo.config as dynamo_config

        for option in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo_config, option):
                setattr(dynamo_config, option, max(64, getattr(dynamo_config, option)))

    grid = (args.height // args.patch, args.width // args.patch)
    print(f"training step (forward, backward, AdamW), batch {args.batch}, input "
          f"{args.height}x{args.width}, patch {args.patch} ({grid[0]}x{grid[1]} grid + CLS), "
          f"{args.steps} timed steps after {args.warmup}"
          + (f", {args.rounds} rounds (medians; x timm: median (min-max) of per-round ratios)"
             if args.rounds > 1 else "") + f"; torch {torch.__version__}\n")
    print("| device | size | precision | model | images/s | x timm | peak MB |")
    print("|---|---|---|---|---:|---:|---:|")
    worker_counts = [int(w) for w in args.loader_workers.split(",") if w.strip()]
    for dev_name in devices:
        device = torch.device(dev_name)
        label = device_label(device, args.threads)
        for workers in worker_counts:
            rate = loader_rate(args, device, workers)
            print(f"| {label} | - | - | loader, {workers} workers | {rate:.1f} | - | - |", flush=True)
        for size in sizes:
            for precision in precisions:
                for name, rate, ratio, spread, peak in table(names, size, precision, args, device):
                    ratio_text = "-" if ratio is None else f"{ratio:.2f}{spread}"
                    peak_text = "-" if peak is None else f"{peak:.0f}"
                    print(f"| {label} | {size} | {precision} | {name} | {rate:.1f} | {ratio_text} | "
                          f"{peak_text} |", flush=True)


def table(names: list[str], size: str, precision: str, args: argparse.Namespace,
          device: torch.device) -> list[tuple[str, float, float | None, str, float | None]]:
    """(row, images/s, x timm, spread of x timm, peak MB) of every row of one device, size and
    precision.

    ``--rounds 1``: each row is built, warmed, timed and freed in turn. ``--rounds R`` > 1: every
    row is built and warmed first, then timed once per round, the rows' order rotated each round,
    so slow drifts of the machine's speed (other tenants, clocks) hit every row alike: images/s is
    the median over rounds, x timm the median of the per-round ratios to the timm row of the same
    round, and the spread is their min-max.
    """
    cuda = device.type == "cuda"
    rows: list[tuple[str, float, float | None, str, float | None]] = []
    if args.rounds == 1:
        base = None
        for name in names:
            step = Step(name, size, args, device, precision)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            rate = args.batch / measure(step, device, args.steps, args.warmup)
            base = rate if name == "timm" else base
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
            rows.append((name, rate, rate / base if base else None, "", peak))
            del step
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        return rows
    steps, peaks = {}, {}
    for name in names:
        held = torch.cuda.memory_allocated(device) if cuda else 0  # the rows built before it
        steps[name] = Step(name, size, args, device, precision)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        run_steps(steps[name], device, args.warmup)
        if cuda:  # the row's own peak: what it adds to the memory the other rows hold
            peaks[name] = (torch.cuda.max_memory_allocated(device) - held) / 2**20
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(args.batch / measure(steps[name], device, args.steps, 0))
    for name in names:
        ratios = ([a / b for a, b in zip(rates[name], rates["timm"])] if "timm" in rates else [])
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
        rows.append((name, statistics.median(rates[name]),
                     statistics.median(ratios) if ratios else None, spread, peaks.get(name)))
    del steps
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return rows

if __name__ == "__main__":
    main()
