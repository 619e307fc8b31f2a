"""iRPE: bucket indices (rel_index), the efficient terms against per-pair references, translation
invariance, prefix buckets, zero initialisation, gradients and non-square grids inside Attention."""

from __future__ import annotations

import itertools
import math

import pytest
import rpe_reference as ref
import torch

from reidbench.layers.attention import Attention
from reidbench.layers.irpe import IRPE, IRPEConfig, irpe_factory, naive_contextual_key_term
from reidbench.layers.position import AttentionContext
from reidbench.layers.rel_index import bucket_ids, clip_index, num_buckets, piecewise_index

METHODS = ("euclidean", "quant", "cross", "product")
GRID = (4, 3)  # non-square on purpose
CTX = AttentionContext(grid=GRID, num_prefix_tokens=1)
T = 1 + GRID[0] * GRID[1]


def cfg_id(cfg: IRPEConfig) -> str:
    heads = "shared" if cfg.shared_head else "per-head"
    return f"{cfg.method}-{cfg.mapping}-{cfg.mode}-{cfg.on}-{heads}"


def contextual_cfgs() -> list[IRPEConfig]:
    return [IRPEConfig(method=m, mode="contextual", on="qkv", shared_head=s)
            for m in METHODS for s in (True, False)]


def bias_cfgs() -> list[IRPEConfig]:
    return [IRPEConfig(method=m, mode="bias", on="qk", shared_head=s) for m in METHODS for s in (True, False)]


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))


def random_qkv(b: int = 2, h: int = 3, t: int = T, d: int = 5, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, t, d, generator=gen, dtype=torch.float64) for _ in range(2))
    attn = torch.randn(b, h, t, t, generator=gen, dtype=torch.float64).softmax(-1)
    return q, k, attn


# --- rel_index: the bucket functions ----------------------------------------------------------

