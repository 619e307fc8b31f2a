"""``ape_aligned`` (reidbench/models/aligned.py): the similarity equals the numpy Umeyama
reference that matches insightface, exact template keypoints give the identity warp, a warp
undoes a known similarity, and noisy keypoints change the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.config import ModelConfig
from reidbench.data import geometry
from reidbench.data.alignment import ARCFACE_TEMPLATE, similarity_transform
from reidbench.models import build_model
from reidbench.models.aligned import AlignedViT, similarity_batch, warp_to_template
from reidbench.registry import load_builtins

load_builtins()  # importing models.aligned registered one model: register them all, as the CLI does

H, W = 32, 16
TEMPLATE = torch.tensor([[0.3, 0.2], [0.7, 0.25], [0.5, 0.5], [0.35, 0.8], [0.65, 0.78]], dtype=torch.float64)


def test_similarity_equals_the_umeyama_reference() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 112, (6, 5, 2))
    got = similarity_batch(torch.from_numpy(src), torch.from_numpy(ARCFACE_TEMPLATE)).numpy()
    for i in range(6):
        np.testing.assert_allclose(got[i], similarity_transform(src[i], ARCFACE_TEMPLATE), atol=1e-9)


def test_exact_template_keypoints_give_the_identity_warp() -> None:
    images = torch.randn(3, 3, H, W, dtype=torch.float64)
    kps = TEMPLATE.expand(3, -1, -1)
    out, m = warp_to_template(images, kps, TEMPLATE)
    np.testing.assert_allclose(m.numpy(), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-12)
    torch.testing.assert_close(out, images, rtol=0, atol=1e-9)


def test_the_warp_undoes_a_known_misalignment() -> None:
    """Misalign an image (and its keypoints) with a similarity; the aligned model's warp maps
    the misaligned image back onto the original wherever the content survived."""
    rng = np.random.default_rng(1)
    hw = (64, 32)
    smooth = np.kron(rng.uniform(0, 255, (8, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    misalign = geometry.similarity((16.0, 32.0), degrees=12.0, scale=0.9, shift=(1.5, -2.0))
    moved = geometry.warp_image(smooth, misalign, hw)
    tmpl = TEMPLATE.numpy()
    moved_kps = geometry.transform_keypoints(tmpl, misalign, hw, hw)
    images = torch.from_numpy(moved).permute(2, 0, 1)[None].double()
    out, _ = warp_to_template(images, torch.from_numpy(moved_kps)[None].double(), TEMPLATE)
    back = out[0].permute(1, 2, 0).numpy()
    inner = (slice(12, 52), slice(8, 24))  # well inside the canvas that survived
    err = np.abs(back[inner] - smooth[inner].astype(np.float64))
    assert np.median(err) < 2.0, np.median(err)  # blocks realigned (bilinear at block edges)
    unaligned = np.abs(moved[inner].astype(np.float64) - smooth[inner])
    assert np.median(unaligned) > 10 * max(np.median(err), 0.5)


def test_noisy_keypoints_change_the_input_exact_ones_do_not() -> None:
    torch.manual_seed(0)
    vit = build_model(ModelConfig(name="ape", depth=1, embed_dim=32, num_heads=2), (H, W)).backbone
    model = AlignedViT(vit, 5).eval()
    model.template.copy_(TEMPLATE)
    model.seen.fill_(1.0)
    images = torch.randn(2, 3, H, W)
    exact = TEMPLATE.float().expand(2, -1, -1).clone()
    torch.testing.assert_close(model.align(images, exact), images, rtol=0, atol=1e-5)
    noisy = exact + 0.05 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(1))
    assert (model.align(images, noisy) - images).abs().mean() > 0.1
    assert not torch.allclose(model(images, noisy), model(images, exact), atol=1e-4)
    # without keypoints: the plain APE ViT on the unwarped image (the documented fallback)
    torch.testing.assert_close(model(images, None), vit(images), rtol=0, atol=0)


def test_template_is_the_mean_of_the_training_keypoints() -> None:
    model = build_model(ModelConfig(name="ape_aligned", depth=1, embed_dim=32, num_heads=2), (H, W), 5)
    backbone = model.backbone
    assert backbone.seen == 0
    images = torch.randn(4, 3, H, W)
    torch.testing.assert_close(model.eval()(images, torch.rand(4, 5, 2)), model(images))  # no template yet
    batches = [torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    model.train()
    for kps in batches:
        model(images, kps)
    expected = torch.cat(batches).double().mean(0)
    torch.testing.assert_close(backbone.template, expected, rtol=0, atol=1e-12)
    assert backbone.seen == 12
    snapshot = backbone.template.clone()
    model.eval()(images, batches[0])
    torch.testing.assert_close(backbone.template, snapshot, rtol=0, atol=0)  # frozen in eval
    assert "backbone.template" in model.state_dict()


@pytest.mark.parametrize("hw", [(32, 16), (24, 24)])
def test_alignment_is_a_similarity_on_non_square_inputs(hw: tuple[int, int]) -> None:
    """The fitted map is estimated in pixels: on a 32x16 crop it must not stretch one axis."""
    h, w = hw
    rng = np.random.default_rng(2)
    kps = rng.uniform(0.2, 0.8, (1, 5, 2))
    _, m = warp_to_template(torch.zeros(1, 3, h, w), torch.from_numpy(kps), TEMPLATE)
    lin = m[0, :2, :2].numpy()
    np.testing.assert_allclose(lin @ lin.T, np.eye(2) * np.linalg.det(lin), atol=1e-9)
