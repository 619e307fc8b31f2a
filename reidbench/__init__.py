"""reidbench: how much does a ViT's position encoding decide re-ID / face accuracy under misalignment."""

__version__ = "0.1.0"