def scalar_index(x: float, ratio: float = 1.9) -> int:
    """The paper's piecewise index function on one number, written independently."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    if abs(x) <= alpha:
        return round(x)
    mag = alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    return int(math.copysign(min(beta, round(mag)), x))


def scalar_bucket(method: str, dy: int, dx: int) -> int:
    b = 3  # int(beta) at ratio 1.9
    if method == "euclidean":
        return scalar_index(round(math.sqrt(dy * dy + dx * dx)))
    if method == "quant":
        return scalar_index(dy * dy + dx * dx)
    if method == "cross_rows":
        return scalar_index(dy) + b
    if method == "cross_cols":
        return scalar_index(dx) + b
    return (scalar_index(dy) + b) * (2 * b + 1) + scalar_index(dx) + b


def test_piecewise_index_values_and_signs() -> None:
    x = torch.tensor([0, 1, 2, 3, 4, 10])
    expected = torch.tensor([0, 1, 2, 2, 3, 3])
    alpha, beta, gamma = 1.9, 3.8, 15.2
    assert torch.equal(piecewise_index(x, alpha, beta, gamma), expected)
    assert torch.equal(piecewise_index(-x, alpha, beta, gamma), -expected)
    assert [scalar_index(v) for v in (0, 1, 2, 3, 4, 10, -4, -10)] == [0, 1, 2, 2, 3, 3, -3, -3]
    far = torch.tensor([100, 10_000])
    assert torch.equal(piecewise_index(far, alpha, beta, gamma), torch.tensor([3, 3]))  # clipped at beta


def test_clip_index() -> None:
    x = torch.arange(-10, 11)
    assert torch.equal(clip_index(x, 3.8), x.clamp(-3, 3))


def test_num_buckets() -> None:
    assert num_buckets("product", 1.9) == 49
    assert num_buckets("product", 1.9, skip=1) == 50
    assert num_buckets("cross_rows", 1.9) == num_buckets("cross_cols", 1.9) == 7
    assert num_buckets("euclidean", 1.9) == num_buckets("quant", 1.9) == 4
    assert IRPEConfig(method="cross", skip=0).num_buckets == 7  # per table; cross has two tables
    assert IRPEConfig(method="product", skip=1).num_buckets == 50
    assert IRPEConfig(method="euclidean", skip=1).num_buckets == 5


@pytest.mark.parametrize("grid", [GRID, (16, 8)])
@pytest.mark.parametrize("method", ["euclidean", "quant", "cross_rows", "cross_cols", "product"])
def test_bucket_ids_match_the_formula(grid: tuple[int, int], method: str) -> None:
    rows, cols = grid
    ids = bucket_ids(grid, method, 1.9, "piecewise", skip=1)
    extra = num_buckets(method, 1.9, skip=1) - 1
    assert ids.shape == (1 + rows * cols,) * 2
    assert (ids[0] == extra).all() and (ids[:, 0] == extra).all()
    pos = [divmod(n, cols) for n in range(rows * cols)]  # row-major (row, col), never sqrt(N)
    expected = torch.tensor([[scalar_bucket(method, yi - yj, xi - xj) for yj, xj in pos] for yi, xi in pos])
    assert torch.equal(ids[1:, 1:], expected)
    assert int(ids[1:, 1:].max()) < extra


# Eq. (18) at ratio 1.9 (alpha 1.9, beta 3.8, gamma 15.2), by hand: |x| <= 1.9 is exact; beyond,
# 1.9 + ln(|x| / 1.9) / ln 8 * 1.9 rounds to 2 for x = 2, 3 (1.95, 2.32), to 3 for x = 4, 5, 8
# (2.58, 2.78, 3.21) and is clipped to beta (int 3) for x = 13 (3.66 -> 4 -> 3.8 -> 3).
# Buckets (b = 3): product (f(dy) + 3) * 7 + f(dx) + 3; cross f(.) + 3; euclidean f(round(dist));
# quant f(dy^2 + dx^2).
HAND_BUCKETS = [
    ("product", 0, 0, 24), ("product", 1, 0, 31), ("product", 0, 1, 25), ("product", -1, 0, 17),
    ("product", 4, -2, 43), ("product", -5, 3, 5), ("product", 2, 3, 40), ("product", -13, -13, 0),
    ("cross_rows", -2, 5, 1), ("cross_rows", 13, 0, 6), ("cross_cols", 7, 4, 6), ("cross_cols", 0, -1, 2),
    ("euclidean", 3, 4, 3), ("euclidean", 1, 1, 1), ("euclidean", 2, 1, 2), ("euclidean", 0, 0, 0),
    ("quant", 1, 1, 2), ("quant", 1, 0, 1), ("quant", 2, 2, 3), ("quant", 0, 0, 0),
]


@pytest.mark.parametrize(("method", "dy", "dx", "bucket"), HAND_BUCKETS)
def test_bucket_values_hand_computed(method: str, dy: int, dx: int, bucket: int) -> None:
    grid = (1 + abs(dy), 1 + abs(dx))  # two patches of this grid are (dy, dx) apart
    i = (abs(dy) if dy > 0 else 0) * grid[1] + (abs(dx) if dx > 0 else 0)
    j = (abs(dy) if dy < 0 else 0) * grid[1] + (abs(dx) if dx < 0 else 0)
    assert int(bucket_ids(grid, method, 1.9, "piecewise")[i, j]) == bucket


def test_product_has_one_bucket_per_pair_of_axis_indices() -> None:
    """The product method's defining property: two offsets share a bucket exactly when their row
    indices and their column indices both agree, and all (2b + 1)^2 buckets are used."""
    grid = (12, 12)
    ids = bucket_ids(grid, "product", 1.9, "piecewise")
    rows = bucket_ids(grid, "cross_rows", 1.9, "piecewise")
    cols = bucket_ids(grid, "cross_cols", 1.9, "piecewise")
    pairs: dict[tuple[int, int], set[int]] = {}
    for r, c, p in zip(rows.flatten().tolist(), cols.flatten().tolist(), ids.flatten().tolist()):
        pairs.setdefault((r, c), set()).add(p)
    assert all(len(v) == 1 for v in pairs.values())  # equal axis indices: one bucket
    assert len(pairs) == len(set.union(*pairs.values())) == 49  # a bijection onto all 49 buckets
    assert set.union(*pairs.values()) == set(range(49))


def test_clip_mapping_buckets() -> None:
    ids = bucket_ids((16, 8), "cross_rows", 1.9, "clip", skip=0)
    dy = torch.arange(16).repeat_interleave(8)
    assert torch.equal(ids, (dy[:, None] - dy[None, :]).clamp(-3, 3) + 3)


# --- the efficient terms against a per-pair reference -----------------------------------------

def per_pair_reference(
    mod: IRPE, q: torch.Tensor, k: torch.Tensor, attn: torch.Tensor, ctx: AttentionContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits term (B, H, T, T) and output term (B, H, T, d), one (i, j) pair at a time."""
    cfg, s = mod.cfg, mod.scale
    b, h, t, d = q.shape
    logits = torch.zeros(b, h, t, t, dtype=q.dtype)
    out = torch.zeros(b, h, t, d, dtype=q.dtype)
    for method in cfg.table_methods:  # bucket ids from the paper's definition, not the module's
        ids = ref.token_buckets(ctx.grid, ctx.num_prefix_tokens, method, cfg.ratio, cfg.mapping)
        for i, j in itertools.product(range(t), range(t)):
            for on in cfg.on:
                table = mod.tables[f"{on}_{method}"]
                if on == "v":
                    out[:, :, i] += attn[:, :, i, j, None] * table[:, ids[i, j], :]
                elif cfg.mode == "bias":
                    logits[:, :, i, j] += table[:, ids[i, j] if on == "k" else ids[j, i]]
                elif on == "k":
                    logits[:, :, i, j] += (s * q[:, :, i] * table[:, :, ids[i, j]]).sum(-1)
                else:
                    logits[:, :, i, j] += (s * k[:, :, j] * table[:, :, ids[j, i]]).sum(-1)
    return logits, out


