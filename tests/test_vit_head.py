"""``model.head``: cls (default, unchanged) or flatten (no CLS token, every patch token into the
embedding head, as the KP-RPE authors' face ViT).

The finding these tests pin down: with a CLS head, the last block's patch-pair relative terms
never reach the embedding. The CLS token's output after the last block is its own attention
row, and every pair involving CLS reads the keypoint-independent skip bucket; the patch rows the
last block's table changes are thrown away. So in a KP-RPE ViT of depth 1 the keypoint map gets
no gradient at all (the model can never learn to read keypoints), and in depth L the last of the
L keypoint tables is dead weight. With the flattened head every patch row reaches the embedding.
"""

from __future__ import annotations

import pytest
import torch

from reidbench.config import ModelConfig, resolve_config
from reidbench.errors import ConfigError
from reidbench.models import build_model

IMG = (32, 16)  # a 4x2 grid with 8-pixel patches
K = 5


def kprpe(head: str, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(name="kprpe", head=head, depth=depth, embed_dim=32, num_heads=2)
    return build_model(cfg, IMG, K)


def map_gradient(model: torch.nn.Module) -> torch.Tensor:
    """d(sum of the embedding) / d(keypoint map weight), viewed as (depth, H, nb, 2K)."""
    model.train()
    images = torch.randn(4, 3, *IMG, generator=torch.Generator().manual_seed(1))
    keypoints = torch.rand(4, K, 2, generator=torch.Generator().manual_seed(2))
    feats, _ = model.forward_train(images, keypoints)
    # a weight per sample AND feature: a batch-norm output summed over the batch is constant
    (feats * torch.randn(feats.shape, generator=torch.Generator().manual_seed(3))).sum().backward()
    shared = model.backbone.kprpe
    return shared.weight.grad.view(shared.depth, shared.num_heads, shared.num_buckets, 2 * K)


def test_cls_head_at_depth_1_never_reads_the_keypoints() -> None:
    grad = map_gradient(kprpe("cls", depth=1))
    assert torch.count_nonzero(grad) == 0  # exactly zero: the path does not exist


def test_flatten_head_at_depth_1_reads_the_keypoints() -> None:
    grad = map_gradient(kprpe("flatten", depth=1))
    assert grad.abs().max() > 1e-6


def test_cls_head_last_block_table_is_dead_but_earlier_ones_learn() -> None:
    grad = map_gradient(kprpe("cls", depth=2))
    assert torch.count_nonzero(grad[1]) == 0 and grad[0].abs().max() > 1e-6
    flat = map_gradient(kprpe("flatten", depth=2))
    assert flat[1].abs().max() > 1e-6 and flat[0].abs().max() > 1e-6


def test_flatten_has_no_cls_token_and_embeds_every_patch() -> None:
    model = kprpe("flatten", depth=1).eval()
    backbone = model.backbone
    assert backbone.cls_token is None and backbone.num_prefix_tokens == 0
    assert backbone.pos_embed.embed.shape[1] == 8  # patches only
    images = torch.randn(2, 3, *IMG)
    assert backbone.forward_tokens(images).shape == (2, 8, 32)
    # every patch reaches the embedding: changing only the last patch's pixels changes it
    moved = images.clone()
    moved[:, :, 24:, 8:] += 1.0
    assert not torch.allclose(backbone(images), backbone(moved))


@pytest.mark.parametrize("name", ["ape", "rpe", "irpe", "kprpe"])
def test_every_vit_variant_builds_with_either_head(name: str) -> None:
    for head in ("cls", "flatten"):
        model = build_model(ModelConfig(name=name, head=head, depth=1, embed_dim=32, num_heads=2), IMG, K)
        out = model.eval()(torch.randn(2, 3, *IMG), torch.rand(2, K, 2))
        assert out.shape == (2, 32)


def test_default_cls_head_is_the_unchanged_model() -> None:
    """The default is the CLS token's output after the final norm (what every recorded run used)."""
    model = kprpe("cls", depth=2).eval()
    images, kps = torch.randn(2, 3, *IMG), torch.rand(2, K, 2)
    tokens = model.backbone.forward_tokens(images, kps)
    assert tokens.shape[1] == 9
    torch.testing.assert_close(model.backbone(images, kps), tokens[:, 0], rtol=0, atol=0)
    assert "head" not in dict(model.backbone.named_children())


def test_head_config_rules() -> None:
    assert resolve_config("synthetic-reid", "kprpe").model.head == "cls"
    assert resolve_config("synthetic-reid", "kprpe", overrides=["model.head=flatten"]).model.head == "flatten"
    with pytest.raises(ConfigError, match="model.head"):
        resolve_config("synthetic-reid", "kprpe", overrides=["model.head=mean"])
    with pytest.raises(ConfigError, match="CLS token"):
        resolve_config("synthetic-reid", "kprpe", overrides=[
            "model.head=flatten", "loss.terms=ce,triplet,jsd", "loss.weights=1,1,0.1"])
    with pytest.raises(ConfigError, match="ViT variants only"):
        resolve_config("synthetic-reid", "poster", overrides=["model.head=flatten"])
