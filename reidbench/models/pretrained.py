"""Load timm / DeiT / ViT checkpoints into reidbench's ViTs (ape, rpe, irpe, kprpe, poster's image
stream), the way timm's ``checkpoint_filter_fn`` adapts a checkpoint to a model.

A checkpoint is a local file (``.pth``, ``.pt``, ``.bin``: a torch file read with
``weights_only=True``; ``.safetensors``), holding a state dict bare or nested under ``model``
and/or ``state_dict`` (a ``module.`` prefix from DDP is dropped). Its keys are timm's
``VisionTransformer`` names, which are reidbench's too (same pre-norm block, fused ``qkv``,
LayerNorm eps 1e-6, exact GELU), except the absolute embedding: timm's ``pos_embed`` is
reidbench's ``pos_embed.embed``. What is adapted:

- ``pos_embed``: the patch part is resampled to the model's grid (bicubic with antialiasing on the
  2D grid, as timm's ``resample_abs_pos_embed``). A checkpoint does not store its grid: it is
  ``source_grid`` when given, else the model's grid when the token counts match, else square
  (first with one slot per prefix token, then without). A checkpoint trained on a non-square
  grid other than the model's therefore needs ``source_grid`` (e.g. (24, 12) for 384x192 input
  and patch 16, whose 1 + 288 tokens would otherwise read as 17x17 patches without a CLS slot;
  the report says how it was read). The CLS slot is kept (dropped, with ``cls_token``, for a
  model without a CLS token: ``model.head=flatten``); slots of other prefix tokens (DeiT's
  distillation token, registers) are dropped; a checkpoint that adds no position to its CLS token
  (timm ``no_embed_class``, DeiT-III) gives a zero CLS slot, which is the same function.
- ``patch_embed.proj.weight``: resampled to the model's patch size when it differs, with
  FlexiViT's pseudo-inverse resize (timm's ``resample_patch_embed``): the new kernel w' minimises
  |R^T w' - w| for R the bicubic resize of a patch, so that upsampled patches give the same
  responses (exactly, when the new patch is larger).
- LayerScale (``ls1.gamma``/``ls2.gamma``, or DeiT-III's ``gamma_1``/``gamma_2``) is folded into
  the attention projection and the second MLP layer: gamma * (W x + b) = (gamma W) x + gamma b.

Relative and keypoint tables (iRPE, Shaw, KP-RPE) have no counterpart in a plain ViT and keep their
initialisation. The classifier head and DeiT's distillation/register tokens are ignored, with the
reason recorded. A checkpoint whose blocks hold parameters reidbench's block does not have
(qk-norm, SwiGLU, a pre-norm before the blocks), a different width, depth, MLP width or input
channels raises a ReidbenchError saying what differs. The heads count is not stored in a
checkpoint: the model must be built with the checkpoint's (ViT-S: 6, ViT-B: 12).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.fileio import load_torch_file
from reidbench.models.vit import VisionTransformer

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_NESTING = ("model", "state_dict")
_PREFIXES = ("module.", "_orig_mod.")
# per-block parameters of a timm VisionTransformer that reidbench's Block has under the same name
_BLOCK_PARAMS = tuple(f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                             "mlp.fc2") for p in ("weight", "bias"))
_LAYER_SCALE = re.compile(r"^blocks\.(\d+)\.(?:ls([12])\.gamma|gamma_([12]))$")
_IGNORED = {  # checkpoint key prefix -> why it is not loaded
    "head.": "classifier head (re-ID heads sit outside the backbone)",
    "head_dist.": "DeiT distillation head",
    "pre_logits.": "pre-logits layer of the classifier",
    "fc_norm.": "timm's norm of average-pooled features; reidbench's ViT embeds the normed CLS "
                "token (the final norm)",
    "dist_token": "DeiT distillation token; reidbench's ViT has the CLS token only",
    "reg_token": "register tokens; reidbench's ViT has the CLS token only",
}


@dataclass(frozen=True)
class Resampled:
    """A checkpoint tensor adapted to the model: its model key, shapes and how."""

    key: str
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "from": list(self.source_shape), "to": list(self.target_shape),
                "how": self.how}


@dataclass(frozen=True)
class PretrainedReport:
    """What ``load_pretrained`` did; ``to_dict`` is the run record's ``pretrained`` entry.

    Keys of the model are relative to ``target``, the ViT inside the model ("" for a bare ViT,
    "backbone" in an EmbeddingModel, "backbone.image" for poster).
    """

    path: str
    sha256: str  # of the file, so that a record names the exact weights it started from
    target: str
    loaded: tuple[str, ...]  # model keys set from the checkpoint (resampled/folded ones included)
    resampled: tuple[Resampled, ...] = ()
    folded: tuple[str, ...] = ()  # checkpoint keys folded into other weights (LayerScale)
    missing: tuple[str, ...] = ()  # ViT keys a timm checkpoint provides that this one lacks: kept init
    initialised: tuple[str, ...] = ()  # position-encoding tables with no counterpart: kept init
    ignored: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why not loaded
    unexpected: tuple[str, ...] = ()  # checkpoint keys that mean nothing to this model

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "sha256": self.sha256, "target": self.target,
            "loaded": list(self.loaded), "resampled": [r.to_dict() for r in self.resampled],
            "folded": list(self.folded), "missing": list(self.missing),
            "initialised": list(self.initialised), "ignored": dict(self.ignored),
            "unexpected": list(self.unexpected),
        }

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"{len(self.loaded)} tensors loaded from {Path(self.path).name} "
                 f"(sha256 {self.sha256[:12]})"]
        parts += [f"{r.key} {list(r.source_shape)} -> {list(r.target_shape)} ({r.how})"
                  for r in self.resampled]
        for name in ("folded", "missing", "initialised", "unexpected"):
            if getattr(self, name):
                parts.append(f"{len(getattr(self, name))} {name}")
        if self.ignored:
            parts.append(f"ignored: {', '.join(sorted(self.ignored))}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unnested and without a DDP/compile prefix.

    ``.pth``/``.pt``/``.bin`` are read with ``torch.load(weights_only=True)`` (a file that needs
    arbitrary unpickling is refused), ``.safetensors`` with the safetensors package.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ReidbenchError(f"pretrained weights {path}: unknown file type {path.suffix!r}; "
                             f"expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ReidbenchError(f"pretrained weights {path}: no such file (weights are never "
                             "downloaded: give the path of a local checkpoint)")
    obj: Any
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ReidbenchError(f"pretrained weights {path}: reading .safetensors needs the "
                                 "safetensors package (pip install safetensors)") from None
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # the package's own error types vary by version
            raise ReidbenchError(f"pretrained weights {path}: not a readable safetensors file "
                                 f"({_first_line(exc)})") from None
    else:
        try:
            obj = load_torch_file(path)
        except Exception as exc:  # UnpicklingError for unsafe pickles, RuntimeError for junk
            raise ReidbenchError(
                f"pretrained weights {path}: refused: not a plain tensor checkpoint readable with "
                f"torch.load(weights_only=True) ({_first_line(exc)}); convert it to .safetensors "
                "or a state dict of tensors") from None
    for key in _NESTING:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ReidbenchError(f"pretrained weights {path}: expected a state dict (a mapping of "
                             f"names to tensors), got {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ReidbenchError(f"pretrained weights {path}: holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_vit(model: nn.Module) -> tuple[str, VisionTransformer]:
    """(module path, the first reidbench ``VisionTransformer`` in ``model``), or ReidbenchError."""
    for name, module in model.named_modules():
        if isinstance(module, VisionTransformer):
            return name, module
    raise ReidbenchError(f"{type(model).__name__} has no reidbench VisionTransformer: pretrained "
                         "ViT weights load into ape, rpe, irpe, kprpe and poster")


def resample_pos_embed(
    posemb: torch.Tensor, source_grid: tuple[int, int], target_grid: tuple[int, int]
) -> torch.Tensor:
    """(1, rows * cols, C) patch position embeddings on ``source_grid`` -> (1, rows' * cols', C)
    on ``target_grid``: bicubic with antialiasing on the 2D grid, computed in fp32 (timm's
    ``resample_abs_pos_embed`` without the prefix tokens)."""
    if tuple(source_grid) == tuple(target_grid):
        return posemb
    dim, dtype = posemb.shape[-1], posemb.dtype
    grid = posemb.float().reshape(1, *source_grid, dim).permute(0, 3, 1, 2)  # (1, C, rows, cols)
    out = F.interpolate(grid, size=tuple(target_grid), mode="bicubic", antialias=True,
                        align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)


def resample_patch_kernel(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C_out, C_in, h, w) patch-embedding kernel -> (C_out, C_in, *size) by FlexiViT's
    pseudo-inverse resize (timm's ``resample_patch_embed``).

    With R the (h' w', h w) matrix of the bicubic (antialiased) resize of one patch, the new kernel
    is w' = pinv(R^T) w: the least-squares solution of R^T w' = w, exact when the new patch is at
    least as large, so that ``<resize(x), w'> = <x, w>`` for every patch x.
    """
    old = tuple(weight.shape[-2:])
    if old == tuple(size):
        return weight
    n = old[0] * old[1]
    basis = torch.eye(n, dtype=torch.float32).reshape(n, 1, *old)
    resized = F.interpolate(basis, size=tuple(size), mode="bicubic", antialias=True,
                            align_corners=False)  # (h w, 1, h', w'): row i is R e_i
    r_t = resized.reshape(n, -1)  # R^T, (h w, h' w')
    pinv = torch.linalg.pinv(r_t.double())  # (h' w', h w)
    c_out, c_in = weight.shape[:2]
    flat = weight.double().reshape(c_out * c_in, n)
    return (flat @ pinv.T).reshape(c_out, c_in, *size).to(weight.dtype)


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


