"""The relative terms through PyTorch's FlexAttention, the GPU path of ``bucket_attention``.

Every relative encoding hands attention a list of ``BucketTerm``s: for query i and key j the
logits gain ``lut[b, h, i, ids[i, j]]`` (or ``lut[b, h, j, ids[j, i]]`` for a transposed term).
That is exactly a FlexAttention ``score_mod`` over captured tensors: ``bucket_score_mod`` adds
the gathered tables to the score, and ``torch.nn.attention.flex_attention`` compiles it into a
fused kernel that never stores the (B, H, T, T) logits either. Gradients reach the tables (and
through them the encodings' parameters, or q for iRPE-contextual and Shaw, whose tables are
``q @ W``) because captured tensors that require grad are differentiated by FlexAttention.

What runs where (torch 2.14.1, checked by ``tests/test_flex_attention.py``, which probes the
installed torch rather than trusting this list):

- CUDA: forward and backward, compiled (``torch.compile(flex_attention)``; the first call at a
  new shape compiles for tens of seconds).
- CPU: forward only. Eager ``flex_attention`` computes the scores unfused (the whole
  (B, H, T, T) tensor), compiled it takes about a minute to build its C++ kernel, and any q, k or
  v that requires grad raises ``NotImplementedError`` ("FlexAttention does not support backward
  on CPU"). Training on CPU therefore keeps ``bucket_attention``, which ``use_flex`` chooses.

The tables of linear terms (iRPE contextual, Shaw, KP-RPE: ``x @ weight``) are materialised
here, (B|1, H|1, T, nb), small next to (T, T) logits; ``bucket_attention`` recomputes them per
chunk instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import lru_cache

import torch

from reidbench.errors import ConfigError
from reidbench.layers.bucket_attention import BucketTerm, autocast_off

ATTENTION_BACKENDS = ("auto", "bucket", "flex")

ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=1)
def flex_available() -> bool:
    """True when this torch has ``torch.nn.attention.flex_attention``."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


@lru_cache(maxsize=1)
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_flex(device: torch.device | str, backend: str = "auto", requires_grad: bool = False) -> bool:
    """Whether attention on ``device`` runs its relative terms through FlexAttention.

    Args:
        device: where q, k and v live.
        backend: "auto" (FlexAttention on CUDA when torch has it and Triton is installed, the
            chunked bucket kernel elsewhere), "bucket" (always the bucket kernel) or "flex"
            (always FlexAttention; ConfigError where it cannot run).
        requires_grad: whether the call must be differentiable (training); FlexAttention has no
            CPU backward.

    Returns:
        True for FlexAttention, False for ``bucket_attention``.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ConfigError(f"unknown attention backend {backend!r}; expected one of "
                          f"{', '.join(ATTENTION_BACKENDS)}")
    kind = torch.device(device).type
    if backend == "bucket":
        return False
    if backend == "auto":
        return kind == "cuda" and flex_available() and _triton_available()
    if not flex_available():
        raise ConfigError(f"attention backend 'flex' needs torch.nn.attention.flex_attention, which "
                          f"torch {torch.__version__} does not have; use 'auto' or 'bucket'")
    if kind == "cpu" and requires_grad:
        raise ConfigError("attention backend 'flex' cannot train on CPU: FlexAttention has no CPU "
                          "backward; use 'auto' (the bucket kernel on CPU) or 'bucket'")
    return True


def _table(term: BucketTerm) -> torch.Tensor:
    """The term's (B|1, H|1, T|1, nb) table, contiguous, with every broadcast dimension (size 1
    or stride 0, such as iRPE bias mode's table expanded over the queries) reduced to size 1."""
    table = term.table()
    index = tuple(slice(0, 1) if table.stride(i) == 0 or table.shape[i] == 1 else slice(None)
                  for i in range(3))
    return table[index].contiguous()


def bucket_score_mod(terms: list[BucketTerm]) -> ScoreMod:
    """A FlexAttention ``score_mod`` adding the terms' gathered tables to the score.

    ``score_mod(score, b, h, q_idx, kv_idx)`` returns ``score + sum over terms of
    table[b, h, q_idx, ids[q_idx, kv_idx]]`` (``table[b, h, kv_idx, ids[kv_idx, q_idx]]`` for a
    transposed term), reading index 0 of every dimension a table broadcasts over. The indices
    may be scalars (inside FlexAttention) or broadcastable index tensors (to materialise the
    bias, as the tests do).
    """
    parts = [(_table(term), term.ids, term.transposed) for term in terms]

    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                  kv_idx: torch.Tensor) -> torch.Tensor:
        for table, ids, transposed in parts:
            row, col = (kv_idx, q_idx) if transposed else (q_idx, kv_idx)
            bi = b if table.shape[0] > 1 else 0
            hi = h if table.shape[1] > 1 else 0
            ri = row if table.shape[2] > 1 else 0
            score = score + table[bi, hi, ri, ids[row, col]]
        return score

    return score_mod


@lru_cache(maxsize=1)
def _compiled_flex() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_bucket_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: list[BucketTerm], scale: float,
    compiled: bool | None = None,
) -> torch.Tensor:
    """``bucket_attention`` through FlexAttention: softmax(q k^T * scale + gathered biases) @ v.

    Args:
        q, k, v: (B, H, T, d), one dtype (under autocast: the dtype autocast gave them).
        terms: the relative terms, as for ``bucket_attention``; a term whose ``x`` is ``q``
            differentiates into q through its table.
        scale: the logits scale.
        compiled: use ``torch.compile(flex_attention)`` (the fused kernel); None compiles on
            CUDA and runs eagerly elsewhere (eager FlexAttention materialises the scores: a
            reference, forward only on CPU).

    Returns:
        (B, H, T, d) in q's dtype.

    The tables are built in the caller's precision (under autocast: the autocast dtype);
    FlexAttention itself runs with autocast off and accumulates the scores in fp32.

    Each new shape (batch size included) or set of term kinds compiles once; dynamo recompiles at
    most ``torch._dynamo.config.recompile_limit`` times per process before falling back to the
    eager path, so one process should not cycle through many model configurations.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if compiled is None:
        compiled = q.device.type == "cuda"
    fn = _compiled_flex() if compiled else flex_attention
    score_mod = bucket_score_mod(terms)
    with autocast_off(q.device.type):
        return fn(q, k, v, score_mod=score_mod, scale=scale)
