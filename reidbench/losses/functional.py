"""Loss functions as pure tensor functions; the modules in this package wrap them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) Euclidean distances, with a floor so sqrt has a gradient."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min(1e-12).sqrt()


def anchor_masks(pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, B) positives (same pid, not itself), (B, B) negatives, and (B,) anchors having both."""
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
    pos_mask, neg_mask = same & ~eye, ~same
    return pos_mask, neg_mask, pos_mask.any(1) & neg_mask.any(1)


def batch_hard_triplet(
    feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., 2017) on (B, D) features.

    For each anchor: its farthest positive and nearest negative in the batch.
    ``margin > 0``: mean(relu(d_ap - d_an + margin)); ``margin == 0``: the soft-margin form
    mean(softplus(d_ap - d_an)). Anchors without a positive or a negative are left out.
    """
    dist = pairwise_euclidean(feats, feats)  # (B, B)
    pos_mask, neg_mask, usable = anchor_masks(pids)
    if not usable.any():
        return feats.sum() * 0.0
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).amax(1)[usable]
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(1)[usable]
    if margin > 0:
        return F.relu(d_ap - d_an + margin).mean()
    return F.softplus(d_ap - d_an).mean()


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy with label smoothing (Szegedy et al., 2016)."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


# --- cosine-margin classifiers (face recognition) -------------------------------------------


def cosface_logits(
    cosine: torch.Tensor, labels: torch.Tensor, margin: float = 0.35, scale: float = 64.0
) -> torch.Tensor:
    """CosFace / large-margin cosine logits (Wang et al., CVPR 2018).

    cosine (B, C) between normalised features and class weights -> (B, C) logits
    s * (cos(theta_j) - m * [j == y]).
    """
    return scale * (cosine - margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype))


def arcface_logits(
    cosine: torch.Tensor, labels: torch.Tensor, margin: float = 0.5, scale: float = 64.0
) -> torch.Tensor:
    """ArcFace additive angular margin logits (Deng et al., CVPR 2019).

    cosine (B, C) -> (B, C) logits: s * cos(theta_y + m) for the target class and s * cos(theta_j)
    for the others. Where theta_y + m would pass pi (cos(theta + m) stops decreasing there), the
    target uses cos(theta_y) - (1 - cos m) instead, the CosFace-style continuation that meets
    cos(theta_y + m) = -1 at theta_y = pi - m, so the target logit keeps decreasing with theta_y.
    cos(theta + m) is expanded as cos theta cos m - sin theta sin m, so no arccos is taken.
    """
    target = cosine.gather(1, labels[:, None])  # (B, 1)
    sine = (1.0 - target.square()).clamp_min(1e-12).sqrt()
    shifted = target * math.cos(margin) - sine * math.sin(margin)
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    target_logit = torch.where(target >= -math.cos(margin), shifted, target - (1.0 - math.cos(margin)))
    return scale * cosine.scatter(1, labels[:, None], target_logit)


def adaface_quality(
    norms: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float, h: float = 0.333,
    eps: float = 1e-3,
) -> torch.Tensor:
    """AdaFace's normalised feature norm (Kim et al., CVPR 2022): clip((|z| - mu) / (sigma + eps) * h,
    -1, 1), a per-sample image-quality proxy (high norm = easy, high quality). No gradient."""
    return ((norms.detach() - mean) / (std + eps) * h).clamp(-1.0, 1.0)


def adaface_logits(
    cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor, margin: float = 0.4,
    scale: float = 64.0, eps: float = 1e-3,
) -> torch.Tensor:
    """AdaFace adaptive-margin logits (Kim et al., CVPR 2022).

    With q the normalised norm of each sample in [-1, 1] (``adaface_quality``), the target logit
    is s * (cos(clip(theta_y - m q, eps, pi - eps)) - (m + m q)); the others are s * cos(theta_j).
    q = -1 gives ArcFace's angular margin, q = 0 CosFace's additive margin, q = 1 a negative
    angular plus a doubled additive margin. cosine (B, C), labels (B,), quality (B,) -> (B, C).
    """
    cosine = cosine.clamp(-1.0 + eps, 1.0 - eps)
    q = quality[:, None].to(cosine.dtype)  # (B, 1)
    theta = cosine.gather(1, labels[:, None]).acos()
    theta_m = (theta - margin * q).clamp(eps, math.pi - eps)
    target_logit = theta_m.cos() - (margin + margin * q)
    return scale * cosine.scatter(1, labels[:, None], target_logit)


# --- pair losses on embeddings ----------------------------------------------------------------


def circle_loss(
    feats: torch.Tensor, pids: torch.Tensor, margin: float = 0.25, gamma: float = 128.0
) -> torch.Tensor:
    """Circle loss, pair-wise form (Sun et al., CVPR 2020), on cosine similarities of (B, D) features.

    For each anchor with positive similarities s_p and negative similarities s_n:
    log(1 + sum_n exp(gamma a_n (s_n - m)) * sum_p exp(-gamma a_p (s_p - 1 + m))) with the
    self-paced weights a_p = relu(1 + m - s_p), a_n = relu(s_n + m) treated as constants.
    Mean over anchors with at least one positive and one negative.
    """
    z = F.normalize(feats, dim=1)
    sim = z @ z.T  # (B, B)
    pos_mask, neg_mask, usable = anchor_masks(pids)
    if not usable.any():
        return feats.sum() * 0.0
    a_p = (1.0 + margin - sim).clamp_min(0.0).detach()
    a_n = (sim + margin).clamp_min(0.0).detach()
    logit_p = (-gamma * a_p * (sim - (1.0 - margin))).masked_fill(~pos_mask, float("-inf"))
    logit_n = (gamma * a_n * (sim - margin)).masked_fill(~neg_mask, float("-inf"))
    per_anchor = F.softplus(logit_p.logsumexp(1) + logit_n.logsumexp(1))
    return per_anchor[usable].mean()


def supcon_loss(feats: torch.Tensor, pids: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, the L_out form) on (B, D) features.

    For anchor i with positives P(i) (same identity, not i):
    -1/|P(i)| sum_{p in P(i)} log(exp(z_i . z_p / t) / sum_{a != i} exp(z_i . z_a / t)),
    z the L2-normalised features; mean over anchors with at least one positive.
    """
    z = F.normalize(feats, dim=1)
    eye = torch.eye(len(pids), dtype=torch.bool, device=feats.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))  # self excluded
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    pos_mask = (pids[:, None] == pids[None, :]) & ~eye
    count = pos_mask.sum(1)
    usable = count > 0
    if not usable.any():
        return feats.sum() * 0.0
    per_anchor = -log_prob.masked_fill(~pos_mask, 0.0).sum(1)[usable] / count[usable]
    return per_anchor.mean()


