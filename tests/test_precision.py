"""``train.precision``: bf16 autocast trains on the CPU and stays close to fp32 over a step; fp32
is exactly the plain path; fp16 scales its loss and skips a step whose gradients overflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidbench.config import LossConfig, ModelConfig, resolve_config
from reidbench.engine import trainer
from reidbench.engine.trainer import NonFiniteLoss, TrainState, TrainStep, _train_outputs, grad_scaler
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.losses import build_loss
from reidbench.models import build_model

NUM_KP = 3


def setup(name: str = "kprpe", seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, tuple]:  # type: ignore[type-arg]
    """A small model and ID + triplet loss with non-zero relative tables, and one P x K batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(name=name, depth=2, embed_dim=64, num_heads=4), (32, 16),
                        NUM_KP)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "kprpe" in key:
                p.normal_(0, 0.1, generator=g)
    loss = build_loss(LossConfig(), model.dim, 4)
    images = torch.randn(8, 3, 32, 16, generator=g)
    kps = torch.rand(8, NUM_KP, 2, generator=g)
    pids = torch.arange(4).repeat_interleave(2)
    return model, loss, (images, pids, kps)


def grads_after(step: TrainStep, batch: tuple) -> tuple[float, list[torch.Tensor]]:  # type: ignore[type-arg]
    step.zero_grad(set_to_none=True)
    total, _ = step(*batch)
    total.backward()
    return float(total.detach()), [p.grad.clone() for p in step.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", ["ape", "kprpe"])
def test_bf16_step_on_cpu_is_close_to_fp32(name: str) -> None:
    model, loss, batch = setup(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss32, g32 = grads_after(TrainStep(model, loss, "fp32", "cpu"), batch)
    model.load_state_dict(state)
    loss16, g16 = grads_after(TrainStep(model, loss, "bf16", "cpu"), batch)
    assert len(g16) == len(g32)
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32)  # bf16 keeps ~3 significant digits
    flat32, flat16 = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in g16])
    assert torch.isfinite(flat16).all()
    cosine = torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)
    assert cosine > 0.99, cosine
    # every weight stays fp32: autocast computes in bf16, it never converts the parameters
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_actually_computes_in_bf16() -> None:
    """The autocast is on: the forward's matmuls run in bf16 (a no-op wrapper would give fp32)."""
    model, loss, (images, pids, kps) = setup("ape")
    step = TrainStep(model, loss, "bf16", "cpu")
    seen: list[torch.dtype] = []
    hook = model.backbone.blocks[0].attn.qkv.register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype))
    total, _ = step(images, pids, kps)
    hook.remove()
    assert seen == [torch.bfloat16] and total.dtype == torch.float32


def test_fp32_step_is_the_plain_path_bit_for_bit() -> None:
    """The default precision computes exactly what the trainer computed before precision existed:
    the loss of the model's training outputs, no autocast, no cast."""
    model, loss, batch = setup("kprpe")
    total, terms = TrainStep(model, loss, "fp32", "cpu")(*batch)
    plain, plain_terms = loss(_train_outputs(TrainStep(model, loss), *batch))
    assert torch.equal(total, plain)
    assert all(torch.equal(terms[k], plain_terms[k]) for k in terms)


def fp16_on_cpu() -> None:
    try:
        grad_scaler("fp16", torch.device("cpu"))
        with torch.autocast("cpu", dtype=torch.float16):
            torch.ones(2, 2) @ torch.ones(2, 2)
    except (ReidbenchError, RuntimeError) as exc:
        pytest.skip(f"this torch has no fp16 autocast or gradient scaler on the CPU: {exc}")


def one_epoch_with_an_overflow(precision: str, run_dir: Path) -> tuple[TrainState, dict]:  # type: ignore[type-arg]
    """One epoch of one step through the trainer whose qkv gradient is infinite."""
    model, loss, (images, pids, kps) = setup("ape")
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = TrainState(model, loss, optimizer, scheduler,  # type: ignore[arg-type]
                       scaler=grad_scaler(precision, torch.device("cpu")))
    qkv = model.backbone.blocks[0].attn.qkv.weight
    qkv.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    batch = {"image": images, "pid": pids, "keypoints": kps,
             "has_keypoints": torch.ones(8, dtype=torch.bool)}
    cfg = resolve_config(overrides=[f"train.precision={precision}", "train.epochs=1"])
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trainer._train_epoch(state, [batch], torch.device("cpu"), cfg, 0, run_dir)
    return state, before


def test_fp16_skips_an_overflowing_step_and_counts_it(tmp_path: Path) -> None:
    fp16_on_cpu()
    assert grad_scaler("fp32", torch.device("cpu")) is None
    assert grad_scaler("bf16", torch.device("cpu")) is None
    state, before = one_epoch_with_an_overflow("fp16", tmp_path)
    scale = state.scaler.get_scale()
    (record,) = state.history
    assert record["skipped_steps"] == 1 and isinstance(record["skipped_steps"], int)
    assert "grad_norm" not in record
    assert all(torch.equal(p, before[k]) for k, p in state.model.named_parameters())  # no update
    assert scale == 2.0**16 * 0.5  # the scaler backed off once from its initial 2^16
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["scaler"]["scale"] == scale  # resumes with the same scale


def test_fp32_stops_on_the_same_overflow(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLoss, match="the gradient norm is inf"):
        one_epoch_with_an_overflow("fp32", tmp_path)


def test_precision_is_validated() -> None:
    with pytest.raises(ConfigError, match="train.precision must be one of fp32, bf16, fp16"):
        resolve_config(overrides=["train.precision=fp8"])
    assert resolve_config(overrides=["train.precision=bf16"]).train.precision == "bf16"
    assert trainer.AUTOCAST["fp32"] is None


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (none here): bf16/fp16 on CUDA, FlexAttention path")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_cuda_is_close_to_fp32(precision: str) -> None:
    model, loss, batch = setup("kprpe")
    model, loss = model.cuda(), loss.cuda()
    batch = tuple(t.cuda() for t in batch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss32, g32 = grads_after(TrainStep(model, loss, "fp32", "cuda"), batch)
    model.load_state_dict(state)
    low, g_low = grads_after(TrainStep(model, loss, precision, "cuda"), batch)
    assert abs(low - loss32) <= 0.02 * abs(loss32)
    flat32, flat_low = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in g_low])
    assert torch.nn.functional.cosine_similarity(flat32, flat_low, dim=0) > 0.99
