"""IJB-style template features and chunked pair scoring (insightface's IJB procedure).

A template is a set of images grouped into media (video frames or a still). Its feature is
built as insightface does: features are averaged within each media, the media features are
summed over the template, and the sum is L2-normalised. Template pairs are then scored by
cosine similarity, in chunks, so millions of pairs never need a (pairs, D) buffer at once.
``evaluate_templates`` turns the image features of an IJB ``TemplateSet`` into 1:1 metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from reidbench.datasets.base import TemplateSet
from reidbench.metrics.finite import check_finite, safe_joint, safe_rows
from reidbench.metrics.verification import auc, eer, roc, tar_fields


def template_features(
    features: np.ndarray, template_ids: np.ndarray, media_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique template ids, (T, D) L2-normalised template features).

    Args:
        features: (N, D) image features (normalised or not, as the caller's protocol wants).
        template_ids: (N,) template of each image.
        media_ids: (N,) media of each image (ids may repeat across templates).

    NaN/inf features raise ReidbenchError. Features of extreme magnitude are first scaled by one
    power of two (relative weights kept) and each template's sum by its own before the norm, so
    finite features give unit templates whatever their scale.
    """
    check_finite(np.asarray(features), "template image features")
    (feats_t,) = safe_joint(np.asarray(features, dtype=np.float64), dtype=torch.float64)
    feats = feats_t.numpy()
    templates, t_index = np.unique(np.asarray(template_ids), return_inverse=True)
    # one group per (template, media) pair: mean over its images
    pairs = np.stack([t_index, np.asarray(media_ids)], axis=1)
    groups, g_index = np.unique(pairs, axis=0, return_inverse=True)
    g_index = g_index.reshape(-1)
    sums = np.zeros((len(groups), feats.shape[1]))
    np.add.at(sums, g_index, feats)
    counts = np.bincount(g_index, minlength=len(groups))[:, None]
    media_means = sums / counts
    out = np.zeros((len(templates), feats.shape[1]))
    np.add.at(out, groups[:, 0], media_means)
    out = safe_rows(out, dtype=torch.float64).numpy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return templates, (out / np.maximum(norms, 1e-12)).astype(np.float32)


def template_pair_scores(
    templates: np.ndarray, template_feats: np.ndarray, t1: np.ndarray, t2: np.ndarray,
    chunk: int = 1 << 18,
) -> np.ndarray:
    """Cosine score of each (t1[i], t2[i]) template pair, computed chunk by chunk; a template
    id missing from ``templates`` raises ValueError naming it."""
    order = np.argsort(templates)
    def lookup(ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(templates, ids, sorter=order)
        pos = order[np.clip(pos, 0, len(templates) - 1)]
        missing = templates[pos] != ids
        if missing.any():
            raise ValueError(f"template {ids[missing][0]} has no images")
        return pos
    scores = np.empty(len(t1), dtype=np.float32)
    for s in range(0, len(t1), chunk):
        a = template_feats[lookup(np.asarray(t1[s:s + chunk]))]
        b = template_feats[lookup(np.asarray(t2[s:s + chunk]))]
        scores[s:s + chunk] = np.einsum("ij,ij->i", a, b)
    return scores


def evaluate_templates(
    tset: TemplateSet,
    features: np.ndarray,
    normalize: bool = False,
    detector_weight: bool = True,
) -> dict[str, object]:
    """1:1 template verification metrics from (N, D) image features (rows as ``tset.images``).

    ``normalize`` L2-normalises image features first; ``detector_weight`` multiplies them by the
    detector score. The defaults are insightface's (``use_norm_score`` and
    ``use_detector_score`` both on: feature norms and detector scores weight the images).
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) != len(tset.images):
        raise ValueError(f"expected ({len(tset.images)}, D) features, got {feats.shape}")
    if normalize:
        feats = safe_rows(feats, torch.float64).numpy()  # power-of-two scaled: no overflow
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if detector_weight:
        feats = feats * tset.detector_scores[:, None]
    templates, tfeats = template_features(feats, tset.template_ids, tset.media_ids)
    scores = template_pair_scores(templates, tfeats, tset.template_pairs[:, 0], tset.template_pairs[:, 1])
    labels = tset.labels.astype(np.int64)
    fpr, tpr, _ = roc(scores, labels)
    return {
        "auc": auc(fpr, tpr),
        "eer": eer(fpr, tpr),
        **tar_fields(scores, labels),  # strict tar_at_far and insightface's tar_at_far_nearest
        "num_pairs": int(len(labels)),
        "num_genuine": int(labels.sum()),
        "num_templates": int(len(templates)),
    }
