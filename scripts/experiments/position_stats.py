"""Positional statistics of trained runs, from their final checkpoints -> position_stats.json.

Usage: python3 scripts/experiments/position_stats.py [results/experiments/runs]

For every run with a checkpoint.pt: the mean L2 norm of the absolute patch embeddings, the RMS
of the KP-RPE map (weight and bias), and the relation statistics of ``rp_triplet``/``jsd``
(``reidbench.losses.positional.relation_statistics``: top 8 patches, bias averaged over blocks)
on 4 P x K batches of training images (sampler seed 0, no augmentation), so that runs trained
without a positional loss are measured the same way. The JSON goes beside the runs folder
(``results/experiments/position_stats.json``); checkpoints are not committed, the JSON is.
Models come back through the records API (``engine.sources``: the recorded config, the
checkpoint read safely).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.data.sampler import PKSampler
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.sources import load_model, source_from_run
from reidbench.engine.trainer import eval_transform, keypoint_count
from reidbench.fileio import atomic_write_text
from reidbench.losses.functional import relation_vectors, top_patches
from reidbench.losses.positional import relation_statistics
from reidbench.reporting.records import list_runs

BATCHES, TOPN = 4, 8


@torch.no_grad()
def stats(run: Path) -> dict[str, Any]:
    source = source_from_run(run)
    cfg = source.cfg
    split = build_dataset(cfg.data)
    model = load_model(source, keypoint_count(split), torch.device("cpu"))
    backbone = model.backbone
    out: dict[str, Any] = {"abs_norm": float(backbone.pos_embed.patch_embeddings().norm(dim=1).mean())}
    if hasattr(backbone, "kprpe"):
        out["kprpe_weight_rms"] = float(backbone.kprpe.weight.pow(2).mean().sqrt())
        out["kprpe_bias_rms"] = float(backbone.kprpe.bias.pow(2).mean().sqrt())
    dataset = ImageDataset(split.train, eval_transform(cfg), keypoint_count(split))
    sampler = PKSampler([r.pid for r in split.train], 64, 4, seed=0)
    sums: dict[str, float] = {}
    for i, batch in enumerate(make_loader(dataset, 64, sampler)):
        if i == BATCHES:
            break
        kps = batch_keypoints(batch, torch.device("cpu"))
        tokens = backbone.forward_tokens(batch["image"], kps)
        vectors = relation_vectors(backbone.pair_relations(top_patches(tokens, TOPN), kps))
        for key, value in relation_statistics(vectors, batch["pid"], f"top{TOPN}").items():
            sums[key] = sums.get(key, 0.0) + value / BATCHES
    return {**out, **sums}


def main(root: Path) -> Path:
    """Measure every run under ``root`` that has its checkpoint; merge into the JSON beside it."""
    result = {run.name: stats(run) for run in list_runs(root) if (run / CHECKPOINT).is_file()}
    target = root.parent / "position_stats.json"
    previous = json.loads(target.read_text()) if target.is_file() else {}
    atomic_write_text(target, json.dumps({**previous, **result}, indent=2, sort_keys=True) + "\n")
    return target


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/experiments/runs"))