class _Converter:
    """Maps one checkpoint onto one ViT (see the module docstring); fills the report's lists."""

    def __init__(self, state: dict[str, torch.Tensor], vit: VisionTransformer,
                 source_grid: tuple[int, int] | None, path: Path) -> None:
        self.state, self.vit, self.source_grid, self.path = state, vit, source_grid, path
        self.model_state = vit.state_dict()
        self.out: dict[str, torch.Tensor] = {}
        self.resampled: list[Resampled] = []
        self.folded: list[str] = []
        self.ignored: dict[str, str] = {}
        self.unexpected: list[str] = []

    def error(self, message: str) -> ReidbenchError:
        return ReidbenchError(f"pretrained weights {self.path}: {message}")

    def convert(self) -> None:
        self._check_is_vit()
        self._check_width_and_depth()
        gammas: dict[tuple[int, str], str] = {}  # (block, "1" attention | "2" MLP) -> key
        for key, value in self.state.items():
            scale = _LAYER_SCALE.match(key)
            if scale:
                gammas[(int(scale[1]), scale[2] or scale[3])] = key
            elif key in ("pos_embed", "pos_embed.embed"):  # timm's name, reidbench's
                self._pos_embed(key, value)
            elif key == "patch_embed.proj.weight":
                self._patch_kernel(value)
            elif key == "cls_token" and self.vit.cls_token is None:
                self.ignored[key] = "the model has no CLS token (model.head=flatten)"
            elif any(key.startswith(p) for p in _IGNORED):
                self.ignored[key] = next(r for p, r in _IGNORED.items() if key.startswith(p))
            elif key.startswith(("blocks.", "norm_pre.")) and key not in self.model_state:
                raise self.error(
                    f"{key} has no counterpart in reidbench's ViT block (pre-norm attention and "
                    "MLP, fused qkv, no qk-norm, no pre-norm before the blocks): the checkpoint's "
                    "architecture differs; only plain timm/DeiT ViTs load")
            elif key in self.model_state:
                self._copy(key, value)
            else:
                self.unexpected.append(key)
        for (block, which), key in sorted(gammas.items()):
            self._fold(block, which, key)

    def _check_is_vit(self) -> None:
        markers = ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight")
        if not any(m in self.state for m in markers):
            sample = ", ".join(sorted(self.state)[:5])
            raise self.error(f"no ViT keys (expected timm VisionTransformer names such as "
                             f"{' and '.join(markers)}); found {len(self.state)} tensors such as "
                             f"{sample}")

    def _check_width_and_depth(self) -> None:
        width = next((self.state[k].shape[0] for k in ("patch_embed.proj.weight", "norm.weight")
                      if k in self.state), None)
        if width is not None and width != self.vit.embed_dim:
            raise self.error(f"checkpoint width (embed_dim) is {width}, the model's is "
                             f"{self.vit.embed_dim}: build the model with model.embed_dim={width} "
                             "(or the matching model.size) and its number of heads")
        blocks = {int(m[1]) for k in self.state if (m := re.match(r"blocks\.(\d+)\.", k))}
        depth = len(self.vit.blocks)
        if blocks and max(blocks) + 1 != depth:
            raise self.error(f"checkpoint has {max(blocks) + 1} blocks, the model has {depth}: "
                             f"build it with model.depth={max(blocks) + 1}")

    def _copy(self, key: str, value: torch.Tensor) -> None:
        want = self.model_state[key].shape
        if value.shape != want:
            raise self.error(f"{key} has shape {list(value.shape)} but the model's is {list(want)} "
                             "(a different MLP width or qkv layout?)")
        self.out[key] = value

    def _pos_embed(self, name: str, value: torch.Tensor) -> None:
        pe = self.vit.pos_embed
        if pe is None or pe.kind != "learned":
            kind = "none" if pe is None else pe.kind
            self.ignored[name] = (f"the model's absolute embedding is {kind!r} (model.ape), "
                                  "not learned")
            return
        key = "pos_embed.embed"
        target = self.model_state[key]
        if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != target.shape[2]:
            raise self.error(f"pos_embed has shape {list(value.shape)}; expected (1, tokens, "
                             f"{target.shape[2]})")
        prefix = self._prefix_names()
        source_grid, with_prefix = self._source_grid(value.shape[1], len(prefix))
        patches = value[:, len(prefix):] if with_prefix else value
        resampled = resample_pos_embed(patches, source_grid, self.vit.grid)
        no_cls = self.vit.cls_token is None  # model.head=flatten
        if no_cls:
            cls, cls_how = value[:, :0], "no CLS slot (the model has no CLS token: model.head=flatten)"
        elif with_prefix and prefix[0] == "cls_token":
            cls, cls_how = value[:, :1], "CLS slot kept"
        else:
            cls = value.new_zeros(1, 1, value.shape[2])
            cls_how = ("CLS slot 0 (read as patches only: the checkpoint adds no position to its "
                       "CLS token; give source_grid if its grid was not square)")
        dropped = prefix[1:] if with_prefix else []
        self.out[key] = torch.cat([cls, resampled], dim=1)
        if source_grid != self.vit.grid or not with_prefix or dropped or no_cls:
            how = [f"grid {source_grid[0]}x{source_grid[1]} -> {self.vit.grid[0]}x{self.vit.grid[1]}"
                   + (" (bicubic, antialiased)" if source_grid != self.vit.grid else ""), cls_how]
            if dropped:
                how.append(f"slots of {', '.join(dropped)} dropped")
            self.resampled.append(Resampled(key, tuple(value.shape), tuple(target.shape),
                                            "; ".join(how)))

    def _prefix_names(self) -> list[str]:
        """The checkpoint's prefix tokens in timm's order: CLS, distillation, registers."""
        names = [n for n in ("cls_token", "dist_token") if n in self.state]
        if "reg_token" in self.state:
            names += [f"reg_token[{i}]" for i in range(self.state["reg_token"].shape[1])]
        return names

    def _source_grid(self, tokens: int, prefix: int) -> tuple[tuple[int, int], bool]:
        """(the checkpoint's patch grid, whether pos_embed has slots for the prefix tokens)."""
        model_n = self.vit.grid[0] * self.vit.grid[1]
        if self.source_grid is not None:
            n = self.source_grid[0] * self.source_grid[1]
            if tokens - n not in (0, prefix):
                raise self.error(f"pos_embed has {tokens} tokens, which is not the {n} patches of "
                                 f"source grid {self.source_grid} plus 0 or {prefix} prefix tokens")
            return (self.source_grid[0], self.source_grid[1]), tokens - n == prefix > 0
        for n_prefix in dict.fromkeys((prefix, 0)):  # prefix slots first, as timm assumes
            n = tokens - n_prefix
            if n == model_n:
                return self.vit.grid, n_prefix > 0
            if _is_square(n):
                side = math.isqrt(n)
                return (side, side), n_prefix > 0
        raise self.error(f"cannot tell the patch grid of pos_embed ({tokens} tokens, {prefix} "
                         "prefix tokens): not the model's grid and not square; give the "
                         "checkpoint's grid (source_grid=(rows, cols))")

    def _patch_kernel(self, value: torch.Tensor) -> None:
        key = "patch_embed.proj.weight"
        target = self.model_state[key].shape
        if value.ndim != 4:
            raise self.error(f"{key} has shape {list(value.shape)}; expected a 4D conv kernel")
        if value.shape[1] != target[1]:
            raise self.error(f"{key} takes {value.shape[1]} input channels, the model "
                             f"{target[1]}")
        if value.shape[2:] != target[2:]:
            self.out[key] = resample_patch_kernel(value, tuple(target[2:]))
            self.resampled.append(Resampled(
                key, tuple(value.shape), tuple(target),
                f"patch {value.shape[2]}x{value.shape[3]} -> {target[2]}x{target[3]} "
                "(pseudo-inverse of the bicubic patch resize)"))
        else:
            self.out[key] = value

    def _fold(self, block: int, which: str, key: str) -> None:
        """gamma * (W x + b) = (gamma W) x + gamma b, into the attention projection ("1") or the
        second MLP layer ("2") of ``block``."""
        layer = f"blocks.{block}.{'attn.proj' if which == '1' else 'mlp.fc2'}"
        for suffix in (".weight", ".bias"):
            if layer + suffix not in self.out:
                raise self.error(f"{key} (LayerScale) without {layer + suffix} to fold it into")
        gamma = self.state[key]
        if gamma.shape != (self.vit.embed_dim,):
            raise self.error(f"{key} has shape {list(gamma.shape)}; expected "
                             f"[{self.vit.embed_dim}]")
        g = gamma.to(self.out[layer + ".weight"].dtype)
        self.out[layer + ".weight"] = self.out[layer + ".weight"] * g[:, None]
        self.out[layer + ".bias"] = self.out[layer + ".bias"] * g
        self.folded.append(key)


