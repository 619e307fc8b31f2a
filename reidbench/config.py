"""Frozen run configuration, filled from layered YAML files and ``--set a.b=v`` overrides.

Layers, later wins: dataclass defaults < ``configs/base.yaml`` < ``configs/datasets/<dataset>.yaml``
< ``configs/models/<model>.yaml`` < ``--config FILE.yaml`` < CLI flags < ``--set``, the presets
being the package's own ``reidbench/configs/`` (package data: a wheel ships them). An empty
section in a layer (``train:`` with nothing under it) changes nothing. Every RunConfig is
validated as a whole when it is made (``reidbench/config_rules.py``). Only ``build_*`` functions
read a config; components take explicit arguments.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reidbench.config_rules import SIZE_NAMES, validate
from reidbench.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # the presets, shipped in the package


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic-reid"  # registered dataset name (`reidbench data list`)
    root: str | None = None  # data root; None -> $REIDBENCH_DATA, else ./datasets
    keypoints: str | None = None  # keypoint sidecar CSV replacing the dataset's own
    height: int = 128  # model input height, pixels
    width: int = 64  # model input width, pixels
    num_instances: int = 4  # K of the P x K sampler (P = batch_size / K)
    sampler: str = "pk"  # pk (identity-balanced) | pk_camera (an identity's K images across its cameras)
    flip_prob: float = 0.5  # horizontal flip (keypoints mirrored, left/right swapped)
    pad: int = 4  # random translation of up to +-pad pixels (pad-and-crop)
    erase_prob: float = 0.0  # random erasing probability
    aug_affine: int = 0  # random similarity on image + keypoints: the robustness "affine" range at
    #   this severity (0-5, reidbench/data/perturb.py); 0 = off (the default recipe)
    aug_affine_prob: float = 1.0  # probability of that similarity per training image
    augment: str = "none"  # training recipe (reidbench/data/augment.py): none | cvlface (the KP-RPE
    #   authors' scale/rotation/shift/flip with keypoints moved, cutout, blur, photometric); a
    #   recipe replaces flip_prob, pad and aug_affine with its own geometry
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # normalisation mean (RGB)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)  # normalisation std (RGB)
    num_workers: int = 0  # DataLoader workers; 0 decodes in the main process
    cache_images: bool = True  # keep decoded images in memory after first use
    synth_ids: int | None = None  # synthetic sets: number of identities (None = generator default)
    synth_seed: int | None = None  # synthetic sets: generator seed (None: any existing set, else 0)
    synth_train_ids: int | None = None  # synthetic-faces: training identities (None = default)


@dataclass(frozen=True)
class RelPosConfig:
    """Relative position encodings: iRPE, KP-RPE (ratio) and Shaw RPE (max_distance, on_values)."""

    ratio: float = 1.9  # iRPE/KP-RPE: alpha:beta:gamma = 1:2:8 times ratio
    method: str = "product"  # iRPE: euclidean | quant | cross | product
    mapping: str = "piecewise"  # iRPE: piecewise | clip
    mode: str = "contextual"  # iRPE: bias | contextual
    on: str = "k"  # iRPE: any of q, k, v
    shared_head: bool = True  # iRPE/Shaw: one table for all heads
    max_distance: int = 4  # Shaw RPE: row/column offsets clipped to [-k, k]
    on_values: bool = False  # Shaw RPE: also add relative embeddings to values


@dataclass(frozen=True)
class RopeConfig:
    """2D rotary position embedding (model ``rope``, reidbench/layers/rope.py)."""

    mode: str = "axial"  # axial (fixed x and y frequencies) | mixed (learned per head and block)
    theta: float | None = None  # frequency base; None = the reference's (100 axial, 10 mixed)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "ape"  # registered model name (`reidbench models`)
    size: str = "nano"  # nano | tiny | small | base (width/depth/heads presets)
    patch_size: int = 8  # square patch side, pixels
    embed_dim: int | None = None  # overrides the size preset
    depth: int | None = None  # overrides the size preset
    num_heads: int | None = None  # overrides the size preset
    mlp_ratio: float = 4.0  # MLP hidden width / embed_dim
    drop_path: float = 0.0  # stochastic depth rate at the last block
    ape: str = "learned"  # absolute embedding: learned | sincos | none (kept by every ViT variant)
    pretrained: str | None = None  # timm/DeiT/ViT checkpoint (.pth .pt .bin .safetensors) loaded
    #   into the ViT before training (reidbench/models/pretrained.py); None = random init
    pretrained_grid: tuple[int, ...] = ()  # (rows, cols) of the checkpoint's position grid when
    #   it is neither square nor the model's; () = infer
    rel: RelPosConfig = field(default_factory=RelPosConfig)  # relative encodings' settings
    rope: RopeConfig = field(default_factory=RopeConfig)  # rotary encoding's settings
    head: str = "cls"  # ViT embedding: cls (the CLS token's output) | flatten (no CLS token; all
    #   patch tokens flattened into Linear-BN-Linear, as the KP-RPE authors' face ViT)


@dataclass(frozen=True)
class LossConfig:
    """Training objectives, combined as sum_i weights[i] * terms[i] (each term logged on its own).

    Registered names (``reidbench.losses``): ``ce`` (label-smoothed cross-entropy on the BN-neck
    feature), ``triplet`` (batch-hard, on the feature before the neck), ``arcface``, ``cosface``,
    ``adaface`` (cosine-margin classifiers on the neck feature, replacing ``ce``), ``circle`` and
    ``supcon`` (pair losses on the feature before the neck), ``rp_triplet`` (relative-position
    triplet) and ``jsd`` (Jensen-Shannon positional loss); the last two need a ViT with absolute
    embeddings and/or a per-pair relative bias (see ``reidbench.losses.positional``).
    """

    terms: tuple[str, ...] = ("ce", "triplet")  # loss names, summed with `weights`
    weights: tuple[float, ...] = (1.0, 1.0)  # one weight per term
    label_smoothing: float = 0.1  # cross-entropy label smoothing (ce only)
    margin: float = 0.3  # triplet margin; 0 selects the soft-margin form log(1 + exp(d_ap - d_an))
    scale: float = 64.0  # s of the cosine-margin heads: logits = s * (margined) cosine
    arc_margin: float = 0.5  # ArcFace additive angular margin m (radians): cos(theta_y + m)
    cos_margin: float = 0.35  # CosFace additive cosine margin m: cos(theta_y) - m
    ada_margin: float = 0.4  # AdaFace margin m, scaled per sample by its feature-norm quality
    ada_h: float = 0.333  # AdaFace h: the normalised norm (|z| - mean) / std * h is clipped to [-1, 1]
    ada_momentum: float = 0.01  # AdaFace EMA momentum of the batch mean / std of feature norms
    circle_margin: float = 0.25  # Circle loss relaxation m (optima 1 - m and m, margins 1 - m and m)
    circle_gamma: float = 128.0  # Circle loss scale gamma
    supcon_temperature: float = 0.1  # SupCon temperature tau on cosine similarities
    rp_topn: int = 8  # rp_triplet / jsd: N patches most similar to CLS -> N (N - 1) / 2 relations
    rp_layers: tuple[int, ...] = ()  # () = relative bias averaged over heads and layers; else these
    #   layers (negative counts from the end), each averaged over heads, relations concatenated
    rp_margin: float = 0.3  # rp_triplet margin on relation vectors; 0 selects the soft-margin form
    jsd_temperature: float = 1.0  # jsd: relation vectors -> softmax(R / temperature) distributions


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12  # training epochs
    batch_size: int = 64  # images per batch (P x K)
    lr: float = 5e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # AdamW weight decay (not on norms, biases, embeddings)
    warmup_epochs: int = 1  # linear warm-up, then cosine decay
    min_lr_ratio: float = 0.01  # final lr / peak lr
    grad_clip: float | None = 5.0  # max global gradient norm; None disables
    seed: int = 0  # seeds model init, sampler and augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of the forward pass (losses in fp32);
    #   fp16 adds a gradient scaler


@dataclass(frozen=True)
class EvalConfig:
    metric: str = "cosine"  # cosine | euclidean
    max_rank: int = 50  # CMC length
    batch_size: int = 128  # feature-extraction batch
    flip: bool = False  # flip test: add the features of the mirrored image (keypoints mirrored too)
    rerank: bool = False  # re-ID: k-reciprocal re-ranking (Zhong et al. 2017) before the metrics
    rerank_k1: int = 20  # re-ranking: k of the k-reciprocal neighbour sets
    rerank_k2: int = 6  # re-ranking: neighbours averaged by local query expansion (1 = none)
    rerank_lambda: float = 0.3  # re-ranking: weight of the original distance (1 - of the Jaccard)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. Validated as a whole on construction (``validate``), so a config
    that cannot train, or cannot be evaluated at the end, never exists."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: str = "results/runs"  # folder that receives <run-id>/

    def __post_init__(self) -> None:
        validate(self)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe dict (tuples become lists)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def flat_settings(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted setting -> value (``{"train": {"lr": 1}}`` ->
    ``{"train.lr": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, section by section. An empty section in ``update`` (``train:``
    with nothing under it, YAML null) changes nothing: it never drops the section below it. A
    null leaf (``grad_clip: null``) is a value like any other."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(out.get(key), dict) and value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a UTF-8 YAML file; ConfigError (one line) for anything else."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; expected a YAML file")
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}, line {line}); "
                          "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b=v"`` -> ``{"a": {"b": v}}`` with v parsed as YAML (``1e-3``, ``true``, ``null``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"malformed --set {text!r}: expected key=value, e.g. train.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking keys and coercing types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        hint = ""
        if isinstance(unknown[0], bool):  # YAML 1.1 reads unquoted on/off/yes/no keys as booleans
            hint = ' (YAML reads an unquoted on, off, yes or no key as a boolean: quote it, e.g. "on": k)'
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}{hint}; valid keys here: "
            + ", ".join(prefix + n for n in names)
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, data[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(data[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, args[0], key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} expects {getattr(tp, '__name__', tp)}, got {value!r}")


def resolve_config(
    dataset: str | None = None, model: str | None = None, config_file: Path | None = None,
    flags: dict[str, Any] | None = None, overrides: list[str] | None = None,
    config_dir: Path = CONFIG_DIR,
) -> RunConfig:
    """Merge every layer into one RunConfig (see the module docstring for the order), validated
    as a whole (``config_rules.validate``)."""
    merged: dict[str, Any] = to_dict(RunConfig())  # the defaults: every section exists below the files
    if (config_dir / "base.yaml").is_file():
        merged = deep_merge(merged, load_yaml(config_dir / "base.yaml"))
    user = load_yaml(config_file) if config_file else {}
    cli = flags or {}
    sets = [parse_override(o) for o in overrides or []]
    # the dataset / model named last decides which preset files apply
    for layer in [user, cli, *sets]:
        dataset = _named(layer, "data", dataset)
        model = _named(layer, "model", model)
    dataset = dataset or RunConfig().data.name
    model = model or RunConfig().model.name
    model, size = split_size_suffix(model)
    if size:  # "kprpe_small" = model kprpe, size small; wins over the presets, not over --set
        cli = deep_merge(cli, {"model": {"size": size}})
    for preset in (config_dir / "datasets" / f"{_preset_name(dataset)}.yaml",
                   config_dir / "models" / f"{model}.yaml"):
        if preset.is_file():
            merged = deep_merge(merged, load_yaml(preset))
    merged = deep_merge(merged, {"data": {"name": dataset}, "model": {"name": model}})
    for layer in [user, cli, *sets]:
        merged = deep_merge(merged, layer)
    merged["model"]["name"] = model  # the size suffix, wherever it was given, is stripped
    return from_dict(RunConfig, merged)


def split_size_suffix(name: str) -> tuple[str, str | None]:
    """``"kprpe_small"`` -> ``("kprpe", "small")``; names without a size suffix are unchanged."""
    base, _, suffix = name.rpartition("_")
    return (base, suffix) if base and suffix in SIZE_NAMES else (name, None)


def _named(layer: dict[str, Any], section: str, current: str | None) -> str | None:
    value = layer.get(section)
    return str(value["name"]) if isinstance(value, dict) and "name" in value else current


def _preset_name(dataset: str) -> str:
    """``folder:/some/path`` datasets share the ``folder`` preset."""
    return dataset.split(":", 1)[0]


def config_text(cfg: RunConfig) -> str:
    """The YAML of a resolved config, as saved beside every result."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def cli_flags(
    data_root: str | None = None, epochs: int | None = None, batch_size: int | None = None,
    device: str | None = None, seed: int | None = None,
) -> dict[str, Any]:
    """The config layer of the training flags shared by ``run`` and ``bench`` (unset ones left
    out)."""
    flags: dict[str, Any] = {}
    for section, key, value in [
        ("data", "root", data_root), ("train", "epochs", epochs), ("train", "batch_size", batch_size),
        ("train", "device", device), ("train", "seed", seed),
    ]:
        if value is not None:
            flags.setdefault(section, {})[key] = value
    return flags