@pytest.mark.parametrize("cfg", contextual_cfgs() + bias_cfgs(), ids=cfg_id)
def test_efficient_terms_equal_per_pair_reference(cfg: IRPEConfig) -> None:
    q, k, attn = random_qkv()
    mod = IRPE(cfg, head_dim=5, num_heads=3).double()
    randomise(mod)
    ref_logits, ref_out = per_pair_reference(mod, q, k, attn, CTX)
    bias = mod.logits_bias(q, k, CTX)
    assert bias is not None
    torch.testing.assert_close(bias.expand(2, 3, T, T), ref_logits, rtol=1e-12, atol=1e-12)
    out = mod.output_term(attn, CTX)
    if "v" in cfg.on:
        assert out is not None and mod.needs_probabilities
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    else:
        assert out is None and not mod.needs_probabilities


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("method", ["euclidean", "quant", "cross_rows", "product"])
def test_naive_key_term_equals_efficient(method: str, shared: bool) -> None:
    cfg = IRPEConfig(method="cross" if method == "cross_rows" else method, on="k", shared_head=shared)
    mod = IRPE(cfg, head_dim=5, num_heads=3).double()
    randomise(mod)
    q, k, _ = random_qkv()
    cpu = torch.device("cpu")
    total = sum(naive_contextual_key_term(q * mod.scale, mod.tables[f"k_{m}"], mod.bucket_ids(m, CTX, cpu))
                for m in cfg.table_methods)
    torch.testing.assert_close(mod.logits_bias(q, k, CTX), total, rtol=1e-12, atol=1e-12)


# --- position semantics ----------------------------------------------------------------------

