"""POSTER-style cross-fusion ViT and the torchreid CNN baselines against the model contract."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from reidbench.config import ModelConfig
from reidbench.errors import ConfigError
from reidbench.models import build_model
from reidbench.models.cnn import OSNET_WIDTHS
from reidbench.models.poster import (
    DEFAULT_NUM_KEYPOINTS,
    PosterViT,
    broadcast_to_patches,
    patch_centres,
    sample_at_keypoints,
)
from reidbench.registry import MODELS, load_builtins

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

TINY = dict(size="nano", depth=2, embed_dim=32, num_heads=2, patch_size=8)
SIZES = {"non-square": (128, 64), "square": (112, 112)}


def _inputs(
    hw: tuple[int, int], batch: int = 3, k: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *hw, generator=g), torch.rand(batch, k, 2, generator=g)


def _poster(hw: tuple[int, int] = (128, 64), k: int | None = 5, seed: int = 0) -> PosterViT:
    torch.manual_seed(seed)
    model = MODELS.get("poster")(ModelConfig(name="poster", **TINY), hw, k)
    assert isinstance(model, PosterViT)
    return model


# ---------------------------------------------------------------- poster


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("with_keypoints", [False, True])
def test_poster_forward_backward(size: str, with_keypoints: bool) -> None:
    model = _poster(SIZES[size])
    images, kps = _inputs(SIZES[size])
    out = model(images, kps if with_keypoints else None)
    assert out.shape == (3, model.embed_dim) == (3, 32) and torch.isfinite(out).all()
    out.square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    # both streams and the fusion learn; without keypoints the default keypoint set learns
    for name in ("image.patch_embed.proj.weight", "landmark_embed.coord.0.weight",
                 "landmark_embed.index_embed", "cross.0.img_attn.q.weight",
                 "cross.0.lm_attn.kv.weight", "cross.0.log_sigma", "fuse.0.attn.qkv.weight",
                 "head.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    default = grads["landmark_embed.default_logits"]
    assert (default is not None and default.abs().sum() > 0) == (not with_keypoints)


def test_poster_through_build_model_and_presets() -> None:
    model = build_model(ModelConfig(name="poster", **TINY), (128, 64), 5)
    images, kps = _inputs((128, 64))
    assert model(images, kps).shape == (3, 32)
    nano = MODELS.get("poster")(ModelConfig(name="poster", size="nano"), (112, 112), None)
    assert nano.embed_dim == 128 and len(nano.image.blocks) == 4 and len(nano.cross) == 1
    assert nano.grid == (14, 14)


def test_poster_output_depends_on_keypoints() -> None:
    model = _poster().eval()
    images, kps = _inputs((128, 64))
    moved = (kps + 0.2).clamp(0, 1)
    with torch.no_grad():
        a, b = model(images, kps), model(images, moved)
        swapped = model(images, kps[:, [1, 0, 2, 3, 4]])  # identities swapped
    assert not torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, swapped, atol=1e-4)


def test_poster_without_keypoints_uses_the_learned_default_set() -> None:
    model = _poster().eval()
    images, _ = _inputs((128, 64))
    default = model.landmark_embed.default_keypoints(3)
    assert default.shape == (3, 5, 2) and ((default > 0) & (default < 1)).all()
    with torch.no_grad():
        torch.testing.assert_close(model(images), model(images, default.clone()))


@pytest.mark.parametrize("k", [None, 0])
def test_poster_default_number_of_keypoints(k: int | None) -> None:
    model = _poster(k=k)
    assert model.num_keypoints == DEFAULT_NUM_KEYPOINTS
    images, _ = _inputs((128, 64), batch=2)
    assert model(images).shape == (2, 32)


def test_poster_other_keypoint_counts_and_wrong_k() -> None:
    model = _poster(k=17)
    images, kps = _inputs((128, 64), k=17)
    assert model(images, kps).shape == (3, 32)
    with pytest.raises(ValueError, match="built for 17 keypoints"):
        model(images, kps[:, :5])


def test_poster_state_dict_round_trip() -> None:
    a, b = _poster(seed=0), _poster(seed=1)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    images, kps = _inputs((128, 64), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(a(images, kps), b(images, kps), rtol=0, atol=0)
        torch.testing.assert_close(a(images), b(images), rtol=0, atol=0)


def test_poster_bad_input_size_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a multiple of the patch size 8"):
        _poster((100, 64))


def test_patch_centres_are_row_major_xy() -> None:
    c = patch_centres((2, 3))
    torch.testing.assert_close(c[0], torch.tensor([1 / 6, 1 / 4]))
    torch.testing.assert_close(c[2], torch.tensor([5 / 6, 1 / 4]))  # end of the first row
    torch.testing.assert_close(c[3], torch.tensor([1 / 6, 3 / 4]))


def test_sample_at_a_patch_centre_reads_that_patch() -> None:
    grid = (4, 3)
    patches = torch.randn(2, 12, 5)
    centres = patch_centres(grid)
    kps = centres[[7, 0, 11]].expand(2, -1, -1)  # (B, K, 2)
    out = sample_at_keypoints(patches, grid, kps)
    torch.testing.assert_close(out, patches[:, [7, 0, 11]])
    outside = sample_at_keypoints(patches, grid, torch.tensor([[[-0.5, -0.5]]]).expand(2, -1, -1))
    torch.testing.assert_close(outside[:, 0], patches[:, 0])  # border padding


def test_broadcast_picks_the_nearest_landmark_for_a_narrow_kernel() -> None:
    centres = patch_centres((4, 4))
    tokens = torch.randn(1, 2, 6)
    kps = torch.tensor([[[0.1, 0.1], [0.7, 0.95]]])  # no patch centre near a tie
    out = broadcast_to_patches(tokens, kps, centres, torch.tensor(0.01))
    nearest = (centres[:, None] - kps[0][None]).square().sum(-1).argmin(1)  # (N,)
    torch.testing.assert_close(out[0], tokens[0, nearest])
    wide = broadcast_to_patches(tokens, kps, centres, torch.tensor(1e3))
    torch.testing.assert_close(wide[0], tokens[0].mean(0).expand(16, -1))


# ---------------------------------------------------------------- torchreid CNNs


def _cnn(name: str, size: str = "nano", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS.get(name)(ModelConfig(name=name, size=size), (64, 32), 5)


@pytest.mark.parametrize("name,dim,hw", [
    ("osnet", 512, (128, 64)), ("osnet", 512, (112, 112)), ("resnet50", 2048, (64, 32)),
])
def test_cnn_forward_backward_returns_features_in_both_modes(
    name: str, dim: int, hw: tuple[int, int]
) -> None:
    model = _cnn(name)
    assert model.embed_dim == dim
    images, kps = _inputs(hw, batch=2)
    out = model(images, kps)
    assert out.shape == (2, dim) and torch.isfinite(out).all()  # train mode: features, not logits
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        feats = model(images, kps)
        torch.testing.assert_close(feats, model.net(images))  # torchreid's own eval feature
        torch.testing.assert_close(model(images, None), feats, rtol=0, atol=0)  # keypoints ignored


def test_cnn_has_no_dead_classifier() -> None:
    model = _cnn("osnet")
    assert not any("classifier" in n for n, _ in model.named_parameters())


def test_osnet_size_picks_the_width() -> None:
    widths = {size: _cnn("osnet", size).net.conv1.conv.out_channels for size in OSNET_WIDTHS}
    assert widths == {"nano": 16, "tiny": 32, "small": 48, "base": 64}  # x0.25 .. x1.0
    with pytest.raises(ConfigError, match="unknown model.size 'huge' for osnet"):
        _cnn("osnet", "huge")


def test_cnn_through_build_model_state_dict_round_trip() -> None:
    cfg = ModelConfig(name="osnet", **TINY)  # the ViT fields are ignored
    a, b = build_model(cfg, (64, 32), 5), build_model(cfg, (64, 32), 5)
    assert a.dim == 512
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    images, _ = _inputs((64, 32), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(a(images), b(images), rtol=0, atol=0)


def test_cnns_never_touch_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access while building a model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _cnn("osnet", "base")  # osnet_x1_0
    _cnn("resnet50")
    assert not any(tmp_path.iterdir())  # no checkpoint folder created, nothing cached
