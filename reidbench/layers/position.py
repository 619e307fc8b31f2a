"""The interface a relative position encoding implements to be injected into attention.

A ViT is built with an optional absolute embedding (added to tokens once) and an optional
``RelativePosition`` per block (adding a bias, or a query/key-dependent term, to the attention
logits, and optionally a term to the output). Everything an encoding needs beyond q/k/v travels
in an ``AttentionContext`` built once per forward pass: the patch grid, the number of prefix
(CLS) tokens and the batch's keypoints.
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
