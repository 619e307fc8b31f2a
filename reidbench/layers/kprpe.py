"""KP-RPE: keypoint relative position encoding (Kim et al., "KeyPoint Relative Position Encoding
for Face Recognition", CVPR 2024).

iRPE's product method gives every pair of patches (i, j) a bucket ``bucket(i, j)`` from their
row/column offset; a static table then adds ``table[h, bucket(i, j)]`` to the attention logits.
KP-RPE makes that table depend on where the face (or body) is: for each query patch i, the
offsets from the patch centre to the K keypoints go through one linear map whose output is a
full bucket table per layer and head, and the pair (i, j) reads ``table[b, l, h, i, bucket(i, j)]``.
When image and keypoints move together, the table moves with them, so attention follows the
keypoints rather than the absolute grid.

Conventions:

- Offsets. Patch n = r * cols + c (row-major) has centre ((c + 0.5) / cols, (r + 0.5) / rows) in
  the same normalised (x, y) image coordinates as the keypoints. Its offset to keypoint k is
  ``centre(n) - keypoint(k)`` (x first, then y), and the (B, N, 2K) offsets are ordered
  ``[dx_0, dy_0, dx_1, dy_1, ...]`` (keypoint-major, as CVLface does).
- Map. One linear map 2K -> depth * H * nb (nb = 49 product buckets at ratio 1.9), weight AND
  bias zero-initialised; its output is read as (B, N, depth, H, nb). Each block uses its
  (2K -> H * nb) slice as a linear bucket term of ``bucket_attention``: the (B, H, T, nb) table
  is recomputed per chunk inside the attention and never stored. The map is two raw
  parameters (``weight``, ``bias``) rather than an ``nn.Linear``, so that a model-wide
  ``apply(init_fn)`` over ``nn.Linear`` modules cannot overwrite the zero initialisation.
- Prefix (CLS) tokens. Every pair involving a prefix token uses the extra "skip" bucket, whose
  value is a learned per-layer, per-head scalar ``prefix_bias[l, h]`` (zero-initialised) and does
  not depend on the keypoints. CVLface's KP-RPE ViT has no CLS token (skip = 0), so this follows
  iRPE's bias mode for the skip bucket.
- Fallback without keypoints (``ctx.keypoints is None``): the keypoint-dependent part is dropped
  and the table is the linear map's bias alone, i.e. ``bias[l, h, bucket(i, j)]``. This is exactly
  what zero offsets give and is a static iRPE product bias per layer and head, so a model trained
  with keypoints degrades gracefully to plain iRPE-product attention.
- Per-sample fallback: in a (B, K, 2) keypoint tensor, a sample whose row holds a non-finite
  value (the loader writes an all-NaN row for an image without keypoints) gets exactly the
  fallback's zero offsets; the other samples use their keypoints. No NaN reaches the logits.

Sharing: ``KeypointRPE`` owns the parameters; ``KPRPEBlockTerm`` is a thin per-block
``RelativePosition`` view that holds an *unregistered* reference to it (so the parameters appear
once in ``state_dict``: the ViT must register the ``KeypointRPE`` itself, see
``kprpe_factory``). Nothing is kept between forward passes. ``nn.DataParallel`` is not supported
(replicas would share the original's reference); DDP is.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from reidbench.layers.bucket_attention import BucketTerm, explicit_bias
from reidbench.layers.position import AttentionContext, RelativePosition, patch_pair_ids
from reidbench.layers.rel_index import bucket_ids, num_buckets

METHOD = "product"
MAPPING = "piecewise"


@lru_cache(maxsize=32)
def patch_centres(grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N, 2) centres (x, y) = ((c + 0.5) / cols, (r + 0.5) / rows) of the row-major patches.

    Cached per (grid, device, dtype); do not modify the result.
    """
    rows, cols = grid
    ys = (torch.arange(rows, dtype=torch.float64) + 0.5) / rows
    xs = (torch.arange(cols, dtype=torch.float64) + 0.5) / cols
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (rows, cols)
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1).to(device=device, dtype=dtype)