def shifted_pairs(grid: tuple[int, int], shift: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices (with 1 prefix) of every patch p whose shift p + shift stays in the grid."""
    rows, cols = grid
    src, dst = [], []
    for y, x in itertools.product(range(rows), range(cols)):
        yy, xx = y + shift[0], x + shift[1]
        if 0 <= yy < rows and 0 <= xx < cols:
            src.append(1 + y * cols + x)
            dst.append(1 + yy * cols + xx)
    return torch.tensor(src), torch.tensor(dst)


SHIFTS = [(0, 1), (1, 0), (1, 1), (1, -1), (2, 1)]


@pytest.mark.parametrize("mode", ["bias", "contextual"])
@pytest.mark.parametrize("method", METHODS)
def test_terms_depend_only_on_offsets(method: str, mode: str) -> None:
    grid = (5, 4)
    ctx = AttentionContext(grid=grid, num_prefix_tokens=1)
    t = 1 + grid[0] * grid[1]
    mod = IRPE(IRPEConfig(method=method, mode=mode, on="qk", shared_head=False), 5, 3).double()
    randomise(mod)
    q, k, _ = random_qkv(t=t)
    for shift in SHIFTS:
        src, dst = shifted_pairs(grid, shift)
        for m in mod.cfg.table_methods:  # the bucket of (p, r) is the bucket of (p + s, r + s)
            ids = mod.bucket_ids(m, ctx, q.device)
            assert torch.equal(ids[src][:, src], ids[dst][:, dst])
        # the same query/key content placed at the shifted positions
        q2, k2 = q.clone(), k.clone()
        q2[:, :, dst], k2[:, :, dst] = q[:, :, src], k[:, :, src]
        before = mod.logits_bias(q, k, ctx).expand(2, 3, t, t)
        after = mod.logits_bias(q2, k2, ctx).expand(2, 3, t, t)
        torch.testing.assert_close(before[:, :, src][:, :, :, src], after[:, :, dst][:, :, :, dst],
                                   rtol=1e-12, atol=1e-12)


def test_prefix_pairs_use_the_extra_bucket() -> None:
    mod = IRPE(IRPEConfig(method="product", mode="bias", on="k"), 5, 3).double()
    assert mod.num_buckets == 50
    ids = mod.bucket_ids("product", CTX, torch.device("cpu"))
    assert (ids[0] == 49).all() and (ids[:, 0] == 49).all() and int(ids[1:, 1:].max()) < 49
    with torch.no_grad():
        mod.tables["k_product"][:, 49] = 1.0  # only the prefix bucket is non-zero
    q, k, _ = random_qkv()
    bias = mod.logits_bias(q, k, CTX)[0, 0]
    expected = torch.zeros(T, T, dtype=torch.float64)
    expected[0], expected[:, 0] = 1.0, 1.0
    assert torch.equal(bias, expected)


def test_skip_must_match_the_prefix_tokens() -> None:
    mod = IRPE(IRPEConfig(skip=0), 5, 3)
    q = torch.randn(1, 3, T, 5)
    with pytest.raises(ValueError, match="skip"):
        mod.logits_bias(q, q, CTX)


def test_token_count_must_match_the_grid() -> None:
    mod = IRPE(IRPEConfig(), 5, 3)
    q = torch.randn(1, 3, T + 1, 5)
    with pytest.raises(ValueError, match="tokens"):
        mod.logits_bias(q, q, CTX)


@pytest.mark.parametrize("kwargs", [
    {"method": "diagonal"}, {"mapping": "log"}, {"mode": "ctx"}, {"on": ""}, {"on": "kx"},
    {"on": "kk"}, {"mode": "bias", "on": "kv"}, {"ratio": 0.0}, {"skip": -1},
])
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        IRPEConfig(**kwargs)


def test_grid_is_rows_cols_not_sqrt() -> None:
    """Same token count, transposed grid: the terms differ, so the layout really is used."""
    mod = IRPE(IRPEConfig(method="cross", mode="bias", on="k"), 5, 3).double()
    randomise(mod)
    q, k, _ = random_qkv(t=1 + 128)
    tall = mod.logits_bias(q, k, AttentionContext((16, 8), 1))
    wide = mod.logits_bias(q, k, AttentionContext((8, 16), 1))
    assert tall.shape == wide.shape == (1, 1, 129, 129)
    assert not torch.equal(tall, wide)


# --- zero initialisation, gradients, Attention ------------------------------------------------

@pytest.mark.parametrize("cfg", contextual_cfgs() + bias_cfgs(), ids=cfg_id)
def test_zero_init_gives_exact_zero_terms(cfg: IRPEConfig) -> None:
    mod = IRPE(cfg, head_dim=5, num_heads=3)
    assert all((p == 0).all() for p in mod.parameters())
    q, k, attn = (x.float() for x in random_qkv())
    assert (mod.logits_bias(q, k, CTX) == 0).all()
    out = mod.output_term(attn, CTX)
    assert out is None or (out == 0).all()


def attention_cfgs() -> list[IRPEConfig]:
    cfgs = [IRPEConfig(method=m, mode=mode, on=on, shared_head=s)
            for m in METHODS for mode in ("bias", "contextual") for s in (True, False)
            for on in ("k", "q", "qk", "v", "qkv") if not (mode == "bias" and "v" in on)]
    return cfgs + [IRPEConfig(method=m, mapping="clip", on="qkv") for m in METHODS]


@pytest.mark.parametrize("cfg", attention_cfgs(), ids=cfg_id)
def test_attention_forward_backward_non_square(cfg: IRPEConfig) -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4, rel_pos=irpe_factory(cfg, head_dim=8, num_heads=4)(0))
    plain = Attention(32, 4)
    plain.load_state_dict(attn.state_dict(), strict=False)
    ctx = AttentionContext(grid=(16, 8), num_prefix_tokens=1)
    x = torch.randn(2, 1 + 16 * 8, 32, requires_grad=True)
    y = attn(x, ctx)
    assert y.shape == x.shape
    torch.testing.assert_close(y, plain(x, ctx), rtol=1e-5, atol=1e-6)  # zero tables: no change
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    tables = dict(attn.rel_pos.named_parameters())
    assert len(tables) == len(cfg.on) * len(cfg.table_methods)
    for name, p in tables.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_factory_gives_a_fresh_module_per_block() -> None:
    make = irpe_factory(IRPEConfig(), head_dim=8, num_heads=4)
    a, b = make(0), make(1)
    assert isinstance(a, IRPE) and a is not b
    assert a.tables["k_product"] is not b.tables["k_product"]
    assert a.tables["k_product"].shape == (1, 8, 50)
    per_head = irpe_factory(IRPEConfig(shared_head=False, on="v"), head_dim=8, num_heads=4)(0)
    assert per_head.tables["v_product"].shape == (4, 50, 8)
    bias = irpe_factory(IRPEConfig(mode="bias", method="cross"), head_dim=8, num_heads=4)(0)
    assert {n: tuple(p.shape) for n, p in bias.named_parameters()} == {
        "tables.k_cross_rows": (1, 8), "tables.k_cross_cols": (1, 8)}
