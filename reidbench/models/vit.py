"""One Vision Transformer; the position encoding is the injected axis the zoo varies on.

Reads top to bottom: the model class, a private builder that turns a ModelConfig into
arguments, then thin registered variants that only choose the position encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from reidbench.config import ModelConfig
from reidbench.errors import ConfigError
from reidbench.layers import AbsolutePositionEmbedding, AttentionContext, Block, PatchEmbed
from reidbench.layers.cpe import PEG
from reidbench.layers.irpe import IRPEConfig, irpe_factory
from reidbench.layers.kprpe import kprpe_factory
from reidbench.layers.position import RelativePosition
from reidbench.layers.rope import rope_factory
from reidbench.layers.rpe import shaw_factory
from reidbench.registry import MODELS

# (embed_dim, depth, num_heads); nano is the CPU-friendly size of the synthetic benchmark
SIZES: dict[str, tuple[int, int, int]] = {
    "nano": (128, 4, 4),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}

RelPosFactory = Callable[[int], RelativePosition | None]  # block index -> its relative term


class VisionTransformer(nn.Module):
    """ViT with a CLS token whose output, after the final norm, is the embedding.

    Args:
        img_size: (height, width) input size.
        patch_size: square patch side in pixels.
        embed_dim: token width, also the embedding size D.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path: stochastic-depth rate of the last block (linear from 0).
        absolute: "learned", "sincos" or None (no absolute embedding).
        rel_pos_factory: gives block i its relative position term (``Attention.rel_pos``), or
            None for none.
        cond_pos_factory: embed_dim -> a module ``(tokens, ctx) -> tokens`` applied after the
            first block (CPE's position encoding generator, ``layers.cpe.PEG``), or None.
        head: "cls": the embedding is the CLS token's final output; "flatten": there is no CLS
            token (``num_prefix_tokens`` = 0) and all final patch tokens, flattened, go through
            ``FlattenHead`` (as the KP-RPE authors' face ViT). With "cls" the last block's
            patch-pair terms cannot reach the embedding (the CLS row reads only the skip
            bucket there), so a KP-RPE of depth 1 never uses its keypoints; with "flatten" they do.
    """

    num_prefix_tokens = 1

    def __init__(
        self, img_size: tuple[int, int], patch_size: int, embed_dim: int, depth: int,
        num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        absolute: str | None = "learned", rel_pos_factory: RelPosFactory | None = None,
        cond_pos_factory: Callable[[int], nn.Module] | None = None, head: str = "cls",
    ) -> None:
        super().__init__()
        if head not in ("cls", "flatten"):
            raise ValueError(f"unknown head {head!r}; expected cls or flatten")
        if head == "flatten":
            self.num_prefix_tokens = 0  # shadows the class default: no CLS token
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.grid = self.patch_embed.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = (
            AbsolutePositionEmbedding(self.grid, embed_dim, self.num_prefix_tokens, absolute)
            if absolute else None
        )
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, rates[i], rel_pos_factory(i) if rel_pos_factory else None)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.cond_pos = cond_pos_factory(embed_dim) if cond_pos_factory else None
        if head == "flatten":
            del self.cls_token
            self.cls_token = None  # type: ignore[assignment]
            self.head = FlattenHead(self.grid[0] * self.grid[1], embed_dim)
        self.apply(_init_weights)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_tokens(
        self, images: torch.Tensor, keypoints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) images, optional (B, K, 2) keypoints -> (B, 1 + N, D) final tokens."""
        x = self.patch_embed(images)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        ctx = AttentionContext(self.grid, self.num_prefix_tokens, keypoints)
        for i, block in enumerate(self.blocks):
            x = block(x, ctx)
            if i == 0 and self.cond_pos is not None:  # CPE: the PEG after the first block
                x = self.cond_pos(x, ctx)
        return self.norm(x)

    def forward(self, images: torch.Tensor, keypoints: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) images, optional (B, K, 2) keypoints in [0, 1] -> (B, D) embeddings."""
        tokens = self.forward_tokens(images, keypoints)
        return tokens[:, 0] if self.cls_token is not None else self.head(tokens)

    def position_terms(self) -> tuple[bool, bool]:
        """(has absolute patch embeddings, has a content-independent relative bias per patch
        pair in every block): the two terms of ``pair_relations``."""
        rel = [block.attn.rel_pos for block in self.blocks]
        has_rel = bool(rel) and all(r is not None and r.has_pair_bias for r in rel)
        return self.pos_embed is not None, has_rel

    def pair_relations(
        self, index: torch.Tensor, keypoints: torch.Tensor | None = None,
        layers: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Positional relations R_ab = P_abs_a . P_abs_b + P_rel_ab between chosen patches.

        Args:
            index: (B, n) patch indices in [0, rows * cols) of each image.
            keypoints: (B, K, 2) keypoints of the images (KP-RPE's bias depends on them), or None.
            layers: blocks whose relative bias is used, one relation per pair per listed block
                (negative indices count from the end); None averages the bias over all blocks.

        Returns:
            (B, L, n, n), ``out[b, l, i, j]`` = R between patches ``index[b, i]`` and
            ``index[b, j]``. P_abs is the absolute embedding of a patch (0 without one); P_rel is
            the logits bias of the pair averaged over heads (0 when the encoding has no
            content-independent bias, see ``RelativePosition.has_pair_bias``). L = len(layers)
            when layers are given and there is a relative bias, else 1.
        """
        has_abs, has_rel = self.position_terms()
        if not has_abs and not has_rel:
            raise ConfigError("this ViT has neither absolute position embeddings nor a per-pair "
                              "relative bias, so it has no positional relations")
        b, n = index.shape
        out = index.new_zeros((b, 1, n, n), dtype=self.norm.weight.dtype)
        if has_rel:
            chosen = range(len(self.blocks)) if layers is None else self.resolve_layers(layers)
            ctx = AttentionContext(self.grid, self.num_prefix_tokens, keypoints)
            rel = [self.blocks[i].attn.rel_pos.pair_bias(ctx, index) for i in chosen]
            bias = torch.stack([r.expand(b, n, n) for r in rel], dim=1)  # (B, L, n, n)
            out = out + (bias.mean(1, keepdim=True) if layers is None else bias)
        if has_abs:
            assert self.pos_embed is not None
            p = self.pos_embed.patch_embeddings()[index]  # (B, n, D)
            out = out + (p @ p.transpose(1, 2)).unsqueeze(1)
        return out

    def resolve_layers(self, layers: tuple[int, ...]) -> list[int]:
        """Block indices of ``layers`` (negative from the end); ConfigError when out of range."""
        depth = len(self.blocks)
        bad = [i for i in layers if not -depth <= i < depth]
        if bad or not layers:
            raise ConfigError(f"relation layers {list(layers)} must be non-empty and in "
                              f"[-{depth}, {depth}) for a ViT of depth {depth}")
        return [i % depth for i in layers]


class FlattenHead(nn.Module):
    """All N patch tokens flattened, then Linear(N * D -> D) - BatchNorm - Linear(D -> D), no
    biases (the feature head of CVLface's ViTs; its final BatchNorm is our BN neck)."""

    def __init__(self, num_patches: int, dim: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(num_patches * dim, dim, bias=False)
        self.bn = nn.BatchNorm1d(dim, eps=2e-5)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) final patch tokens -> (B, D)."""
        return self.proj(self.bn(self.reduce(tokens.flatten(1))))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _resolve_size(cfg: ModelConfig) -> ModelConfig:
    if cfg.size not in SIZES:
        raise ConfigError(f"unknown model.size {cfg.size!r}; expected one of: {', '.join(SIZES)}")
    dim, depth, heads = SIZES[cfg.size]
    return replace(
        cfg,
        embed_dim=cfg.embed_dim or dim,
        depth=cfg.depth or depth,
        num_heads=cfg.num_heads or heads,
    )


def _build_vit(
    cfg: ModelConfig, img_size: tuple[int, int], absolute: str | None,
    rel_pos_factory: RelPosFactory | None = None,
    cond_pos_factory: Callable[[int], nn.Module] | None = None,
) -> VisionTransformer:
    cfg = _resolve_size(cfg)
    assert cfg.embed_dim and cfg.depth and cfg.num_heads
    return VisionTransformer(
        img_size=img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path=cfg.drop_path,
        absolute=absolute, rel_pos_factory=rel_pos_factory, cond_pos_factory=cond_pos_factory,
        head=cfg.head,
    )


def _absolute(cfg: ModelConfig) -> str | None:
    if cfg.ape not in ("learned", "sincos", "none"):
        raise ConfigError(f"unknown model.ape {cfg.ape!r}; expected learned, sincos or none")
    return None if cfg.ape == "none" else cfg.ape


def _head_dim(cfg: ModelConfig) -> tuple[int, int]:
    cfg = _resolve_size(cfg)
    assert cfg.embed_dim and cfg.num_heads
    return cfg.embed_dim // cfg.num_heads, cfg.num_heads


@MODELS.register("ape")
def ape(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """Absolute position embeddings only (learned, or 2D sin-cos with ``model.ape=sincos``)."""
    return _build_vit(cfg, img_size, absolute=_absolute(cfg))


@MODELS.register("rpe")
def rpe(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """Shaw et al. (2018) relative representations in 2D: clipped row and column offsets index
    learned embeddings added to the keys (``model.rel.on_values=true``: and values), on top of
    the absolute embeddings."""
    head_dim, heads = _head_dim(cfg)
    factory = shaw_factory(head_dim, heads, cfg.rel.max_distance, cfg.rel.on_values,
                           cfg.rel.shared_head)
    return _build_vit(cfg, img_size, absolute=_absolute(cfg), rel_pos_factory=factory)


def irpe_config(cfg: ModelConfig) -> IRPEConfig:
    """The iRPE settings of ``model.rel`` (ConfigError for invalid combinations)."""
    r = cfg.rel
    try:
        return IRPEConfig(ratio=r.ratio, method=r.method, mapping=r.mapping, mode=r.mode, on=r.on,
                          shared_head=r.shared_head,
                          skip=0 if cfg.head == "flatten" else VisionTransformer.num_prefix_tokens)
    except ValueError as exc:
        raise ConfigError(f"model.rel: {exc}") from None


@MODELS.register("irpe")
def irpe(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """iRPE (Wu et al., ICCV 2021), configured by ``model.rel`` (default: contextual product
    method on keys, ratio 1.9), on top of the absolute embeddings."""
    head_dim, heads = _head_dim(cfg)
    factory = irpe_factory(irpe_config(cfg), head_dim, heads)
    return _build_vit(cfg, img_size, absolute=_absolute(cfg), rel_pos_factory=factory)


@MODELS.register("kprpe")
def kprpe(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """KP-RPE (Kim et al., CVPR 2024): iRPE-product bias tables computed from each patch's
    offsets to the image's keypoints, on top of the absolute embeddings. Without keypoints the
    keypoint term is dropped (the static per-layer bias remains; see ``layers.kprpe``). A
    dataset without keypoints builds it for one keypoint and always uses that fallback."""
    resolved = _resolve_size(cfg)
    assert resolved.depth and resolved.num_heads
    shared, factory = kprpe_factory(max(1, num_keypoints or 0), resolved.depth,
                                    resolved.num_heads, cfg.rel.ratio)
    model = _build_vit(cfg, img_size, absolute=_absolute(cfg), rel_pos_factory=factory)
    model.kprpe = shared  # registered once, read by every block's term
    return model


@MODELS.register("rope")
def rope(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """2D RoPE (Heo et al., ECCV 2024): the queries and keys of the patch tokens rotated by
    angles linear in their (x, y) patch position, ``model.rope.mode`` axial (fixed frequencies)
    or mixed (learned per head and block); CLS unrotated, fused attention, no absolute table."""
    try:
        factory = rope_factory(*_head_dim(cfg), cfg.rope.mode, cfg.rope.theta)
    except ValueError as exc:
        raise ConfigError(f"model.rope: {exc}") from None
    return build_vit(cfg, img_size, lambda block, hd, h: factory(block), absolute=False)


@MODELS.register("cpe")
def cpe(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """Conditional position encoding (Chu et al., ICLR 2023): a residual depthwise 3x3
    convolution over the patch grid after the first block (the PEG); no absolute table."""
    return build_vit(cfg, img_size, absolute=False, cond_pos=PEG)


@MODELS.register("nope")
def nope(cfg: ModelConfig, img_size: tuple[int, int], num_keypoints: int | None = None) -> nn.Module:
    """No position encoding at all: the lower control (with the CLS head, the patches are a set
    to this ViT; ``model.head=flatten`` reads them in order)."""
    return build_vit(cfg, img_size, absolute=False)


def build_vit(
    cfg: ModelConfig, img_size: tuple[int, int],
    rel_pos: Callable[[int, int, int], RelativePosition | None] | None = None, *,
    absolute: bool = True, cond_pos: Callable[[int], nn.Module] | None = None,
) -> VisionTransformer:
    """The ViT of ``cfg`` (size, patch, width, ...) with a position encoding injected: what every
    variant below uses and the entry point for an encoding of one's own (README, "Adding your own
    encoding").

    Args:
        cfg: the model settings; ``cfg.ape`` gives the absolute embedding when ``absolute``.
        img_size: (height, width) input size.
        rel_pos: (block index, head_dim, num_heads) -> that block's ``RelativePosition`` (a
            bias, a contextual term or a rotation of q and k), or None for none.
        absolute: keep the absolute embedding of ``cfg.ape`` (True) or have none (False).
        cond_pos: embed_dim -> a module ``(tokens, ctx) -> tokens`` run after the first block.
    """
    head_dim, heads = _head_dim(cfg)
    factory = None if rel_pos is None else lambda block: rel_pos(block, head_dim, heads)
    return _build_vit(cfg, img_size, absolute=_absolute(cfg) if absolute else None,
                      rel_pos_factory=factory, cond_pos_factory=cond_pos)
