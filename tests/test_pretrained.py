"""Pretrained timm ViT weights load into every reidbench ViT variant and give timm's function.

The checkpoints are timm ``VisionTransformer``s with random weights made here, saved as the
formats a researcher is handed; nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import reidbench.models.poster  # noqa: F401  (registers poster)
import reidbench.models.vit  # noqa: F401  (registers the ViT variants)
from reidbench.config import ModelConfig
from reidbench.errors import ReidbenchError
from reidbench.models.heads import EmbeddingModel
from reidbench.models.pretrained import load_pretrained, read_state_dict
from reidbench.registry import MODELS

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed, resample_patch_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402

IMG, PATCH, DIM, DEPTH, HEADS, K = (32, 16), 8, 32, 2, 2, 5


def timm_vit(img: tuple[int, int] = IMG, patch: int = PATCH, dim: int = DIM, depth: int = DEPTH,
             **kwargs: object) -> TimmViT:
    """A timm ViT with every tensor random (norm weights and biases included, so that a swapped
    or skipped tensor shows), in eval mode."""
    model = TimmViT(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=HEADS,
                    num_classes=10, class_token=True, global_pool="token", **kwargs)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def ours(name: str = "ape", img: tuple[int, int] = IMG, patch: int = PATCH, **kwargs: object
         ) -> torch.nn.Module:
    cfg = ModelConfig(name=name, patch_size=patch, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                      **kwargs)  # type: ignore[arg-type]
    return MODELS.get(name)(cfg, img, K).eval()  # type: ignore[operator]


def save(state: dict, path: Path) -> Path:  # type: ignore[type-arg]
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def images(img: tuple[int, int] = IMG) -> torch.Tensor:
    return torch.randn(2, 3, *img, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_ape_gives_timms_tokens(tmp_path: Path, suffix: str) -> None:
    ref = timm_vit()
    path = save(ref.state_dict(), tmp_path / f"vit{suffix}")
    model = ours("ape")
    report = load_pretrained(model, path)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(x), ref.forward_features(x),
                                   rtol=1e-5, atol=1e-5)
    assert report.missing == () and report.unexpected == () and report.resampled == ()
    assert report.initialised == ()
    assert set(report.ignored) == {"head.weight", "head.bias"}
    assert "pos_embed.embed" in report.loaded and "blocks.1.attn.qkv.weight" in report.loaded
    assert report.target == ""
    json.dumps(report.to_dict())  # goes into the run record as is


@pytest.mark.parametrize("name", ["rpe", "irpe", "kprpe"])
def test_relative_variants_start_from_timms_function(tmp_path: Path, name: str) -> None:
    """The same file loads into the relative variants; their tables keep their initialisation,
    and with the relative term zeroed they compute timm's tokens."""
    ref = timm_vit()
    path = save(ref.state_dict(), tmp_path / "vit.pth")
    model = ours(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path)
    assert report.initialised  # the relative / keypoint tables
    after = model.state_dict()
    for key in report.initialised:
        assert torch.equal(after[key], before[key]), key
    assert report.missing == () and report.unexpected == ()
    with torch.no_grad():
        for key in report.initialised:
            after[key].zero_()
        x, kp = images(), torch.rand(2, K, 2, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(model.forward_tokens(x, kp), ref.forward_features(x),
                                   rtol=1e-5, atol=1e-5)


def test_poster_image_stream_and_wrapped_models(tmp_path: Path) -> None:
    ref = timm_vit()
    path = save(ref.state_dict(), tmp_path / "vit.pth")
    poster = EmbeddingModel(ours("poster"), DIM)
    report = load_pretrained(poster, path)
    assert report.target == "backbone.image"
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(poster.backbone.image.forward_tokens(x), ref.forward_features(x),
                                   rtol=1e-5, atol=1e-5)


def test_nested_and_prefixed_checkpoints(tmp_path: Path) -> None:
    """``{"model": sd}`` (DeiT), ``{"state_dict": {"module.<key>": ...}}`` (DDP) and extra
    non-tensor entries all read as the same state dict."""
    state = timm_vit().state_dict()
    a = save({"model": state, "epoch": 3}, tmp_path / "deit.pt")
    b = save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "args": "x"},
             tmp_path / "ddp.bin")
    for path in (a, b):
        got = read_state_dict(path)
        assert got.keys() == state.keys()
        assert all(torch.equal(got[k], state[k]) for k in state)


