"""POSTER-style landmark/image cross-fusion transformer ([poster]).

After Zheng, Mendieta and Chen, "POSTER: A Pyramid Cross-Fusion Transformer Network for Facial
Expression Recognition" (arXiv 2204.04083, 2022; ICCV Workshops 2023). POSTER runs two streams,
facial-landmark features and image features, and fuses them with cross-attention in which the
streams exchange queries: the image stream attends over its own keys/values with queries made
from the landmark stream, and the landmark stream attends over its own keys/values with queries
made from the image stream. This module keeps that idea and adapts it to the benchmark:

- **Image stream**: the APE ViT of ``vit.py`` (PatchEmbed, learned absolute embedding, ``depth``
  blocks), so ``poster`` is ``ape`` plus a landmark stream and fusion layers.
- **Landmark stream**: POSTER takes the feature map of a pretrained landmark CNN; here the
  keypoints themselves are the stream. Each of the K keypoints becomes a token: an MLP of its
  (x, y) plus a learned per-keypoint (identity) embedding, then one self-attention block so each
  token sees the whole layout.
- **Cross-fusion layers** (``fusion_depth`` of them, after the image blocks). The streams have
  different lengths (1 + N patches vs K keypoints, K != N), so queries are moved between them
  geometrically:

  * landmark -> image ("broadcast"): patch i's query is a convex combination of the landmark
    tokens, weighted by ``softmax_k(-|c_i - p_k|^2 / (2 sigma^2))`` with c_i the patch centre,
    p_k the keypoint and a learned sigma per layer (nearest keypoints dominate); the CLS
    query is the mean landmark token. Keys/values are the image tokens: (B, 1 + N, D) out.
  * image -> landmark ("pool"): keypoint k's query is the patch-token map bilinearly sampled at
    p_k (border padding for keypoints off the image). Keys/values are the landmark tokens:
    (B, K, D) out.

  Both updates read the layer's input (the streams are updated simultaneously), each followed
  by an MLP; everything is pre-norm residual.
- **Fusion**: as in POSTER, the two token sequences are concatenated, (B, 1 + N + K, D), and
  run through ``fuse_depth`` plain ViT blocks (so every fused token, not only CLS, reaches the
  output); after a final norm the CLS token and the mean landmark token are concatenated and
  projected back to D: ``(B, 2D) -> (B, D)``.

Not reproduced: POSTER's pyramid (three scales of both streams) and its pretrained backbones;
every module here is trained from scratch like the other ViTs of the zoo.

Without keypoints the model uses a **learned default keypoint set**: K positions (a parameter,
initialised on a centred grid) shared by every image. The landmark tokens are then learned
constants of the model and carry no per-image information, but every code path is the same.
In a batch, a sample whose keypoint row holds a non-finite value (the loader's all-NaN row for
an image without keypoints) takes the default set; the other samples keep their keypoints.
A model built with ``num_keypoints`` None or 0 uses ``DEFAULT_NUM_KEYPOINTS``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.config import ModelConfig
from reidbench.layers import AttentionContext, Block, Mlp
from reidbench.layers.attention import DropPath
from reidbench.models.vit import VisionTransformer, _init_weights, _resolve_size
from reidbench.registry import MODELS

DEFAULT_NUM_KEYPOINTS = 5  # K of a model built without keypoints (5-point faces)


class CrossAttention(nn.Module):
    """Multi-head attention whose queries come from one token set and keys/values from another.

    Args:
        dim: token width of both sets.
        num_heads: heads; ``dim`` must be divisible by it.
        qkv_bias: bias on the q and kv projections.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, Tq, C) query tokens, (B, Tk, C) key/value tokens -> (B, Tq, C)."""
        b, tq, c = queries.shape
        tk = context.shape[1]
        q = self.q(queries).reshape(b, tq, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, Tq, d)
        kv = self.kv(context).reshape(b, tk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # (B, H, Tk, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, Tq, d)
        return self.proj(out.transpose(1, 2).reshape(b, tq, c))


def patch_centres(grid: tuple[int, int]) -> torch.Tensor:
    """(rows * cols, 2) patch centres as (x, y) in [0, 1], row-major like the patch tokens."""
    rows, cols = grid
    y, x = torch.meshgrid(
        (torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij"
    )
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def broadcast_to_patches(
    tokens: torch.Tensor, keypoints: torch.Tensor, centres: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """Landmark tokens -> one token per patch, a softmax-over-keypoints mix by distance.

    Args:
        tokens: (B, K, C) landmark tokens.
        keypoints: (B, K, 2) their (x, y) in [0, 1].
        centres: (N, 2) patch centres (x, y) in [0, 1].
        sigma: scalar kernel width in normalised image units.

    Returns:
        (B, N, C): patch i gets ``sum_k softmax_k(-|c_i - p_k|^2 / (2 sigma^2)) tokens_k``.
    """
    d2 = (centres[None, :, None, :] - keypoints[:, None, :, :]).square().sum(-1)  # (B, N, K)
    weights = (-d2 / (2 * sigma.square())).softmax(dim=-1)
    return weights @ tokens


def sample_at_keypoints(
    patches: torch.Tensor, grid: tuple[int, int], keypoints: torch.Tensor
) -> torch.Tensor:
    """Bilinearly sample the (B, N, C) patch-token map at (B, K, 2) keypoints -> (B, K, C).

    Keypoints outside the image read the nearest border token.
    """
    b, _, c = patches.shape
    fmap = patches.transpose(1, 2).reshape(b, c, *grid)  # (B, C, rows, cols)
    where = (keypoints * 2 - 1).unsqueeze(2)  # (B, K, 1, 2) in grid_sample's [-1, 1]
    out = F.grid_sample(fmap, where, mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(-1).transpose(1, 2)  # (B, K, C)


class CrossFusionLayer(nn.Module):
    """One exchange of queries between the image and landmark streams (see the module docstring).

    Args:
        dim: token width of both streams.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        drop_path: stochastic-depth rate of every residual branch.
        sigma: initial width of the landmark -> patch kernel, in normalised image units.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        sigma: float = 0.1,
    ) -> None:
        super().__init__()
        self.img_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.lm_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.img_attn = CrossAttention(dim, num_heads)  # landmark queries over image keys/values
        self.lm_attn = CrossAttention(dim, num_heads)  # image queries over landmark keys/values
        self.img_norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.lm_norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.img_mlp = Mlp(dim, int(dim * mlp_ratio))
        self.lm_mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def forward(
        self, img: torch.Tensor, lm: torch.Tensor, keypoints: torch.Tensor,
        centres: torch.Tensor, grid: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1 + N, C) image tokens, (B, K, C) landmark tokens, (B, K, 2) keypoints -> both updated."""
        ni, nl = self.img_norm1(img), self.lm_norm1(lm)
        img_queries = torch.cat(
            [nl.mean(1, keepdim=True), broadcast_to_patches(nl, keypoints, centres, self.log_sigma.exp())],
            dim=1,
        )  # (B, 1 + N, C)
        lm_queries = sample_at_keypoints(ni[:, 1:], grid, keypoints)  # (B, K, C)
        img = img + self.drop_path(self.img_attn(img_queries, ni))
        lm = lm + self.drop_path(self.lm_attn(lm_queries, nl))
        img = img + self.drop_path(self.img_mlp(self.img_norm2(img)))
        lm = lm + self.drop_path(self.lm_mlp(self.lm_norm2(lm)))
        return img, lm


class LandmarkEmbed(nn.Module):
    """Keypoints -> landmark tokens: MLP of (x, y) + a learned embedding per keypoint index.

    Also holds the learned default keypoint set used when a batch has no keypoints.

    Args:
        num_keypoints: K.
        dim: token width.
    """

    def __init__(self, num_keypoints: int, dim: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.coord = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))
        self.index_embed = nn.Parameter(torch.zeros(1, num_keypoints, dim))
        # default keypoints as logits, so sigmoid keeps them inside the image
        self.default_logits = nn.Parameter(torch.logit(_grid_layout(num_keypoints)))

    def default_keypoints(self, batch: int) -> torch.Tensor:
        """(B, K, 2) learned default keypoints in (0, 1), the same for every image."""
        return self.default_logits.sigmoid().unsqueeze(0).expand(batch, -1, -1)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) keypoints in [0, 1] -> (B, K, C) tokens."""
        return self.coord(keypoints * 2 - 1) + self.index_embed


