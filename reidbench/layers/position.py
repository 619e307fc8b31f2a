"""The interface a relative position encoding implements to be injected into attention.

A ViT is built with an optional absolute embedding (added to tokens once) and an optional
``RelativePosition`` per block (rotating the queries and keys, adding a bias or a query/key-
dependent term to the attention logits, and optionally a term to the output). Everything an
encoding needs beyond q/k/v travels in an ``AttentionContext`` built once per forward pass: the
patch grid, the number of prefix (CLS) tokens and the batch's keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reidbench.layers.bucket_attention import BucketTerm


@dataclass(frozen=True)
class AttentionContext:
    grid: tuple[int, int]  # (rows, cols) of the patch grid
    num_prefix_tokens: int  # tokens before the patches (CLS)
    keypoints: torch.Tensor | None = None  # (B, K, 2) in [0, 1], or None


class RelativePosition(nn.Module):
    """Base class: contributes nothing. Subclasses override the hooks they need.

    Encodings whose logits term is a gather from small per-query bucket tables implement
    ``bucket_terms``; attention then runs the blocked ``bucket_attention`` and never stores the
    (B, H, T, T) bias. ``logits_bias`` is the explicit form, used when probabilities are needed
    anyway (``needs_probabilities``) and by encodings without a bucket form.
    """

    def bucket_terms(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> list[BucketTerm] | None:
        """The logits term as bucket tables (see ``layers.bucket_attention``), or None."""
        return None

    def rotate(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys as attention sees them, (B, H, T, d) each: unchanged here; rotary
        encodings (``layers.rope``) rotate them. Applied on the paths without bucket terms, so
        an encoding that rotates returns no ``bucket_terms``; with no bias either, attention
        runs PyTorch's fused scaled-dot-product kernel on the rotated q and k."""
        return q, k

    def logits_bias(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> torch.Tensor | None:
        """Term added to the (B, H, T, T) attention logits, or None. q, k: (B, H, T, d)."""
        return None

    def output_term(
        self, attn: torch.Tensor, ctx: AttentionContext
    ) -> torch.Tensor | None:
        """Term added to attn @ v, (B, H, T, d), from the (B, H, T, T) probabilities, or None."""
        return None

    @property
    def needs_probabilities(self) -> bool:
        """True when ``output_term`` is used, so attention must materialise its probabilities."""
        return False

    @property
    def has_pair_bias(self) -> bool:
        """True when the logits term is a learned bias per token pair that does not depend on
        the queries or keys (so ``pair_bias`` returns a tensor); False for contextual terms."""
        return False

    def pair_bias(self, ctx: AttentionContext, index: torch.Tensor) -> torch.Tensor | None:
        """The content-independent logits bias between chosen patches, averaged over heads.

        Args:
            ctx: the forward pass's context (grid, prefix tokens, keypoints or None).
            index: (B, n) int64 patch indices in [0, rows * cols) (prefix tokens excluded).

        Returns:
            (B|1, n, n) with ``out[b, i, j]`` = mean over heads of the bias this encoding adds
            to the logit of query patch ``index[b, i]`` and key patch ``index[b, j]``, or None
            when the encoding has no such bias (``has_pair_bias`` is False).
        """
        return None


def patch_pair_ids(ids: torch.Tensor, num_prefix_tokens: int, index: torch.Tensor) -> torch.Tensor:
    """Bucket ids of chosen patch pairs: ids (T, T) over all tokens, index (B, n) patch indices
    -> (B, n, n) with ``out[b, i, j] = ids[prefix + index[b, i], prefix + index[b, j]]``."""
    if index.ndim != 2:
        raise ValueError(f"patch index must be (B, n), got shape {tuple(index.shape)}")
    n = ids.shape[0] - num_prefix_tokens
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ValueError(f"patch index out of range [0, {n})")
    rows = index + num_prefix_tokens
    return ids[rows[:, :, None], rows[:, None, :]]