def test_pos_embed_resampled_from_224_to_the_reid_grid(tmp_path: Path) -> None:
    """timm's 224 weights (14x14) into 256x128 with patch 16 (16x8): timm's bicubic resampling of
    the patch slots, the CLS slot kept."""
    ref = timm_vit(img=(224, 224), patch=16)
    path = save(ref.state_dict(), tmp_path / "vit224.pth")
    model = ours("ape", img=(256, 128), patch=16)
    report = load_pretrained(model, path)
    want = resample_abs_pos_embed(ref.pos_embed.detach(), [16, 8], num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.embed.detach(), want, rtol=1e-6, atol=1e-6)
    (entry,) = report.resampled
    assert (entry.key, entry.source_shape, entry.target_shape) == (
        "pos_embed.embed", (1, 197, DIM), (1, 129, DIM))
    assert "14x14 -> 16x8" in entry.how
    assert report.to_dict()["resampled"][0]["from"] == [1, 197, DIM]


def test_non_square_checkpoint_grid_given_as_source_grid(tmp_path: Path) -> None:
    """A re-ID checkpoint on a 4x2 grid into an 8x4 model: read with ``source_grid``."""
    ref = timm_vit(img=(32, 16), patch=8)
    path = save(ref.state_dict(), tmp_path / "reid.pth")
    model = ours("ape", img=(64, 32), patch=8)
    report = load_pretrained(model, path, source_grid=(4, 2))
    want = resample_abs_pos_embed(ref.pos_embed.detach(), [8, 4], old_size=[4, 2],
                                  num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.embed.detach(), want, rtol=1e-6, atol=1e-6)
    assert "grid 4x2 -> 8x4" in report.resampled[0].how
    with pytest.raises(ReidbenchError, match="not the 6 patches of source grid"):
        load_pretrained(model, path, source_grid=(3, 2))


def test_patch_embed_downsampled_16_to_8_as_timm_does(tmp_path: Path) -> None:
    ref = timm_vit(img=(64, 64), patch=16)
    path = save(ref.state_dict(), tmp_path / "p16.pth")
    model = ours("ape", img=(64, 32), patch=8)
    report = load_pretrained(model, path)
    want = resample_patch_embed(ref.patch_embed.proj.weight.detach(), [8, 8])
    torch.testing.assert_close(model.patch_embed.proj.weight.detach(), want, rtol=1e-4, atol=1e-5)
    keys = {r.key: r for r in report.resampled}
    assert keys["patch_embed.proj.weight"].target_shape == (DIM, 3, 8, 8)
    assert "grid 4x4 -> 8x4" in keys["pos_embed.embed"].how


def test_patch_embed_upsampled_keeps_every_patch_response(tmp_path: Path) -> None:
    """Patch 8 -> 16: <resize(x), w'> = <x, w> for any 8x8 patch x (FlexiViT's resize)."""
    ref = timm_vit(img=(32, 16), patch=8)
    path = save(ref.state_dict(), tmp_path / "p8.pth")
    model = ours("ape", img=(64, 32), patch=16)
    load_pretrained(model, path)
    w, w16 = ref.patch_embed.proj.weight.detach(), model.patch_embed.proj.weight.detach()
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x16 = torch.nn.functional.interpolate(x, size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(torch.einsum("ncij,dcij->nd", x16, w16),
                               torch.einsum("ncij,dcij->nd", x, w), rtol=1e-4, atol=1e-4)


def test_deit3_layer_scale_and_no_class_position(tmp_path: Path) -> None:
    """LayerScale folded into the projections; a pos_embed without a CLS slot gives CLS none."""
    ref = timm_vit(init_values=0.5, no_embed_class=True)
    path = save(ref.state_dict(), tmp_path / "deit3.pth")
    model = ours("ape")
    report = load_pretrained(model, path)
    assert sorted(report.folded) == [f"blocks.{i}.ls{j}.gamma" for i in range(DEPTH) for j in (1, 2)]
    assert "CLS slot 0" in report.resampled[0].how
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(x), ref.forward_features(x),
                                   rtol=1e-5, atol=1e-5)


