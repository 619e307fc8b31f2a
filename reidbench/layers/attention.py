"""Multi-head self-attention with an injected relative position term, MLP and the ViT block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.layers.bucket_attention import CHUNK_ROWS, chunk_size, packed_bucket_attention
from reidbench.layers.flex_attention import flex_bucket_attention, use_flex
from reidbench.layers.position import AttentionContext, RelativePosition


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: token width.
        num_heads: heads; ``dim`` must be divisible by it.
        rel_pos: optional relative position term (see ``RelativePosition``).
        qkv_bias: bias on the q/k/v projection.
    """

    def __init__(
        self, dim: int, num_heads: int, rel_pos: RelativePosition | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = rel_pos
        # bucket attention works on chunks of the batch whose (n, H, T, T) buffers hold at most
        # as much as (B, H, chunk_rows, T) (``bucket_attention.chunk_size``)
        self.chunk_rows = CHUNK_ROWS
        # relative terms on CUDA go through FlexAttention ("auto"), elsewhere through the
        # chunked bucket kernel; "bucket" / "flex" force one (``flex_attention.use_flex``)
        self.backend = "auto"

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rel_pos is not None and not self.rel_pos.needs_probabilities:
            qkv = qkv.contiguous()  # packed (3, B, H, T, d): saved once, one packed gradient
            q, k, v = qkv.unbind(0)
            terms = self.rel_pos.bucket_terms(q, k, ctx)
            if terms:  # the (B, H, T, T) bias is never stored whole
                if use_flex(q.device, self.backend, torch.is_grad_enabled()):
                    out = flex_bucket_attention(q, k, v, terms, self.scale)
                else:
                    chunk = chunk_size(b, t, self.chunk_rows)
                    out = packed_bucket_attention(qkv, terms, self.scale, chunk, q=q)
                return self.proj(out.transpose(1, 2).reshape(b, t, c))
        q, k, v = qkv.unbind(0)  # (B, H, T, d)
        if self.rel_pos is not None:
            q, k = self.rel_pos.rotate(q, k, ctx)  # rotary encodings; others return q, k as given
        bias = self.rel_pos.logits_bias(q, k, ctx) if self.rel_pos is not None else None
        if self.rel_pos is not None and self.rel_pos.needs_probabilities:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, T, T)
            if bias is not None:
                logits = logits + bias
            attn = logits.softmax(dim=-1)
            out = attn @ v
            extra = self.rel_pos.output_term(attn, ctx)
            if extra is not None:
                out = out + extra
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if bias is None else bias.to(q.dtype)
            )
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
        rel_pos: RelativePosition | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, rel_pos=rel_pos)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), ctx))
        return x + self.drop_path(self.mlp(self.norm2(x)))