def _grid_layout(k: int) -> torch.Tensor:
    """(k, 2) points filling a centred ceil(sqrt(k))-column grid over [0.2, 0.8]^2, row-major."""
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    i = torch.arange(k)
    x = 0.2 + 0.6 * ((i % cols).float() + 0.5) / cols
    y = 0.2 + 0.6 * ((i // cols).float() + 0.5) / rows
    return torch.stack([x, y], dim=1)


class PosterViT(nn.Module):
    """Two-stream ViT: APE image stream, keypoint landmark stream, cross-fusion layers, fused head.

    Args:
        img_size: (height, width) input size.
        patch_size: square patch side in pixels.
        embed_dim: token width of both streams, also the embedding size D.
        depth: image-stream blocks (as in ``ape``).
        num_heads: attention heads.
        num_keypoints: K, the landmark tokens; a batch's keypoints must have this K.
        fusion_depth: cross-fusion layers after the image blocks.
        landmark_depth: self-attention blocks over the landmark tokens before fusion.
        fuse_depth: plain blocks over the concatenated streams after the cross-fusion layers.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path: stochastic-depth rate (last image block, and every fusion layer).
        absolute: absolute embedding of the image stream, "learned" or "sincos".
    """

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, embed_dim: int, depth: int,
        num_heads: int, num_keypoints: int = DEFAULT_NUM_KEYPOINTS, fusion_depth: int = 1,
        landmark_depth: int = 1, fuse_depth: int = 1, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        absolute: str = "learned",
    ) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be positive, got {num_keypoints}")
        self.embed_dim = embed_dim
        self.num_keypoints = num_keypoints
        self.image = VisionTransformer(
            img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path, absolute
        )
        self.grid = self.image.grid
        self.register_buffer("centres", patch_centres(self.grid), persistent=False)
        self.landmark_embed = LandmarkEmbed(num_keypoints, embed_dim)
        self.landmark_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio) for _ in range(landmark_depth)
        )
        self.cross = nn.ModuleList(
            CrossFusionLayer(embed_dim, num_heads, mlp_ratio, drop_path) for _ in range(fusion_depth)
        )
        self.fuse = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, drop_path) for _ in range(fuse_depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(2 * embed_dim, embed_dim)
        for module in (self.landmark_embed, self.landmark_blocks, self.cross, self.fuse, self.head):
            module.apply(_init_weights)
        nn.init.trunc_normal_(self.landmark_embed.index_embed, std=0.02)
        # a wide random first layer, so keypoint coordinates are visible from the start
        nn.init.normal_(self.landmark_embed.coord[0].weight, std=1.0)

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images, optional (B, K, 2) keypoints in [0, 1] -> (B, D) embeddings."""
        b = images.shape[0]
        if keypoints is None:
            keypoints = self.landmark_embed.default_keypoints(b)
        elif keypoints.shape != (b, self.num_keypoints, 2):
            raise ValueError(
                f"poster was built for {self.num_keypoints} keypoints: expected keypoints of shape "
                f"({b}, {self.num_keypoints}, 2), got {tuple(keypoints.shape)}"
            )
        else:  # per sample: a row with a non-finite value (no keypoints) takes the defaults
            valid = torch.isfinite(keypoints).flatten(1).all(1)[:, None, None]
            if not bool(valid.all()):  # (a full batch keeps the graph it always had)
                keypoints = torch.where(valid, keypoints, self.landmark_embed.default_keypoints(b))
        keypoints = keypoints.to(images.dtype)
        img = self.image.forward_tokens(images)  # (B, 1 + N, D)
        lm = self.landmark_embed(keypoints)  # (B, K, D)
        # the landmark and fusion blocks have no relative position term: the context is inert
        ctx = AttentionContext((self.num_keypoints, 1), 0)
        for block in self.landmark_blocks:
            lm = block(lm, ctx)
        for layer in self.cross:
            img, lm = layer(img, lm, keypoints, self.centres, self.grid)
        x = torch.cat([img, lm], dim=1)  # (B, 1 + N + K, D)
        for block in self.fuse:
            x = block(x, ctx)
        x = self.norm(x)
        fused = torch.cat([x[:, 0], x[:, -self.num_keypoints:].mean(1)], dim=1)  # (B, 2D)
        return self.head(fused)


def _build_poster(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None) -> PosterViT:
    cfg = _resolve_size(cfg)
    assert cfg.embed_dim and cfg.depth and cfg.num_heads
    return PosterViT(
        img_size=img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, num_keypoints=num_keypoints or DEFAULT_NUM_KEYPOINTS,
        fusion_depth=max(1, cfg.depth // 6), landmark_depth=1, fuse_depth=1, mlp_ratio=cfg.mlp_ratio,
        drop_path=cfg.drop_path, absolute=cfg.ape,
    )


@MODELS.register("poster")
def poster(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """Landmark/image cross-fusion (POSTER-style): ``depth`` image blocks, one landmark block,
    ``max(1, depth // 6)`` cross-fusion layers and one block over the fused streams."""
    return _build_poster(cfg, img_size, num_keypoints)
