"""What every config value may be: one rule per field, then the rules between fields.

``validate(cfg)`` checks a whole ``RunConfig`` at once (``RunConfig.__post_init__`` calls it, so
every way of making a config is covered: presets, ``--config``, flags, ``--set``, a recorded
``config.yaml``, ``dataclasses.replace``). Every problem is reported in one line naming the key,
the value and what is allowed, before any data is read or any step is trained.

The choice tables below mirror the code that consumes them (samplers, iRPE, size presets,
perturbation severities); ``tests/test_config_validation.py`` checks that they agree, and that
every config field has a rule. Names (datasets, models, losses) are checked against their
registries once those are filled (``registry.load_builtins``, which the CLI calls first); a
library caller that has not loaded them gets the registry's error when the name is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reidbench.errors import ConfigError
from reidbench.registry import DATASETS, LOSSES, MODELS, Registry

if TYPE_CHECKING:
    from reidbench.config import RunConfig

SIZE_NAMES = ("nano", "tiny", "small", "base")
# (embed_dim, depth, num_heads) of each size: reidbench/models/vit.py SIZES
SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "nano": (128, 4, 4), "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
}
SAMPLERS = ("pk", "pk_camera")  # reidbench/data/sampler.py
IRPE_METHODS = ("euclidean", "quant", "cross", "product")  # reidbench/layers/irpe.py
IRPE_MAPPINGS = ("piecewise", "clip")  # reidbench/layers/rel_index.py MAPPINGS
IRPE_MODES = ("bias", "contextual")
ROPE_MODES = ("axial", "mixed")  # reidbench/layers/rope.py
# ViT variants that replace the absolute table, so model.ape must be none (reidbench/models/vit.py)
NO_ABSOLUTE_MODELS = ("rope", "cpe", "nope")
MAX_SEVERITY = 5  # reidbench/data/perturb.py: data.aug_affine is a robustness severity
# registered models built from torchreid CNNs: the ViT fields (patch, width, heads, ape) do not
# apply to them (reidbench/models/cnn.py)
CNN_MODELS = frozenset({"osnet", "resnet50"})
POSITIONAL_LOSSES = ("rp_triplet", "jsd")  # losses that read the ViT's patch relations
PRECISIONS = ("fp32", "bf16", "fp16")  # reidbench/engine/trainer.py AUTOCAST
AUGMENT_RECIPES = ("none", "cvlface")  # reidbench/data/augment.py RECIPES
VIT_HEADS = ("cls", "flatten")  # reidbench/models/vit.py VisionTransformer(head=...)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
FOLDER_PREFIX = "folder:"  # reidbench/datasets/catalog.py


@dataclass(frozen=True)
class Rule:
    """``allowed``: what the error message and the README say; ``ok``: the check; ``message``:
    the error's wording if not the usual ``<key> must be <allowed>, got <value>`` (fields
    ``key``, ``value``, ``allowed``)."""

    allowed: str
    ok: Callable[[Any], bool]
    message: str = "{key} must be {allowed}, got {value!r}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt(x: float) -> str:
    return f"{x:g}"


def integer(low: int, high: int | None = None, text: str | None = None) -> Rule:
    allowed = text or (f"an integer >= {low}" if high is None else f"an integer in {low}..{high}")
    return Rule(allowed, lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, text: str | None = None) -> Rule:
    """A finite number within the bounds (open or closed)."""
    def ok(v: Any) -> bool:
        return (_is_number(v) and math.isfinite(v)
                and (low is None or (v > low if low_open else v >= low))
                and (high is None or (v < high if high_open else v <= high)))

    if text is None:
        if low is not None and high is not None:
            text = (f"a number in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}"
                    f"{')' if high_open else ']'}")
        elif low is not None:
            text = f"a finite number {'>' if low_open else '>='} {_fmt(low)}"
        else:
            text = "a finite number"
    return Rule(text, ok)


def choice(*names: str) -> Rule:
    return Rule("one of " + ", ".join(names), lambda v: v in names)


def optional(rule: Rule) -> Rule:
    return Rule(rule.allowed + " or null", lambda v: v is None or rule.ok(v))


def each(rule: Rule, text: str, count: int | None = None) -> Rule:
    """A tuple whose items all satisfy ``rule`` (exactly ``count`` of them if given)."""
    return Rule(text, lambda v: isinstance(v, tuple) and (count is None or len(v) == count)
                and all(rule.ok(x) for x in v))


def _qkv(v: Any) -> bool:
    return isinstance(v, str) and bool(v) and not set(v) - set("qkv") and len(set(v)) == len(v)


def _dataset_name(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and v != FOLDER_PREFIX


def _loss_terms(v: Any) -> bool:
    return isinstance(v, tuple) and bool(v) and len(set(v)) == len(v) and all(v)


BOOL = Rule("true or false", lambda v: isinstance(v, bool))
PATH = Rule("a non-empty path", lambda v: isinstance(v, str) and bool(v.strip()))
NAME = Rule("a registered name", lambda v: isinstance(v, str) and bool(v.strip()))
PROBABILITY = number(0.0, 1.0)

FIELD_RULES: dict[str, Rule] = {
    "data.name": Rule("a registered dataset name or folder:PATH", _dataset_name),
    "data.root": optional(PATH),
    "data.keypoints": optional(PATH),
    "data.height": integer(1),
    "data.width": integer(1),
    "data.num_instances": integer(1),
    "data.sampler": choice(*SAMPLERS),
    "data.flip_prob": PROBABILITY,
    "data.pad": integer(0),
    "data.erase_prob": PROBABILITY,
    "data.aug_affine": integer(0, MAX_SEVERITY, f"an integer in 0..{MAX_SEVERITY} (a robustness "
                                                "severity; 0 = off)"),
    "data.aug_affine_prob": PROBABILITY,
    "data.augment": choice(*AUGMENT_RECIPES),
    "data.mean": each(number(), "3 finite numbers", 3),
    "data.std": each(number(0.0, low_open=True), "3 finite numbers > 0", 3),
    "data.num_workers": integer(0),
    "data.cache_images": BOOL,
    "data.synth_ids": optional(integer(2)),
    "data.synth_seed": optional(integer(0)),
    "data.synth_train_ids": optional(integer(1)),
    "model.name": NAME,
    "model.size": choice(*SIZE_NAMES),
    "model.patch_size": integer(1),
    "model.embed_dim": optional(integer(1)),
    "model.depth": optional(integer(1)),
    "model.num_heads": optional(integer(1)),
    "model.mlp_ratio": number(0.0, low_open=True),
    "model.drop_path": number(0.0, 1.0, high_open=True),
    "model.ape": choice("learned", "sincos", "none"),
    "model.pretrained": optional(PATH),
    "model.pretrained_grid": Rule("() or 2 integers >= 1 (rows, cols)", lambda v: isinstance(v, tuple)
                                  and len(v) in (0, 2) and all(_is_int(x) and x >= 1 for x in v)),
    "model.rel.ratio": number(0.0, low_open=True),
    "model.rel.method": choice(*IRPE_METHODS),
    "model.rel.mapping": choice(*IRPE_MAPPINGS),
    "model.rel.mode": choice(*IRPE_MODES),
    "model.rel.on": Rule("a non-empty subset of q, k, v (each at most once)", _qkv),
    "model.rel.shared_head": BOOL,
    "model.rel.max_distance": integer(0),
    "model.rel.on_values": BOOL,
    "model.rope.mode": choice(*ROPE_MODES),
    "model.rope.theta": optional(number(0.0, low_open=True)),
    "model.head": choice(*VIT_HEADS),
    "loss.terms": Rule("one or more loss names, none repeated", _loss_terms),
    "loss.weights": each(number(0.0), "finite numbers >= 0"),
    "loss.label_smoothing": number(0.0, 1.0, high_open=True),
    "loss.margin": number(0.0),
    "loss.scale": number(0.0, low_open=True),
    "loss.arc_margin": number(0.0, math.pi / 2, high_open=True, text="a number in [0, pi/2) radians"),
    "loss.cos_margin": number(0.0),
    "loss.ada_margin": number(0.0),
    "loss.ada_h": number(0.0),
    "loss.ada_momentum": number(0.0, 1.0, low_open=True),
    "loss.circle_margin": number(0.0, 1.0),
    "loss.circle_gamma": number(0.0, low_open=True),
    "loss.supcon_temperature": number(0.0, low_open=True),
    "loss.rp_topn": integer(2),
    "loss.rp_layers": Rule("integers (block indices; negative from the end)",
                           lambda v: isinstance(v, tuple) and all(_is_int(x) for x in v)),
    "loss.rp_margin": number(0.0),
    "loss.jsd_temperature": number(0.0, low_open=True),
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.lr": number(0.0, 3.4e38, low_open=True, text="a finite number > 0 (within float32)"),
    "train.weight_decay": number(0.0),
    "train.warmup_epochs": integer(0),
    "train.min_lr_ratio": number(0.0, 1.0),
    "train.grad_clip": optional(number(0.0, low_open=True)),
    "train.seed": integer(0, 2**32 - 1, "an integer in [0, 2^32)"),
    "train.device": Rule("auto, cpu, mps, cuda or cuda:N",
                         lambda v: isinstance(v, str) and DEVICE.fullmatch(v) is not None,
                         "unknown device {value!r} ({key}); expected {allowed}"),
    "train.threads": optional(integer(1)),
    "train.precision": choice(*PRECISIONS),
    "eval.metric": choice("cosine", "euclidean"),
    "eval.max_rank": integer(1),
    "eval.batch_size": integer(1),
    "eval.flip": BOOL,
    "eval.rerank": BOOL,
    "eval.rerank_k1": integer(1),
    "eval.rerank_k2": integer(1),
    "eval.rerank_lambda": PROBABILITY,
    "output": PATH,
}


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _is_vit(cfg: RunConfig) -> bool:
    return cfg.model.name not in CNN_MODELS


def _width_depth_heads(cfg: RunConfig) -> tuple[int, int, int]:
    """The ViT's (embed_dim, depth, num_heads): explicit values over the size preset's."""
    dim, depth, heads = SIZE_PRESETS[cfg.model.size]
    m = cfg.model
    return m.embed_dim or dim, m.depth or depth, m.num_heads or heads


def _registered(registry: Registry[Any], name: str, where: str = "") -> list[str]:
    if not len(registry) or name in registry:
        return []
    return [f"unknown {registry.kind} {name!r}{where}; expected one of: {', '.join(registry.names())}"]


def _names(cfg: RunConfig) -> list[str]:
    problems = [] if cfg.data.name.startswith(FOLDER_PREFIX) else _registered(DATASETS, cfg.data.name)
    problems += _registered(MODELS, cfg.model.name)
    for term in cfg.loss.terms:
        problems += _registered(LOSSES, term, " in loss.terms")
    return problems


def _batch(cfg: RunConfig) -> list[str]:
    b, k = cfg.train.batch_size, cfg.data.num_instances
    if b % k == 0:
        return []
    near = sorted({max(k, b // k * k), (b // k + 1) * k})
    return [f"train.batch_size={b} is not a multiple of data.num_instances={k} (P x K sampling: "
            f"P identities x K images); use e.g. {' or '.join(map(str, near))}"]


def _weights(cfg: RunConfig) -> list[str]:
    terms, weights = cfg.loss.terms, cfg.loss.weights
    if len(terms) != len(weights):
        return [f"loss.weights has {len(weights)} values for the {len(terms)} loss.terms "
                f"({', '.join(terms)}); give one weight per term"]
    if not any(weights):
        return [f"loss.weights={weights} are all 0: nothing would be trained"]
    return []


def _grid(cfg: RunConfig) -> list[str]:
    if not _is_vit(cfg):
        return []
    p = cfg.model.patch_size
    return [f"data.{side}={size} is not a multiple of model.patch_size={p} (ViT patches tile the "
            "input)" for side, size in (("height", cfg.data.height), ("width", cfg.data.width))
            if size % p]


def _heads(cfg: RunConfig) -> list[str]:
    if not _is_vit(cfg):
        return []
    dim, _, heads = _width_depth_heads(cfg)
    problems = []
    if dim % heads:
        problems.append(f"model.embed_dim={dim} is not divisible by model.num_heads={heads} "
                        f"(model.size={cfg.model.size}; set both, e.g. model.num_heads="
                        f"{max(h for h in range(1, heads + 1) if dim % h == 0)})")
    if cfg.model.ape == "sincos" and dim % 4:
        problems.append(f"model.ape=sincos needs model.embed_dim divisible by 4, got {dim}")
    if cfg.model.name == "poster" and cfg.model.ape == "none":
        problems.append("model.ape='none' is not supported by poster; expected learned or sincos")
    return problems


def _irpe(cfg: RunConfig) -> list[str]:
    rel = cfg.model.rel
    if rel.mode == "bias" and "v" in rel.on:
        return [f"model.rel.mode=bias applies to q and k only, got model.rel.on={rel.on!r}; use "
                "model.rel.mode=contextual for an encoding on values"]
    return []


def _no_absolute(cfg: RunConfig) -> list[str]:
    name, problems = cfg.model.name, []
    if name in NO_ABSOLUTE_MODELS and cfg.model.ape != "none":
        problems.append(f"model.ape={cfg.model.ape} does not apply to {name}, which has no absolute "
                        f"position table; leave model.ape at none (the {name} preset) or use "
                        "model.name=ape")
    dim, _, heads = _width_depth_heads(cfg)
    if name == "rope" and dim % heads == 0 and (dim // heads) % 4:
        problems.append(f"model.name=rope needs a head width (embed_dim / num_heads) divisible by "
                        f"4, got {dim} / {heads} = {dim // heads}")
    return problems


def _positional(cfg: RunConfig) -> list[str]:
    if not _is_vit(cfg) or not set(cfg.loss.terms) & set(POSITIONAL_LOSSES):
        return []
    rows, cols = cfg.data.height // cfg.model.patch_size, cfg.data.width // cfg.model.patch_size
    _, depth, _ = _width_depth_heads(cfg)
    problems = []
    if cfg.loss.rp_topn > rows * cols:
        problems.append(f"loss.rp_topn={cfg.loss.rp_topn} exceeds the {rows * cols} patches of the "
                        f"{rows}x{cols} grid")
    if any(not -depth <= i < depth for i in cfg.loss.rp_layers):
        problems.append(f"loss.rp_layers={cfg.loss.rp_layers} must lie in [-{depth}, {depth}) for "
                        f"model.depth={depth}")
    return problems


def _augment(cfg: RunConfig) -> list[str]:
    if cfg.data.augment != "none" and cfg.data.aug_affine:
        return [f"data.augment={cfg.data.augment} has its own geometry; it cannot be combined with "
                f"data.aug_affine={cfg.data.aug_affine} (set data.aug_affine=0)"]
    return []


def _head(cfg: RunConfig) -> list[str]:
    if cfg.model.head == "cls":
        return []
    if not _is_vit(cfg) or cfg.model.name == "poster":
        return [f"model.head={cfg.model.head} applies to the ViT variants only, not "
                f"{cfg.model.name}; use model.head=cls"]
    if set(cfg.loss.terms) & set(POSITIONAL_LOSSES):
        return [f"loss.terms {', '.join(POSITIONAL_LOSSES)} rank patches by their similarity to "
                f"the CLS token, which model.head={cfg.model.head} does not have; use model.head=cls"]
    return []


@dataclass(frozen=True)
class WholeRule:
    keys: tuple[str, ...]
    allowed: str
    check: Callable[[RunConfig], list[str]]


WHOLE_RULES: tuple[WholeRule, ...] = (
    WholeRule(("data.name", "model.name", "loss.terms"), "registered names (`reidbench data list`, "
              "`reidbench models`, `reidbench/losses`)", _names),
    WholeRule(("train.batch_size", "data.num_instances"),
              "the batch is P identities x K images: batch_size a multiple of num_instances", _batch),
    WholeRule(("loss.weights", "loss.terms"), "one weight per term, not all 0", _weights),
    WholeRule(("data.height", "data.width", "model.patch_size"),
              "ViTs (every model but the CNNs osnet, resnet50): height and width multiples of "
              "the patch size", _grid),
    WholeRule(("model.embed_dim", "model.num_heads", "model.size", "model.ape"),
              "ViTs: the width (embed_dim, else the size's) divisible by the heads; sincos needs it "
              "divisible by 4; poster needs an absolute embedding", _heads),
    WholeRule(("model.rel.mode", "model.rel.on"), "bias mode on q and k only", _irpe),
    WholeRule(("model.name", "model.ape"), f"{', '.join(NO_ABSOLUTE_MODELS)}: model.ape none (they "
              "replace the absolute table); rope: head width divisible by 4", _no_absolute),
    WholeRule(("loss.rp_topn", "loss.rp_layers"), "with rp_triplet or jsd on a ViT: rp_topn at most "
              "the patches of the grid, rp_layers in [-depth, depth)", _positional),
    WholeRule(("data.augment", "data.aug_affine"), "a recipe other than none needs data.aug_affine=0",
              _augment),
    WholeRule(("model.head", "model.name", "loss.terms"), "flatten: ViT variants only (not poster or "
              "the CNNs), without rp_triplet or jsd", _head),
)


def problems(cfg: RunConfig) -> list[str]:
    """Every problem of ``cfg``, one sentence each; the rules between fields are checked once
    every field is valid on its own."""
    found = []
    for key, rule in FIELD_RULES.items():
        value = _get(cfg, key)
        if not rule.ok(value):
            found.append(rule.message.format(key=key, value=value, allowed=rule.allowed))
    if not found:
        for whole in WHOLE_RULES:
            found += whole.check(cfg)
    return found


def validate(cfg: RunConfig) -> RunConfig:
    """``cfg`` unchanged, or a ConfigError listing every problem on one line."""
    found = problems(cfg)
    if len(found) == 1:
        raise ConfigError(found[0])
    if found:
        raise ConfigError(f"{len(found)} config errors: " + "; ".join(found))
    return cfg


def rules_table() -> str:
    """The rules as a markdown table (the README's configuration section)."""
    lines = ["| key | allowed |", "|---|---|"]
    lines += [f"| `{key}` | {rule.allowed} |" for key, rule in FIELD_RULES.items()]
    lines += [f"| {', '.join(f'`{k}`' for k in w.keys)} | {w.allowed} |" for w in WHOLE_RULES]
    return "\n".join(lines) + "\n"
