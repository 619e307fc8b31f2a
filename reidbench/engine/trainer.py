"""The training loop: P x K batches, combined losses, checkpoints each epoch, exact resume.

Randomness: the model is initialised, and dropout/stochastic depth drawn, under a forked
global RNG seeded from ``train.seed`` (the caller's RNG state is untouched); the sampler and
every sample's augmentation use their own seeded generators. A resumed run restores all of
them and so continues the same trajectory.

Records: each epoch appends to ``history.jsonl`` the mean of every loss term (unweighted), of
the weighted total, of the gradient norm before clipping (``grad_norm``) and of the terms'
diagnostics (``CombinedLoss.diagnostics``, e.g. ``rp_triplet_d_neg``). A NaN or infinite
loss term or gradient stops the run with a message naming the term (or the gradient) and the
step; so does a weight (parameter or buffer of the model or the loss) that is NaN or infinite
at the end of an epoch, named with the epoch, before it can be saved. A record with
``stopped`` is appended and the checkpoint of the last finished epoch kept.

Errors raised while loading a batch in a DataLoader worker (``data.num_workers`` > 0) arrive
wrapped in the worker's traceback; they are unwrapped to the original one-line error.

Starting weights: ``model.pretrained`` (a timm / DeiT / ViT checkpoint) is loaded into the ViT
after the seeded initialisation of a new run (``models.pretrained.load_pretrained``), whose
report ``train`` hands to ``on_pretrained``; a resumed run takes its weights from its checkpoint.

Precision (``train.precision``): ``bf16`` and ``fp16`` run the model's forward pass under
``torch.autocast`` with fp32 weights, and the losses in fp32 on the upcast outputs; ``fp16``
scales the loss with a ``GradScaler``, whose steps with a non-finite gradient are skipped and
counted (``skipped_steps`` in the history) instead of stopping the run. ``fp32`` is the plain
path, unchanged.

Data: on CUDA the loader pins its batches and they are copied with ``non_blocking``; workers
(``data.num_workers``) stay alive across epochs. Under ``torchrun`` (``engine.distributed``) the
model and the loss train inside one DistributedDataParallel wrapper (``TrainStep``), and only
rank 0 writes the history and checkpoints.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidbench.config import RunConfig, TrainConfig
from reidbench.data.augment import recipe
from reidbench.data.loader import ImageDataset, batch_keypoints, make_loader
from reidbench.data.perturb import affine_range
from reidbench.data.sampler import build_sampler
from reidbench.data.transforms import Transform
from reidbench.datasets.base import FaceSplit, ReidSplit
from reidbench.engine import progress
from reidbench.engine.checkpoint import CHECKPOINT, error_summary, load_checkpoint, save_checkpoint
from reidbench.engine.distributed import World, average_buffers, sync_batchnorm, wrap_for_training
from reidbench.engine.schedule_notes import warmup_note
from reidbench.engine.tensorboard import TrainingCurves
from reidbench.errors import ReidbenchError
from reidbench.fileio import atomic_write_text
from reidbench.losses import CombinedLoss, TrainOutputs, build_loss
from reidbench.models import EmbeddingModel, build_model
from reidbench.models.pretrained import PretrainedReport, load_pretrained
from reidbench.reporting.records import HISTORY

log = logging.getLogger(__name__)

TrainSplit = ReidSplit | FaceSplit  # anything with .train, .keypoint_schema, .num_train_pids
# train.precision -> the autocast dtype of the forward pass (None: plain fp32)
AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16,
                                           "fp16": torch.float16}


class NonFiniteTraining(ReidbenchError):
    """Training produced a NaN or infinite number; the last good checkpoint is kept."""


class NonFiniteLoss(NonFiniteTraining):
    """A loss term or the gradient norm became NaN or infinite."""


class NonFiniteWeights(NonFiniteTraining):
    """A parameter or buffer of the model or the loss became NaN or infinite."""


@dataclass
class TrainState:
    model: EmbeddingModel
    loss: CombinedLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch
    scaler: Any = None  # torch.amp.GradScaler of fp16 training, else None
    step_module: nn.Module | None = None  # TrainStep, inside DDP under torchrun
    world: World = field(default_factory=World)
    pretrained: PretrainedReport | None = None  # what model.pretrained loaded (new runs)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ReidbenchError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReidbenchError(f"device {name!r} requested but CUDA is not available here")
    return device


def keypoint_count(split: TrainSplit) -> int:
    return split.keypoint_schema.num_keypoints if split.keypoint_schema else 0


def train_transform(cfg: RunConfig, split: TrainSplit) -> Transform:
    d = cfg.data
    perm = tuple(split.keypoint_schema.flip_permutation()) if split.keypoint_schema else None
    return Transform(
        d.height, d.width, d.mean, d.std, train=True, flip_prob=d.flip_prob, pad=d.pad,
        erase_prob=d.erase_prob, flip_perm=perm, affine=affine_range(d.aug_affine),
        affine_prob=d.aug_affine_prob, augment=recipe(d.augment),
    )


def eval_transform(cfg: RunConfig) -> Transform:
    d = cfg.data
    return Transform(d.height, d.width, d.mean, d.std)


# tokens, embeddings, learned default keypoints and RoPE-Mixed frequencies (not decayed in the
# reference either): decay would pull them towards zero
NO_DECAY_SUFFIXES = ("cls_token", "pos_embed.embed", "index_embed", "default_logits",
                     "rel_pos.freqs")


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, tokens and position embeddings (1-D or named so)."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            skip = p.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES)
            (no_decay if skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = max(1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        fraction = min(1.0, (step - warmup) / max(1, total - warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * fraction))

    return factor


def build_state(cfg: RunConfig, split: TrainSplit, steps_per_epoch: int) -> TrainState:
    model = build_model(cfg.model, (cfg.data.height, cfg.data.width), keypoint_count(split))
    loss = build_loss(cfg.loss, model.dim, split.num_train_pids)
    loss.check_model(model)
    optimizer = torch.optim.AdamW(
        param_groups([model, loss], cfg.train.weight_decay), lr=cfg.train.lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train, steps_per_epoch))
    return TrainState(model, loss, optimizer, scheduler)


class TrainStep(nn.Module):
    """The model and the loss as one module, so that one call is a whole forward pass and its
    loss: what DistributedDataParallel wraps (the loss's classifiers train too). Returns
    ``(total, terms)`` of ``CombinedLoss``.

    Args:
        model, loss: the run's ``EmbeddingModel`` and ``CombinedLoss``.
        precision: ``train.precision``; bf16/fp16 autocast the model on ``device_type`` and the
            loss sees its outputs upcast to fp32.
        device_type: "cpu" or "cuda".
    """

    def __init__(self, model: EmbeddingModel, loss: CombinedLoss, precision: str = "fp32",
                 device_type: str = "cpu") -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.dtype, self.device_type = AUTOCAST[precision], device_type

    def forward(self, images: torch.Tensor, pids: torch.Tensor, keypoints: torch.Tensor | None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.dtype is None:
            return self.loss(_train_outputs(self, images, pids, keypoints))
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = _train_outputs(self, images, pids, keypoints)
        out = replace(out, feats=out.feats.float(), neck_feats=out.neck_feats.float(),
                      tokens=None if out.tokens is None else out.tokens.float())
        return self.loss(out)


def grad_scaler(precision: str, device: torch.device) -> Any:
    """A GradScaler for fp16 on ``device`` (None for fp32 and bf16); ReidbenchError where this
    torch has none for the device."""
    if precision != "fp16":
        return None
    try:
        return torch.amp.GradScaler(device.type)
    except (AttributeError, RuntimeError, TypeError) as exc:
        raise ReidbenchError(f"train.precision=fp16 on {device.type}: this torch "
                             f"({torch.__version__}) has no gradient scaler for it ({exc}); use "
                             "train.precision=bf16, or fp16 on CUDA") from None


def train(
    cfg: RunConfig, split: TrainSplit, run_dir: Path, device: torch.device,
    resume: bool = False, world: World | None = None,
    on_pretrained: Callable[[PretrainedReport], None] | None = None,
) -> TrainState:
    """Train ``cfg.model`` on ``split.train``; checkpoint to ``run_dir`` after every epoch.

    ``world``: this rank under torchrun (default: one process). ``on_pretrained``: called with
    the report of ``model.pretrained`` when a new run loads it (before the first step)."""
    world = world or World()
    dataset = ImageDataset(
        split.train, train_transform(cfg, split), keypoint_count(split), cfg.data.cache_images
    )
    sampler = build_sampler(
        cfg.data.sampler, [r.pid for r in split.train], [r.camid for r in split.train],
        cfg.train.batch_size, cfg.data.num_instances, cfg.train.seed,
    )
    loader = make_loader(dataset, cfg.train.batch_size, sampler, cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    steps_per_epoch = len(loader)
    if world.main and (note := warmup_note(cfg.train)):
        log.info("note: %s", note)
    curves = TrainingCurves(run_dir, enabled=world.main)  # TensorBoard, beside history.jsonl
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.train.seed)
        state = build_state(cfg, split, steps_per_epoch)
        state.world = world
        state.scaler = grad_scaler(cfg.train.precision, device)
        if resume:
            _restore(state, load_checkpoint(run_dir), run_dir / CHECKPOINT)
            log.info("resumed %s after epoch %d (step %d)", run_dir.name, state.epoch, state.step)
        elif cfg.model.pretrained:
            grid = tuple(cfg.model.pretrained_grid) or None
            state.pretrained = load_pretrained(state.model, cfg.model.pretrained, grid)  # type: ignore[arg-type]
            if on_pretrained is not None:
                on_pretrained(state.pretrained)
        state.model.to(device)
        state.loss.to(device)
        _move_optimizer(state.optimizer, device)
        state.model = sync_batchnorm(state.model, device, world)  # type: ignore[assignment]
        state.step_module = wrap_for_training(
            TrainStep(state.model, state.loss, cfg.train.precision, device.type), device, world)
        try:
            for epoch in range(state.epoch, cfg.train.epochs):
                sampler.set_epoch(epoch)
                _train_epoch(state, loader, device, cfg, epoch, run_dir)
                curves.epoch(state.history[-1], steps_per_epoch * cfg.train.batch_size * world.size)
        except Exception as exc:
            original = worker_error(exc)
            if original is None:
                raise
            raise original from None
        finally:
            curves.close()
    return state


def worker_error(exc: BaseException) -> ReidbenchError | None:
    """The reidbench error a DataLoader worker raised, unwrapped from the worker's traceback
    that PyTorch puts in its message (None if ``exc`` is something else)."""
    text = str(exc)
    if "in DataLoader worker process" not in text:
        return None
    start = text.rfind("\nreidbench.")  # the traceback's last line: "reidbench.x.Error: message"
    if start < 0:
        return None
    _, sep, message = text[start + 1:].partition(": ")
    if not sep:
        return None
    cls = type(exc) if isinstance(exc, ReidbenchError) else ReidbenchError
    try:
        return cls(message.strip())
    except TypeError:  # an error class with other constructor arguments
        return ReidbenchError(message.strip())


def _train_epoch(
    state: TrainState, loader: Any, device: torch.device, cfg: RunConfig, epoch: int,
    run_dir: Path,
) -> None:
    state.model.train()
    state.loss.train()
    start = time.perf_counter()
    sums: dict[str, float] = {}
    bar = progress.bar(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False)
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    step_module = state.step_module
    if step_module is None:  # a state built by hand (tests): the single-process step
        step_module = TrainStep(state.model, state.loss, cfg.train.precision, device.type)
    scaler, copy_async = state.scaler, device.type == "cuda"  # pinned batches: async copies
    for done, batch in enumerate(bar):  # done: good steps so far in this epoch
        images = batch["image"].to(device, non_blocking=copy_async)
        pids = batch["pid"].to(device, non_blocking=copy_async)
        total, terms = step_module(images, pids, batch_keypoints(batch, device))
        for name, value in terms.items():
            if not torch.isfinite(value):
                _stop(state, run_dir, sums, epoch, done, f"loss term {name!r} is {value.item()}")
        state.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            total.backward()
        else:
            scaler.scale(total).backward()
            scaler.unscale_(state.optimizer)  # true gradients for the norm and the clipping
        # the gradient norm is computed either way (max_norm=inf scales by exactly 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip or float("inf"))
        skipped = scaler is not None and not bool(torch.isfinite(grad_norm))
        if not skipped and not torch.isfinite(grad_norm):
            _stop(state, run_dir, sums, epoch, done, f"the gradient norm is {grad_norm.item()} (loss terms "
                  + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items()) + ")")
        if scaler is None:
            state.optimizer.step()
        else:  # skips the update when the scaled gradients overflowed, then lowers the scale
            scaler.step(state.optimizer)
            scaler.update()
        state.scheduler.step()
        state.step += 1
        if skipped:
            sums["skipped_steps"] = sums.get("skipped_steps", 0.0) + 1.0
        norm = [] if skipped else [("grad_norm", grad_norm)]
        for name, value in [("total", total), *terms.items(), *norm]:
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        for name, number in state.loss.diagnostics().items():
            sums[name] = sums.get(name, 0.0) + number
        bar.set_postfix({k: f"{v / (bar.n + 1):.3f}" for k, v in sums.items()})
    average_buffers([state.model, state.loss], state.world)  # torchrun: one value on all ranks
    bad = non_finite_weights(state)
    if bad:
        _stop(state, run_dir, sums, epoch, len(loader), bad, end_of_epoch=True,
              error=NonFiniteWeights)
    seconds = time.perf_counter() - start
    state.train_seconds += seconds
    state.epoch = epoch + 1
    n = max(1, len(loader))
    skipped = int(sums.pop("skipped_steps", 0))  # fp16 overflows: a count, not a mean
    means = {k: v / (max(1, n - skipped) if k == "grad_norm" else n) for k, v in sums.items()}
    record = {"epoch": state.epoch, "step": state.step, "seconds": round(seconds, 3),
              "lr": state.scheduler.get_last_lr()[0], **means,
              **({"skipped_steps": skipped} if skipped else {})}
    log.info("epoch %d/%d  %s  (%.1fs)", state.epoch, cfg.train.epochs,
             "  ".join(f"{k}={v:.4f}" for k, v in means.items())
             + (f"  skipped_steps={skipped}" if skipped else ""), seconds)
    state.history.append(record)
    if state.world.main:  # under torchrun, rank 0 writes
        save_checkpoint(run_dir, _snapshot(state))
        atomic_write_text(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in state.history))


def _train_outputs(
    state: TrainState | TrainStep, images: torch.Tensor, pids: torch.Tensor,
    keypoints: torch.Tensor | None,
) -> TrainOutputs:
    """One forward pass; the final tokens and positional relations only when a term needs them."""
    if not state.loss.needs_tokens:
        feats, neck = state.model.forward_train(images, keypoints)
        return TrainOutputs(feats, neck, pids)
    feats, neck, tokens = state.model.forward_train_tokens(images, keypoints)
    backbone = state.model.backbone

    def relations(index: torch.Tensor, layers: tuple[int, ...] | None) -> torch.Tensor:
        return backbone.pair_relations(index, keypoints, layers)

    return TrainOutputs(feats, neck, pids, tokens=tokens, relations=relations,
                        num_prefix_tokens=getattr(backbone, "num_prefix_tokens", 1))


def non_finite_weights(state: TrainState) -> str | None:
    """What is non-finite among the weights (parameters and floating-point buffers of the model
    and the loss), naming the first such tensor; None if all are finite."""
    bad: list[tuple[str, torch.Tensor]] = []
    for prefix, module in (("model", state.model), ("loss", state.loss)):
        for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad.append((f"{prefix}.{name}", tensor))
    if not bad:
        return None
    name, tensor = bad[0]
    nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    others = f" (and {len(bad) - 1} more weight tensors)" if len(bad) > 1 else ""
    return (f"weight {name!r} is non-finite ({nan} NaN and {inf} infinite of {tensor.numel()} "
            f"values){others}")


def _stop(
    state: TrainState, run_dir: Path, sums: dict[str, float], epoch: int, done: int, what: str,
    end_of_epoch: bool = False, error: type[NonFiniteTraining] = NonFiniteLoss,
) -> None:
    """Record the non-finite step (or, with ``end_of_epoch``, the epoch whose weights became
    non-finite) in history.jsonl after the completed epochs, and raise ``error``.

    ``sums`` holds the loss sums of the ``done`` good steps of this epoch, recorded as means.

    The checkpoint is not touched, so it stays the last good one (end of the previous epoch);
    a resumed run rewrites history.jsonl from that checkpoint.
    """
    kept = (f"the last good checkpoint ({run_dir / CHECKPOINT}, epoch {state.epoch}) is kept"
            if state.epoch else "no epoch had finished, so there is no checkpoint")
    step = state.step if end_of_epoch else state.step + 1
    where = (f"at the end of epoch {epoch + 1} (step {step})" if end_of_epoch
             else f"at epoch {epoch + 1}, step {step}")
    message = f"{what} {where}; training stopped, {kept}"
    partial = {"epoch": epoch + 1, "step": step, "stopped": message, "good_steps": done,
               **{k: v / max(1, done) for k, v in sums.items()}}
    if state.world.main:
        atomic_write_text(run_dir / HISTORY,
                          "".join(json.dumps(r) + "\n" for r in [*state.history, partial]))
    raise error(message)


def _snapshot(state: TrainState) -> dict[str, Any]:
    scaler = {} if state.scaler is None else {"scaler": state.scaler.state_dict()}
    return {
        "model": state.model.state_dict(),
        "loss": state.loss.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "train_seconds": state.train_seconds,
        "history": state.history,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        **scaler,
    }


def _restore(state: TrainState, ckpt: dict[str, Any], path: Path) -> None:
    """Load a checked training checkpoint (``load_checkpoint``) into ``state``; a checkpoint
    that does not fit this run's model, loss or optimizer is one error naming ``path``."""
    try:
        state.model.load_state_dict(ckpt["model"])
        state.loss.load_state_dict(ckpt["loss"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        if state.scaler is not None and isinstance(ckpt.get("scaler"), dict):
            state.scaler.load_state_dict(ckpt["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ReidbenchError(f"checkpoint {path} does not fit this run's model, loss or "
                             f"optimizer: {error_summary(exc)}") from None
    state.epoch, state.step = ckpt["epoch"], ckpt["step"]
    state.train_seconds = float(ckpt["train_seconds"])
    state.history = list(ckpt["history"])


def _move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for values in optimizer.state.values():
        for key, value in values.items():
            if isinstance(value, torch.Tensor) and key != "step":
                values[key] = value.to(device)
