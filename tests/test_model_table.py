"""Model table: parameter counts, FLOPs (multiply-add = 2) and the text layout."""

from __future__ import annotations

import pytest
import torch

from reidbench.config import ModelConfig
from reidbench.models import build_model
from reidbench.registry import load_builtins
from reidbench.reporting.model_table import count_flops, format_table, model_rows

load_builtins()  # every built-in model, loss, perturbation and dataset, as the CLI registers them

TINY = dict(size="nano", depth=2, embed_dim=32, num_heads=2, patch_size=8)


def test_rows_for_vits_count_params_and_flops() -> None:
    rows = model_rows(["ape", "poster"], (128, 64), 5, TINY)
    assert [r["name"] for r in rows] == ["ape", "poster"]
    for row in rows:
        model = build_model(ModelConfig(name=row["name"], **TINY), (128, 64), 5)
        total = sum(p.numel() for p in model.parameters())
        assert row["params"] == total > 0
        assert row["trainable_params"] == total - 32  # the BN neck's frozen shift
        assert row["gflops"] > 0 and row["embed_dim"] == 32
    ape, poster = rows
    assert poster["params"] > ape["params"] and poster["gflops"] > ape["gflops"]


def test_ape_flops_match_the_closed_form() -> None:
    d, depth, t, n = 32, 2, 1 + 16 * 8, 16 * 8
    patch = 2 * n * (3 * 8 * 8) * d
    block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * 4 * d
    (row,) = model_rows(["ape"], (128, 64), None, ModelConfig(**TINY))
    assert row["gflops"] * 1e9 == pytest.approx(patch + depth * block, rel=1e-12)


def test_count_flops_is_two_per_multiply_add() -> None:
    assert count_flops(torch.nn.Linear(16, 8), torch.randn(3, 16)) == 2 * 3 * 16 * 8


def test_cnn_row() -> None:
    (row,) = model_rows(["osnet"], (64, 32), None, {"size": "nano"})
    assert row["embed_dim"] == 512 and row["gflops"] > 0 and row["params"] > row["trainable_params"]


def test_format_table_is_aligned() -> None:
    rows = [
        {"name": "ape", "params": 1234567, "trainable_params": 1234000, "gflops": 0.5, "embed_dim": 128},
        {"name": "resnet50", "params": 12, "trainable_params": 12, "gflops": 12.34567, "embed_dim": 2048},
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["model", "params", "trainable", "GFLOPs", "dim"]
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["ape", "1,234,567", "1,234,000", "0.500", "128"]
    assert lines[3].split() == ["resnet50", "12", "12", "12.346", "2048"]
    assert lines[2].index("ape") == lines[3].index("resnet50") == 0


class _Sdpa(torch.nn.Module):
    def __init__(self, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dv", [4, 6])
def test_attention_is_counted(masked: bool, dv: int) -> None:
    # softmax(q k^T) v with B=2, H=3, Tq=5, Tk=7, d=4: q k^T is 2*3*5*7 dot products of length
    # 4, the product with v 2*3*5*dv of length 7, 2 FLOPs per multiply-add. Whatever kernel
    # the installed torch picks: torch 2.14 runs dv == d in a fused CPU kernel its FLOP table
    # did not know (0 FLOPs), dv != d as plain matmuls (counted)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, dv)
    mask = torch.randn(5, 7) if masked else None
    assert count_flops(_Sdpa(mask), q, k, v) == 2 * (2 * 3 * 5 * 7 * 4 + 2 * 3 * 5 * dv * 7)


class _InPlace(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor, m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(2, 5, 7).baddbmm_(a, b)  # the bucket attention's q k^T onto its bias
        return out.sum() + torch.zeros(5, 7).addmm_(m, n).sum()


def test_inplace_matmuls_are_counted() -> None:
    a, b = torch.randn(2, 5, 4), torch.randn(2, 4, 7)
    m, n = torch.randn(5, 3), torch.randn(3, 7)
    assert count_flops(_InPlace(), a, b, m, n) == 2 * 2 * 5 * 4 * 7 + 2 * 5 * 3 * 7


def test_relative_vits_cost_at_least_ape() -> None:
    # the same blocks plus a relative term: never fewer FLOPs than APE (irpe, kprpe and rpe run
    # q k^T as an in-place matmul onto the bias, which torch 2.14's table did not count)
    rows = {r["name"]: r["gflops"] for r in model_rows(["ape", "rpe", "irpe", "kprpe"], (128, 64), 5, TINY)}
    assert all(rows[name] > rows["ape"] for name in ("rpe", "irpe", "kprpe")), rows
