"""Keypoint sensitivity: does a trained model read its keypoints at all?

Only the keypoints are jittered (the ``kpnoise`` perturbation of ``data.perturb``: Gaussian
noise of std 2 ... 10 % of the image size per coordinate at severities 1 ... 5, image
untouched, the same seeded draws as the robustness sweep), and two things are measured per
severity:

- the embedding change: the mean over images of ``1 - cos(e_clean, e_noisy)``, computed as
  ``||u - v||^2 / 2`` of the unit embeddings in float64. For unit vectors the two are equal, but
  this form has no cancellation, so a change of 1e-9 is measured as such (``1 - cos`` in float32
  cannot resolve anything below about 1e-7), and identical embeddings give exactly 0;
- the task's metrics under that noise (the robustness sweep's cell, e.g. mAP or 10-fold
  accuracy), beside the clean ones.

A model that ignores its keypoints (APE, iRPE, a KP-RPE whose keypoint map is zero, or whose
trained map is unreachable: see ``models.vit`` on the CLS head) scores exactly 0. The images are
those of the sweep's perturbed side: the re-ID queries, or the second image of every pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from reidbench.data.perturb import KPNOISE_LEVELS, build_perturbation
from reidbench.errors import ConfigError
from reidbench.evaluation.robustness import Extractor, ImageStore, PerturbedDataset, SweepSpec, SweepTask

log = logging.getLogger(__name__)

PERTURBATION = "kpnoise"


@dataclass(frozen=True)
class SensitivityRow:
    """One severity of one model."""

    severity: int
    sigma: float  # keypoint noise std, fraction of the image size
    embedding_change: float  # mean over images of 1 - cos(clean, noisy embedding)
    embedding_change_max: float  # the largest over images
    num_images: int
    clean: dict[str, float | None]  # the task's metrics without noise
    noisy: dict[str, float | None]  # the same metrics under this noise

    def as_dict(self) -> dict[str, object]:
        return {"severity": self.severity, "sigma": self.sigma,
                "embedding_change": self.embedding_change,
                "embedding_change_max": self.embedding_change_max, "num_images": self.num_images,
                "clean": self.clean, "noisy": self.noisy}


def cosine_change(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Per row, ``1 - cos(clean_i, noisy_i)`` computed as ``||u - v||^2 / 2`` of the unit
    vectors in float64 (exact 0 for identical rows; no cancellation for tiny changes).

    Args:
        clean, noisy: (N, D) embeddings, rows non-zero.
    Returns:
        (N,) float64 in [0, 2].
    """
    a, b = clean.astype(np.float64), noisy.astype(np.float64)
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    v = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 0.5 * np.square(u - v).sum(axis=1)


def embedding_change(
    extractor: Extractor, store: ImageStore, num_keypoints: int, severity: int, *, seed: int = 0,
    stream: str = "query", indices: np.ndarray | None = None,
    flip_perm: tuple[int, ...] | None = None, clean: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) ``1 - cos`` between each image's clean embedding (``clean``, else extracted) and
    its embedding with keypoint noise of ``severity`` (draws of ``perturb.sample_rng(seed,
    "kpnoise", stream, index)``)."""
    if num_keypoints < 1:
        raise ConfigError("keypoint sensitivity needs a dataset with keypoints")
    tf = extractor.transform
    if clean is None:
        clean = extractor(PerturbedDataset(store, tf, num_keypoints, indices=indices), flip_perm).feats
    noise = build_perturbation(PERTURBATION)
    noisy = extractor(PerturbedDataset(store, tf, num_keypoints, noise, severity, seed, stream,
                                       indices=indices), flip_perm).feats
    return cosine_change(clean, noisy)


def sensitivity_images(task: SweepTask) -> tuple[ImageStore, str, np.ndarray | None]:
    """The images the sweep perturbs: (store, stream, indices or None for all)."""
    stores = task.stores  # type: ignore[attr-defined]
    if "query" in stores:
        return stores["query"], "query", None
    pairs = np.asarray(task.pairs.pairs, np.int64)  # type: ignore[attr-defined]
    return stores["images"], "pairs", np.unique(pairs[:, 1])


def kp_sensitivity(
    extractor: Extractor, task: SweepTask, severities: tuple[int, ...] = (1, 2, 3, 4, 5), *,
    seed: int = 0, metric: str = "cosine", max_rank: int = 50, with_metrics: bool = True,
) -> list[SensitivityRow]:
    """One ``SensitivityRow`` per severity > 0 of ``severities``: the embedding change on the
    sweep's perturbed images and (``with_metrics``) the task's metrics under the noise."""
    if task.num_keypoints < 1:
        raise ConfigError(f"{task.name} has no keypoints: keypoint sensitivity does not apply")
    store, stream, indices = sensitivity_images(task)
    perm = getattr(task, "flip_perm", None)
    levels = tuple(s for s in severities if s > 0)
    evaluate = None
    clean: dict[str, float | None] = {}
    if with_metrics:
        spec = SweepSpec((PERTURBATION,), (0, *levels), "query", seed)
        evaluate = task.sweep_cells(extractor, spec, metric, max_rank)
        clean = dict(evaluate(None, 0).values)
    rows = []
    noise = build_perturbation(PERTURBATION)
    feats = extractor(PerturbedDataset(store, extractor.transform, task.num_keypoints,
                                       indices=indices), perm).feats
    for severity in levels:
        change = embedding_change(extractor, store, task.num_keypoints, severity, seed=seed,
                                  stream=stream, indices=indices, flip_perm=perm, clean=feats)
        noisy = dict(evaluate(noise, severity).values) if evaluate is not None else {}
        rows.append(SensitivityRow(severity, KPNOISE_LEVELS[severity], float(change.mean()),
                                   float(change.max()), len(change), clean, noisy))
        log.info("kpnoise severity %d: mean 1-cos %.3g (max %.3g) over %d images", severity,
                 rows[-1].embedding_change, rows[-1].embedding_change_max, len(change))
    return rows
