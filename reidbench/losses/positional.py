"""Positional losses: images of one identity should share the positional relations between
their most important patches.

For each image the N patches whose final tokens are most similar (cosine) to the CLS token are
ranked; for every pair (a, b) of them, a before b in rank order, the model gives

    R_ab = P_abs_a . P_abs_b + P_rel_ab

(``VisionTransformer.pair_relations``): P_abs is the patch's absolute position embedding and
P_rel the relative-position bias the attention adds to the logit of query a and key b, averaged
over heads and over all blocks (``loss.rp_layers=()``), or one relation per listed block. The
N (N - 1) / 2 relations of an image form its relation vector.

- ``rp_triplet``: batch-hard triplet (``loss.rp_margin``; 0 = soft margin) on the vectors.
- ``jsd``: softmax(R / ``loss.jsd_temperature``) per block, then the mean Jensen-Shannon
  divergence over anchor-positive pairs; no negatives.

Which encodings have which term (a term an encoding lacks is 0; a model with neither is a
ConfigError):

=========================================  ===================  ==========================
model                                      P_abs                P_rel
=========================================  ===================  ==========================
ape (learned / sincos)                     yes                  no
rpe (Shaw)                                 yes (model.ape)      no: s q_a . a_ab depends on the query
irpe, mode=contextual (the default)        yes (model.ape)      no: depends on queries/keys
irpe, mode=bias                            yes (model.ape)      yes: t[bucket(a, b)]
kprpe                                      yes (model.ape)      yes: keypoint-dependent table
poster, osnet, resnet50                    no                   no (ConfigError)
=========================================  ===================  ==========================

with ``model.ape=none`` removing P_abs. Only content-independent biases count as P_rel: a
contextual term is a function of the image's queries, not a learned relation of the offset.
The patch choice carries no gradient; the losses train the position parameters only (the
learned absolute table and the relative bias tables), and through them the attention.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

import reidbench.losses.functional as LF
from reidbench.config import LossConfig
from reidbench.errors import ConfigError
from reidbench.losses.modules import TrainOutputs
from reidbench.registry import LOSSES

log = logging.getLogger(__name__)


class PositionalLoss(nn.Module):
    """Shared part of the positional losses: relation vectors of the top-N patches.

    Args:
        name: the term's config name (error messages).
        topn: N patches per image (>= 2).
        layers: blocks whose bias is used separately; () averages over all blocks.
    """

    needs_tokens = True

    def __init__(self, name: str, topn: int, layers: tuple[int, ...]) -> None:
        super().__init__()
        if topn < 2:
            raise ConfigError(f"loss.rp_topn must be at least 2 for pairs of patches, got {topn}")
        self.name, self.topn, self.layers = name, topn, tuple(layers)
        self._last: dict[str, float] = {}

    def check_model(self, model: nn.Module) -> None:
        """ConfigError unless ``model`` (an ``EmbeddingModel``) has positional relations."""
        backbone = getattr(model, "backbone", model)
        terms = getattr(backbone, "position_terms", None)
        if terms is None or not hasattr(backbone, "pair_relations"):
            raise ConfigError(
                f"loss term {self.name!r} needs a ViT with absolute position embeddings and/or a "
                f"per-pair relative bias (ape, rpe, irpe, kprpe); {type(backbone).__name__} has none"
            )
        has_abs, has_rel = terms()
        if not has_abs and not has_rel:
            raise ConfigError(
                f"loss term {self.name!r}: this model has no absolute position embeddings "
                "(model.ape=none) and no content-independent relative bias (Shaw RPE and contextual "
                "iRPE terms depend on the queries; use model.rel.mode=bias, kprpe or model.ape=learned)"
            )
        patches = backbone.grid[0] * backbone.grid[1]
        if self.topn > patches:
            raise ConfigError(f"loss.rp_topn={self.topn} exceeds the {patches} patches of the model")
        if self.layers and has_rel:
            backbone.resolve_layers(self.layers)
        log.info(
            "%s: relations from %s (top %d patches, %s)",
            self.name,
            " + ".join(t for t, on in (("P_abs", has_abs), ("P_rel", has_rel)) if on),
            self.topn,
            f"blocks {list(self.layers)}" if self.layers else "bias averaged over blocks",
        )

    def vectors(self, out: TrainOutputs) -> torch.Tensor:
        """(B, L, N (N - 1) / 2) relation vectors of the batch."""
        if out.tokens is None or out.relations is None:
            raise ConfigError(
                f"loss term {self.name!r} needs the model's tokens and relations in "
                "TrainOutputs (the trainer fills them for terms with needs_tokens)"
            )
        index = LF.top_patches(out.tokens, self.topn, out.num_prefix_tokens)  # (B, N)
        vectors = LF.relation_vectors(out.relations(index, self.layers or None))
        self._last = relation_statistics(vectors, out.pids, self.name)
        return vectors

    def diagnostics(self) -> dict[str, float]:
        """Statistics of the last batch's relation vectors (``relation_statistics``); the trainer
        records their epoch means in history.jsonl beside the loss terms."""
        return dict(self._last)

    def extra_repr(self) -> str:
        return f"topn={self.topn}, layers={list(self.layers) or 'mean'}"


class RelativePositionTriplet(PositionalLoss):
    """Batch-hard triplet loss on the relation vectors (all blocks' relations concatenated)."""

    def __init__(self, name: str, topn: int, layers: tuple[int, ...], margin: float) -> None:
        super().__init__(name, topn, layers)
        self.margin = margin

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.batch_hard_triplet(self.vectors(out).flatten(1), out.pids, self.margin)


class PositionalJSD(PositionalLoss):
    """Mean Jensen-Shannon divergence between anchor and positive relation distributions."""

    def __init__(self, name: str, topn: int, layers: tuple[int, ...], temperature: float) -> None:
        super().__init__(name, topn, layers)
        if temperature <= 0:
            raise ConfigError(f"loss.jsd_temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, out: TrainOutputs) -> torch.Tensor:
        return LF.positional_jsd(self.vectors(out), out.pids, self.temperature)


@torch.no_grad()
def relation_statistics(vectors: torch.Tensor, pids: torch.Tensor, prefix: str) -> dict[str, float]:
    """How large the relation vectors (B, L, M) are and how far apart: ``<prefix>_rel_norm``, the
    mean L2 norm of an image's vector; ``<prefix>_d_pos`` / ``<prefix>_d_neg``, the mean Euclidean
    distance between the vectors of two images of one identity / of two identities (0 if none)."""
    flat = vectors.flatten(1).float()
    dist = LF.pairwise_euclidean(flat, flat)
    same = pids[:, None] == pids[None, :]
    pos = same & ~torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    return {
        f"{prefix}_rel_norm": float(flat.norm(dim=1).mean()),
        f"{prefix}_d_pos": float(dist[pos].mean()) if pos.any() else 0.0,
        f"{prefix}_d_neg": float(dist[~same].mean()) if (~same).any() else 0.0,
    }


@LOSSES.register("rp_triplet")
def _rp_triplet(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return RelativePositionTriplet("rp_triplet", cfg.rp_topn, cfg.rp_layers, cfg.rp_margin)


@LOSSES.register("jsd")
def _jsd(cfg: LossConfig, dim: int, num_classes: int) -> nn.Module:
    return PositionalJSD("jsd", cfg.rp_topn, cfg.rp_layers, cfg.jsd_temperature)
