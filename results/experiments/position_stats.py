"""Positional statistics of trained runs, from their final checkpoints -> position_stats.json.

Usage: python3 results/experiments/position_stats.py [results/experiments/runs]

For every run with a checkpoint.pt: the mean L2 norm of the absolute patch embeddings, the RMS
of the KP-RPE map (weight and bias), and the relation statistics of ``rp_triplet``/``jsd``
(``reidbench.losses.positional.relation_statistics``: top 8 patches, bias averaged over blocks)
on 4 P x K batches of training images (sampler seed 0, no augmentation), so that runs trained
without a positional loss are measured the same way. Checkpoints are not committed; the JSON is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from reidbench.config import RunConfig
from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.data.sampler import PKSampler
from reidbench.datasets.catalog import build_dataset
from reidbench.engine.checkpoint import model_weights, read_checkpoint
from reidbench.engine.trainer import eval_transform, keypoint_count
from reidbench.losses.functional import relation_vectors, top_patches
from reidbench.losses.positional import relation_statistics
from reidbench.models import build_model
from reidbench.reporting.records import read_run_config

BATCHES, TOPN = 4, 8


@torch.no_grad()
def stats(run: Path) -> dict[str, Any]:
    cfg: RunConfig = read_run_config(run / "config.yaml")
    split = build_dataset(cfg.data)
    model = build_model(cfg.model, (cfg.data.height, cfg.data.width), keypoint_count(split))
    model.load_state_dict(model_weights(read_checkpoint(run / "checkpoint.pt"), run / "checkpoint.pt"))
    model.eval()
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


def main(root: Path) -> None:
    result = {run.name: stats(run) for run in sorted(root.iterdir()) if (run / "checkpoint.pt").is_file()}
    target = root.parent / "position_stats.json"
    previous = json.loads(target.read_text()) if target.is_file() else {}
    target.write_text(json.dumps({**previous, **result}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/experiments/runs"))