def expected_keys(vit: VisionTransformer) -> list[str]:
    """The ViT's state-dict keys that a timm ViT checkpoint provides; the others (relative and
    keypoint tables) have no counterpart."""
    keys = ["cls_token"] if vit.cls_token is not None else []
    keys += ["patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    if vit.pos_embed is not None and vit.pos_embed.kind == "learned":
        keys.append("pos_embed.embed")
    keys += [f"blocks.{i}.{p}" for i in range(len(vit.blocks)) for p in _BLOCK_PARAMS]
    return keys


def load_pretrained(
    model: nn.Module, path: str | Path, source_grid: tuple[int, int] | None = None
) -> PretrainedReport:
    """Load a timm / DeiT / ViT checkpoint into the ViT inside ``model`` (in place).

    Args:
        model: a reidbench ViT, poster, or a module holding one (an EmbeddingModel).
        path: local checkpoint file (see ``read_state_dict``).
        source_grid: (rows, cols) of the checkpoint's position embeddings, when they are neither
            square nor the model's grid.

    Returns:
        The report of what was loaded, resampled, folded, ignored, missing or unexpected; also
        logged (a warning for missing and unexpected keys).
    """
    path = Path(path)
    state = read_state_dict(path)
    target, vit = find_vit(model)
    conv = _Converter(state, vit, source_grid, path)
    conv.convert()
    params = vit.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in conv.out.items():
            params[key].copy_(value)
    expected = expected_keys(vit)
    report = PretrainedReport(
        path=str(path), sha256=file_sha256(path), target=target,
        loaded=tuple(k for k in params if k in conv.out),
        resampled=tuple(conv.resampled), folded=tuple(conv.folded),
        missing=tuple(k for k in expected if k not in conv.out),
        initialised=tuple(k for k in params if k not in expected and k not in conv.out),
        ignored=conv.ignored, unexpected=tuple(conv.unexpected),
    )
    log.info("pretrained: %s", report.summary())
    if report.missing:
        log.warning("pretrained: %s lacks %d ViT tensors, left at their initialisation: %s",
                    path.name, len(report.missing), ", ".join(report.missing))
    if report.unexpected:
        log.warning("pretrained: %s has %d tensors this model does not use: %s", path.name,
                    len(report.unexpected), ", ".join(report.unexpected))
    return report
