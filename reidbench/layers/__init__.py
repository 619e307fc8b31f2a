"""Reusable layers: patch embedding, attention, position encodings."""

from reidbench.layers.ape import AbsolutePositionEmbedding, sincos_2d
from reidbench.layers.attention import Attention, Block, Mlp
from reidbench.layers.cpe import PEG
from reidbench.layers.patch_embed import PatchEmbed
from reidbench.layers.position import AttentionContext, RelativePosition
from reidbench.layers.rope import RotaryPosition

__all__ = [
    "AbsolutePositionEmbedding",
    "Attention",
    "AttentionContext",
    "Block",
    "Mlp",
    "PEG",
    "PatchEmbed",
    "RelativePosition",
    "RotaryPosition",
    "sincos_2d",
]