def test_distillation_token_slot_dropped(tmp_path: Path) -> None:
    state = timm_vit().state_dict()
    pe = state["pos_embed"]  # (1, 1 + 8, D)
    state["dist_token"] = torch.randn(1, 1, DIM)
    state["pos_embed"] = torch.cat([pe[:, :1], torch.randn(1, 1, DIM), pe[:, 1:]], dim=1)
    model = ours("ape")
    report = load_pretrained(model, save(state, tmp_path / "deit_distilled.pth"))
    torch.testing.assert_close(model.pos_embed.embed.detach(), pe)
    assert "dist_token" in report.ignored and "dist_token dropped" in report.resampled[0].how


def test_sincos_model_keeps_its_fixed_embedding(tmp_path: Path) -> None:
    model = ours("ape", ape="sincos")
    table = model.pos_embed.embed.clone()
    report = load_pretrained(model, save(timm_vit().state_dict(), tmp_path / "vit.pth"))
    assert torch.equal(model.pos_embed.embed, table)
    assert "sincos" in report.ignored["pos_embed"]


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    state = timm_vit().state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    state["mystery"] = torch.zeros(3)
    with caplog.at_level(logging.WARNING, logger="reidbench.models.pretrained"):
        report = load_pretrained(ours("ape"), save(state, tmp_path / "vit.pth"))
    assert report.missing == ("blocks.1.mlp.fc2.bias",)
    assert report.unexpected == ("mystery",)
    assert "blocks.1.mlp.fc2.bias" in caplog.text and "mystery" in caplog.text


@pytest.mark.parametrize("make,match", [
    (lambda: timm_vit(dim=64).state_dict(), "width .* is 64, the model's is 32"),
    (lambda: timm_vit(depth=3).state_dict(), "3 blocks, the model has 2"),
    (lambda: timm_vit(qk_norm=True).state_dict(), "q_norm.* no counterpart"),
    (lambda: {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)},
     "no ViT keys"),
])
def test_incompatible_checkpoints_are_refused(tmp_path: Path, make, match: str) -> None:  # type: ignore[no-untyped-def]
    model = ours("ape")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ReidbenchError, match=match):
        load_pretrained(model, save(make(), tmp_path / "bad.pth"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))  # would create the marker file when unpickled


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, DIM)}, "payload": _Hostile(marker)}, path)
    with pytest.raises(ReidbenchError, match="refused"):
        load_pretrained(ours("ape"), path)
    assert not marker.exists()


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ReidbenchError, match="unknown file type '.npz'"):
        read_state_dict(tmp_path / "vit.npz")
    with pytest.raises(ReidbenchError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ReidbenchError, match="not a readable safetensors"):
        read_state_dict(junk)


@pytest.mark.parametrize("name", ["ape", "kprpe"])
def test_flatten_head_model_takes_the_patch_slots_and_ignores_the_cls(tmp_path: Path, name: str) -> None:
    """A model without a CLS token (model.head=flatten, the KP-RPE authors' face ViT) loads a
    timm checkpoint: the position embedding's patch slots only, every block, and the CLS token
    ignored with its reason; nothing missing or unexpected. (It raised a shape error before.)"""
    ref = timm_vit()
    path = save(ref.state_dict(), tmp_path / "vit.pth")
    model = ours(name, head="flatten")
    report = load_pretrained(model, path)
    assert report.missing == () and report.unexpected == ()
    assert "model.head=flatten" in report.ignored["cls_token"]
    state = model.state_dict()
    torch.testing.assert_close(state["pos_embed.embed"], ref.pos_embed[:, 1:].detach())
    torch.testing.assert_close(state["blocks.1.attn.qkv.weight"], ref.blocks[1].attn.qkv.weight.detach())
    assert any("no CLS slot" in r.how for r in report.resampled)