# --- positional relations (relative-position triplet and JSD) ------------------------------


def top_patches(tokens: torch.Tensor, n: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Indices of the n patches most similar to the CLS token, most similar first.

    tokens (B, prefix + N, D), CLS at 0 -> (B, n) int64 patch indices in [0, N), by descending
    cosine similarity between each patch token and the CLS token. The choice carries no gradient.
    """
    patches = tokens[:, num_prefix_tokens:].detach()
    if not 1 <= n <= patches.shape[1]:
        raise ValueError(f"cannot take the top {n} of {patches.shape[1]} patches")
    sim = F.cosine_similarity(patches, tokens[:, :1].detach(), dim=-1)  # (B, N)
    return sim.topk(n, dim=1, sorted=True).indices


def relation_vectors(relations: torch.Tensor) -> torch.Tensor:
    """(B, L, n, n) relations R between ranked patches -> (B, L, n (n - 1) / 2), the entries
    R[rank i, rank j] for i < j in row-major order (one per unordered pair, ranks kept in order)."""
    n = relations.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=relations.device)
    return relations[..., i, j]


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between distributions over the last dim, in nats.

    JSD(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q) / 2; symmetric, 0 iff P = Q, at most
    ln 2 (reached for disjoint supports). 0 log 0 = 0. p, q (..., M) -> (...).
    """
    m = 0.5 * (p + q)
    kl_p = torch.xlogy(p, p) - torch.xlogy(p, m)
    kl_q = torch.xlogy(q, q) - torch.xlogy(q, m)
    return 0.5 * (kl_p + kl_q).sum(-1)


def js_divergence_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """JSD between softmax(a) and softmax(b) over the last dim, from log-probabilities (stable
    for large logits). a, b (..., M) -> (...)."""
    log_p, log_q = a.log_softmax(-1), b.log_softmax(-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_p + kl_q)).clamp(0.0, math.log(2.0))  # rounding can step outside [0, ln 2]


def positional_jsd(vectors: torch.Tensor, pids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean JSD between the relation distributions of every anchor-positive pair.

    vectors (B, L, M) relation vectors; each layer's M relations become softmax(R / temperature)
    and the JSD is averaged over layers and over ordered pairs (a, p), a != p, of one identity.
    No negatives: only images of one identity are pulled together.
    """
    b = len(pids)
    pos = (pids[:, None] == pids[None, :]) & ~torch.eye(b, dtype=torch.bool, device=pids.device)
    a, p = pos.nonzero(as_tuple=True)
    if len(a) == 0:
        return vectors.sum() * 0.0
    logits = vectors / temperature
    return js_divergence_logits(logits[a], logits[p]).mean()