def keypoint_offsets(keypoints: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Offsets from every patch centre to every keypoint.

    Args:
        keypoints: (B, K, 2) keypoints (x, y) normalised to [0, 1] in the image.
        grid: (rows, cols) of the patch grid.

    Returns:
        (B, N, 2K) with ``out[b, n, 2k:2k + 2] = centre(n) - keypoints[b, k]`` (x, y), N = rows * cols.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (B, K, 2), got {tuple(keypoints.shape)}")
    centres = patch_centres(tuple(grid), keypoints.device, keypoints.dtype)  # (N, 2)
    diff = centres[None, :, None, :] - keypoints[:, None, :, :]  # (B, N, K, 2)
    return diff.flatten(2)


class KeypointRPE(nn.Module):
    """Shared keypoint -> bucket-table map of KP-RPE for all blocks of one ViT.

    Args:
        num_keypoints: K, keypoints per image.
        depth: number of transformer blocks (one table per block).
        num_heads: attention heads per block.
        ratio: iRPE piecewise ratio (alpha:beta:gamma = 1:2:8 times it); 1.9 gives 49 buckets.

    Parameters (all zero-initialised, so a fresh module adds exactly zero to the logits):
        weight: (depth * H * nb, 2K) and bias: (depth * H * nb,) of the linear map, output read
            as (depth, H, nb).
        prefix_bias: (depth, H) value of the skip bucket (pairs with a prefix/CLS token).
    """

    def __init__(self, num_keypoints: int, depth: int, num_heads: int, ratio: float = 1.9) -> None:
        super().__init__()
        if num_keypoints < 1 or depth < 1 or num_heads < 1:
            raise ValueError(
                f"num_keypoints, depth and num_heads must be >= 1, got {num_keypoints}, {depth}, {num_heads}"
            )
        self.num_keypoints, self.depth, self.num_heads = num_keypoints, depth, num_heads
        self.ratio = float(ratio)
        self.num_buckets = num_buckets(METHOD, self.ratio)  # patch buckets, skip excluded
        out = depth * num_heads * self.num_buckets
        self.weight = nn.Parameter(torch.zeros(out, 2 * num_keypoints))
        self.bias = nn.Parameter(torch.zeros(out))
        self.prefix_bias = nn.Parameter(torch.zeros(depth, num_heads))

    def reset_parameters(self) -> None:
        """Zero every parameter (the published initialisation)."""
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()
            self.prefix_bias.zero_()

    def extra_repr(self) -> str:
        return (
            f"num_keypoints={self.num_keypoints}, depth={self.depth}, num_heads={self.num_heads}, "
            f"ratio={self.ratio}, num_buckets={self.num_buckets}"
        )

    def block_term(self, layer: int) -> KPRPEBlockTerm:
        """The ``RelativePosition`` of block ``layer`` (0-based); usable as the ViT's factory."""
        return KPRPEBlockTerm(self, layer)

    def layer_bias(self, layer: int, ctx: AttentionContext, batch: int) -> torch.Tensor:
        """The bias block ``layer`` adds to its attention logits, as one explicit tensor.

        Args:
            layer: block index in [0, depth).
            ctx: the forward pass's context (grid, prefix tokens, keypoints or None).
            batch: B of the attention input.

        Returns:
            (B, H, T, T) with T = num_prefix_tokens + rows * cols; ``out[b, h, i, j]`` =
            ``table[b, layer, h, i, bucket(i, j)]`` for patch pairs and ``prefix_bias[layer, h]``
            for pairs with a prefix token. Without keypoints it is one (1, H, T, T) tensor
            expanded over the batch (a view).
        """
        bias = explicit_bias([self.layer_term(layer, ctx, batch)])  # (B'|1, H, T, T)
        return bias.expand(batch, *bias.shape[1:]) if bias.shape[0] != batch else bias

    def features(self, ctx: AttentionContext) -> torch.Tensor:
        """(B|1, 1, T, 2K + 2) per-token features whose product with ``layer_weight`` is the
        layer's bucket table: [offsets, 1, 0] for patches (zero offsets without keypoints, the
        documented fallback) and [0, ..., 0, 1] for prefix tokens."""
        rows, cols = ctx.grid
        n, skip, k2 = rows * cols, ctx.num_prefix_tokens, 2 * self.num_keypoints
        kp = ctx.keypoints
        if kp is None:
            offsets = self.weight.new_zeros(1, n, k2)
        elif kp.ndim != 3 or kp.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(
                f"KP-RPE expects keypoints of shape (B, {self.num_keypoints}, 2), got {tuple(kp.shape)}"
            )
        else:
            # per sample: a row with any non-finite value (the loader's all-NaN "no keypoints")
            # gets the fallback's zero offsets, the others their offsets
            kp = kp.to(self.weight.dtype)
            valid = torch.isfinite(kp).flatten(1).all(1)[:, None, None]  # (B, 1, 1)
            offsets = keypoint_offsets(torch.where(valid, kp, torch.zeros_like(kp)), ctx.grid)
            offsets = torch.where(valid, offsets, torch.zeros_like(offsets))  # (B, N, 2K)
        b = offsets.shape[0]
        patch = torch.cat([offsets, offsets.new_ones(b, n, 1), offsets.new_zeros(b, n, 1)], dim=2)
        prefix = offsets.new_zeros(b, skip, k2 + 2)
        prefix[..., -1] = 1.0
        return torch.cat([prefix, patch], dim=1).unsqueeze(1)

    def layer_weight(self, layer: int) -> torch.Tensor:
        """(H, 2K + 2, nb + 1): the layer's linear map, its bias row, and the skip bucket."""
        h, nb, k2 = self.num_heads, self.num_buckets, 2 * self.num_keypoints
        w = self.weight.view(self.depth, h, nb, k2)[layer].transpose(1, 2)  # (H, 2K, nb)
        bias = self.bias.view(self.depth, h, nb)[layer].unsqueeze(1)  # (H, 1, nb)
        pre = self.prefix_bias[layer].view(h, 1, 1)
        offsets_rows = torch.cat([w, w.new_zeros(h, k2, 1)], dim=2)
        patch_row = torch.cat([bias, pre], dim=2)
        prefix_row = pre.expand(h, 1, nb + 1)
        return torch.cat([offsets_rows, patch_row, prefix_row], dim=1)

    def pair_bias(self, layer: int, ctx: AttentionContext, index: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s bias between chosen patches, averaged over heads.

        Args:
            layer: block index in [0, depth).
            ctx: the forward pass's context; its keypoints (B, K, 2) or None (the fallback).
            index: (B, n) patch indices in [0, rows * cols).

        Returns:
            (B, n, n): ``out[b, i, j]`` = mean over h of ``layer_bias(...)[b, h, a, c]`` with
            a, c the tokens of patches ``index[b, i]``, ``index[b, j]``. Only the n chosen
            patches' tables are computed: (B, n, 2K + 2) features @ the head-averaged map.
        """
        if not 0 <= layer < self.depth:
            raise IndexError(f"layer {layer} out of range for KP-RPE of depth {self.depth}")
        feats = self.features(ctx)[:, 0]  # (B'|1, T, 2K + 2)
        b = index.shape[0]
        if feats.shape[0] not in (1, b):
            raise ValueError(f"keypoints have batch {feats.shape[0]} but the patch index has batch {b}")
        rows = (index + ctx.num_prefix_tokens).unsqueeze(-1).expand(-1, -1, feats.shape[-1])
        chosen = feats.expand(b, -1, -1).gather(1, rows)  # (B, n, 2K + 2)
        table = chosen @ self.layer_weight(layer).mean(0).to(chosen.dtype)  # (B, n, nb + 1)
        ids = bucket_ids(ctx.grid, METHOD, self.ratio, MAPPING, ctx.num_prefix_tokens, index.device)
        return table.gather(2, patch_pair_ids(ids, ctx.num_prefix_tokens, index))

    def layer_term(self, layer: int, ctx: AttentionContext, batch: int) -> BucketTerm:
        """Block ``layer``'s bias as a linear bucket term: table = features @ layer_weight,
        (B|1, H, T, nb + 1), recomputed chunk by chunk inside the attention and never stored."""
        if not 0 <= layer < self.depth:
            raise IndexError(f"layer {layer} out of range for KP-RPE of depth {self.depth}")
        x = self.features(ctx)
        if x.shape[0] not in (1, batch):
            raise ValueError(f"keypoints have batch {x.shape[0]} but attention has batch {batch}")
        ids = bucket_ids(ctx.grid, METHOD, self.ratio, MAPPING, ctx.num_prefix_tokens, x.device)
        return BucketTerm(ids, x=x, weight=self.layer_weight(layer).to(x.dtype))


class KPRPEBlockTerm(RelativePosition):
    """Per-block view of a shared ``KeypointRPE``: adds its layer's bias to the attention logits.

    Args:
        owner: the shared module (held by reference, not registered as a submodule).
        layer: this block's index in [0, owner.depth).
    """

    owner: KeypointRPE

    def __init__(self, owner: KeypointRPE, layer: int) -> None:
        super().__init__()
        if not 0 <= layer < owner.depth:
            raise IndexError(f"layer {layer} out of range for KP-RPE of depth {owner.depth}")
        self.__dict__["owner"] = owner  # plain attribute: parameters stay owned by the ViT once
        self.layer = layer

    def extra_repr(self) -> str:
        return f"layer={self.layer}, depth={self.owner.depth}"

    @property
    def has_pair_bias(self) -> bool:
        """Always: the bias depends on geometry and keypoints only, never on queries or keys."""
        return True

    def pair_bias(self, ctx: AttentionContext, index: torch.Tensor) -> torch.Tensor:
        """(B, n, n) head-averaged bias of this block between the patches ``index`` (B, n)."""
        return self.owner.pair_bias(self.layer, ctx, index)

    def bucket_terms(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> list[BucketTerm]:
        """This block's KP-RPE bias as one bucket table (see ``KeypointRPE.layer_term``)."""
        self._check(q, ctx)
        return [self.owner.layer_term(self.layer, ctx, q.shape[0])]

    def logits_bias(
        self, q: torch.Tensor, k: torch.Tensor, ctx: AttentionContext
    ) -> torch.Tensor:
        """(B, H, T, T) KP-RPE bias of this block; q, k: (B, H, T, d)."""
        self._check(q, ctx)
        return self.owner.layer_bias(self.layer, ctx, q.shape[0])

    def _check(self, q: torch.Tensor, ctx: AttentionContext) -> None:
        _, heads, t, _ = q.shape
        rows, cols = ctx.grid
        if heads != self.owner.num_heads or t != ctx.num_prefix_tokens + rows * cols:
            raise ValueError(
                f"KP-RPE built for {self.owner.num_heads} heads on grid {ctx.grid} with "
                f"{ctx.num_prefix_tokens} prefix tokens, got q of shape {tuple(q.shape)}"
            )


def kprpe_factory(
    num_keypoints: int, depth: int, num_heads: int, ratio: float = 1.9
) -> tuple[KeypointRPE, Callable[[int], RelativePosition]]:
    """A shared ``KeypointRPE`` and the per-block factory ``layer -> KPRPEBlockTerm``.

    Register the returned module as a submodule of the ViT (its parameters are trained and saved
    there only) and pass the callable as the ViT's ``rel_pos_factory``.
    """
    shared = KeypointRPE(num_keypoints, depth, num_heads, ratio)
    return shared, shared.block_term
