"""Independent references for the relative position terms, attention and the ViT forward pass.

Written from the published definitions, in numpy float64, without calling any helper of
``reidbench.layers`` (bucket ids, offsets, gathers, bucket attention): the tests compare the
library's efficient paths with these explicit per-pair forms.

- iRPE (Wu et al., ICCV 2021, Eq. 18 and the product / cross / euclidean / quant methods; the
  authors' ``irpe.py``): alpha:beta:gamma = 1:2:8 times ``ratio``; tokens are row-major patches
  after ``skip`` prefix tokens, offsets are position(i) - position(j) as (row, col); prefix pairs
  use one extra bucket after the method's own. Keys: (s q_i) . r[bucket(i, j)]; queries:
  (s k_j) . r[bucket(j, i)]; bias mode: t[bucket(i, j)] (keys), t[bucket(j, i)] (queries);
  values: out_i += sum_j attn_ij r[bucket(i, j)].
- Shaw et al. (NAACL 2018) in 2D: per-axis offsets clipped to [-k, k], a row and a column
  embedding summed; prefix pairs use row 2k + 1 of each table.
- KP-RPE (Kim et al., CVPR 2024; CVLface's ``make_rel_keypoints``): the offsets of every patch
  centre ((c + 0.5) / cols, (r + 0.5) / rows) to every keypoint, (x, y) per keypoint, go through a
  linear map to a per-patch iRPE-product bucket table; pair (i, j) reads table[i, bucket(i, j)].

The bucket table layouts (which bucket number a given offset lands in) are the documented ones of
``reidbench.layers.rel_index``: a learned table can be permuted freely, so only the layout links a
parameter entry to an offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import erf

Array = np.ndarray


# --- iRPE index functions and bucket layouts ---------------------------------------------------


def piecewise(x: float, ratio: float) -> int:
    """Eq. (18): round(x) for |x| <= alpha, else sign(x) min(beta, round(alpha + ln(|x| / alpha)
    / ln(gamma / alpha) (beta - alpha))), truncated to an integer."""
    alpha, beta, gamma = ratio, 2.0 * ratio, 8.0 * ratio
    if abs(x) <= alpha:
        return int(round(x))
    mag = alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    return int(math.copysign(min(beta, round(mag)), x))


def clipped(x: float, ratio: float) -> int:
    b = int(2.0 * ratio)
    return max(-b, min(b, int(round(x))))


def patch_bucket(method: str, dy: int, dx: int, ratio: float = 1.9, mapping: str = "piecewise") -> int:
    """Bucket of the patch offset (dy, dx) for one iRPE table method."""
    f = piecewise if mapping == "piecewise" else clipped
    b = int(2.0 * ratio)
    if method == "euclidean":
        return f(round(math.sqrt(dy * dy + dx * dx)), ratio)
    if method == "quant":
        return f(dy * dy + dx * dx, ratio)
    if method == "cross_rows":
        return f(dy, ratio) + b
    if method == "cross_cols":
        return f(dx, ratio) + b
    if method == "product":
        return (f(dy, ratio) + b) * (2 * b + 1) + f(dx, ratio) + b
    raise ValueError(method)


def patch_bucket_count(method: str, ratio: float = 1.9) -> int:
    b = int(2.0 * ratio)
    return {"euclidean": b + 1, "quant": b + 1, "cross_rows": 2 * b + 1, "cross_cols": 2 * b + 1,
            "product": (2 * b + 1) ** 2}[method]


def token_position(t: int, skip: int, cols: int) -> tuple[int, int] | None:
    """(row, col) of token t, None for a prefix token."""
    return None if t < skip else divmod(t - skip, cols)


def token_buckets(grid: tuple[int, int], skip: int, method: str, ratio: float = 1.9,
                  mapping: str = "piecewise") -> Array:
    """(T, T) bucket of every token pair, the prefix bucket numbered after the method's own."""
    rows, cols = grid
    t = skip + rows * cols
    out = np.empty((t, t), dtype=np.int64)
    extra = patch_bucket_count(method, ratio)
    for i in range(t):
        for j in range(t):
            pi, pj = token_position(i, skip, cols), token_position(j, skip, cols)
            if pi is None or pj is None:
                out[i, j] = extra
            else:
                out[i, j] = patch_bucket(method, pi[0] - pj[0], pi[1] - pj[1], ratio, mapping)
    return out


def irpe_methods(method: str) -> tuple[str, ...]:
    return ("cross_rows", "cross_cols") if method == "cross" else (method,)


class IRPETerm:
    """iRPE of one block from its lookup tables ``{"k_product": array, ...}`` (shapes: bias
    (H|1, nb); contextual q/k (H|1, d, nb); contextual v (H|1, nb, d))."""

    def __init__(self, tables: dict[str, Array], method: str, mode: str, on: str, grid: tuple[int, int],
                 skip: int = 1, ratio: float = 1.9, mapping: str = "piecewise") -> None:
        self.tables, self.mode, self.on = tables, mode, on
        self.ids = {m: token_buckets(grid, skip, m, ratio, mapping) for m in irpe_methods(method)}

    def logits(self, q: Array, k: Array, scale: float) -> Array:
        b, h, t, d = q.shape
        out = np.zeros((b, h, t, t))
        for m, ids in self.ids.items():
            for on in "qk":
                if on not in self.on:
                    continue
                table = self.tables[f"{on}_{m}"]
                if self.mode == "bias":
                    per_pair = table[:, ids]  # (H|1, T, T): t[bucket(i, j)]
                    out = out + (per_pair if on == "k" else per_pair.transpose(0, 2, 1))[None]
                elif on == "k":  # sum_d s q[b, h, i, d] r[h, d, bucket(i, j)]
                    emb = table[:, :, ids]  # (H|1, d, T, T)
                    out = out + np.einsum("bhid,hdij->bhij", scale * q, np.broadcast_to(emb, (h, d, t, t)))
                else:  # sum_d s k[b, h, j, d] r[h, d, bucket(j, i)]
                    emb = table[:, :, ids.T]  # (H|1, d, T, T), [.., i, j] = r[bucket(j, i)]
                    out = out + np.einsum("bhjd,hdij->bhij", scale * k, np.broadcast_to(emb, (h, d, t, t)))
        return out

    def values(self, attn: Array) -> Array | None:
        if "v" not in self.on:
            return None
        out = 0.0
        for m, ids in self.ids.items():
            emb = self.tables[f"v_{m}"][:, ids]  # (H|1, T, T, d)
            emb = np.broadcast_to(emb, (attn.shape[1], *emb.shape[1:]))
            out = out + np.einsum("bhij,hijd->bhid", attn, emb)
        return out


# --- Shaw et al. -----------------------------------------------------------------------------


def shaw_rows_cols(grid: tuple[int, int], skip: int, k: int) -> tuple[Array, Array]:
    """(T, T) row and column table index: clip(offset, -k, k) + k, prefix pairs 2k + 1."""
    rows, cols = grid
    t = skip + rows * cols
    r_ids = np.full((t, t), 2 * k + 1, dtype=np.int64)
    c_ids = np.full((t, t), 2 * k + 1, dtype=np.int64)
    for i in range(skip, t):
        for j in range(skip, t):
            (yi, xi), (yj, xj) = divmod(i - skip, cols), divmod(j - skip, cols)
            r_ids[i, j] = max(-k, min(k, yi - yj)) + k
            c_ids[i, j] = max(-k, min(k, xi - xj)) + k
    return r_ids, c_ids


class ShawTerm:
    """Shaw RPE of one block: ``key_rows``, ``key_cols`` (and ``value_*``) of shape (H|1, 2k + 2, d)."""

    def __init__(self, tables: dict[str, Array], grid: tuple[int, int], k: int, skip: int = 1) -> None:
        self.tables = tables
        self.r, self.c = shaw_rows_cols(grid, skip, k)

    def _pairs(self, kind: str) -> Array:  # (H|1, T, T, d) a_ij
        return self.tables[f"{kind}_rows"][:, self.r] + self.tables[f"{kind}_cols"][:, self.c]

    def logits(self, q: Array, k: Array, scale: float) -> Array:
        a = self._pairs("key")
        return np.einsum("bhid,hijd->bhij", scale * q, np.broadcast_to(a, (q.shape[1], *a.shape[1:])))

    def values(self, attn: Array) -> Array | None:
        if "value_rows" not in self.tables:
            return None
        a = self._pairs("value")
        return np.einsum("bhij,hijd->bhid", attn, np.broadcast_to(a, (attn.shape[1], *a.shape[1:])))


# --- KP-RPE ----------------------------------------------------------------------------------


def keypoint_features(keypoints: Array, grid: tuple[int, int]) -> Array:
    """(B, N, 2K): [cx - x_0, cy - y_0, cx - x_1, ...] per patch, patch centres in [0, 1]."""
    rows, cols = grid
    b, kk, _ = keypoints.shape
    out = np.empty((b, rows * cols, 2 * kk))
    for n in range(rows * cols):
        r, c = divmod(n, cols)
        cx, cy = (c + 0.5) / cols, (r + 0.5) / rows
        for j in range(kk):
            out[:, n, 2 * j] = cx - keypoints[:, j, 0]
            out[:, n, 2 * j + 1] = cy - keypoints[:, j, 1]
    return out


class KPRPETerm:
    """KP-RPE of block ``layer`` from the shared parameters: ``weight`` (depth * H * nb, 2K) and
    ``bias`` (depth * H * nb,) read as (depth, H, nb), ``prefix_bias`` (depth, H)."""

    def __init__(self, params: dict[str, Array], layer: int, depth: int, heads: int,
                 grid: tuple[int, int], keypoints: Array | None, skip: int = 1, ratio: float = 1.9) -> None:
        nb = patch_bucket_count("product", ratio)
        self.w = params["weight"].reshape(depth, heads, nb, -1)[layer]  # (H, nb, 2K)
        self.b = params["bias"].reshape(depth, heads, nb)[layer]  # (H, nb)
        self.prefix = params["prefix_bias"][layer]  # (H,)
        self.grid, self.skip, self.keypoints, self.heads = grid, skip, keypoints, heads
        self.ids = token_buckets(grid, 0, "product", ratio)  # (N, N) patch pairs only

    def logits(self, q: Array, k: Array, scale: float) -> Array:
        bsz, h, t, _ = q.shape
        n, s = self.grid[0] * self.grid[1], self.skip
        if self.keypoints is None:
            table = np.broadcast_to(self.b[None, :, None, :], (bsz, h, n, self.b.shape[-1]))
        else:
            feats = keypoint_features(self.keypoints, self.grid)  # (B, N, 2K)
            table = np.einsum("hkc,bnc->bhnk", self.w, feats) + self.b[None, :, None, :]
        out = np.broadcast_to(self.prefix[None, :, None, None], (bsz, h, t, t)).copy()
        rows = np.arange(n)[:, None]
        out[:, :, s:, s:] = table[:, :, rows, self.ids]  # table[b, h, i, bucket(i, j)]
        return out

    def values(self, attn: Array) -> None:
        return None


# --- attention and the ViT -------------------------------------------------------------------


class Term:
    """What a relative encoding adds: ``logits(q, k, scale)`` (B, H, T, T) and ``values(attn)``."""

    def logits(self, q: Array, k: Array, scale: float) -> Array:
        return np.zeros((*q.shape[:3], q.shape[2]))

    def values(self, attn: Array) -> Array | None:
        return None


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


AnyTerm = Term | IRPETerm | ShawTerm | KPRPETerm


def attention(x: Array, p: dict[str, Array], heads: int, term: AnyTerm) -> Array:
    """softmax(s q k^T + term) v (+ value term), heads merged, projected. x (B, T, C); p holds
    ``qkv.weight`` (3C, C) whose rows are [q; k; v], each split into heads of d consecutive
    rows, ``qkv.bias``, ``proj.weight``, ``proj.bias``."""
    b, t, c = x.shape
    d = c // heads
    qkv = x @ p["qkv.weight"].T + p["qkv.bias"]  # (B, T, 3C)

    def split(part: int) -> Array:  # (B, H, T, d)
        return qkv[..., part * c:(part + 1) * c].reshape(b, t, heads, d).transpose(0, 2, 1, 3)

    q, k, v = split(0), split(1), split(2)
    scale = d ** -0.5
    attn = softmax(scale * q @ k.transpose(0, 1, 3, 2) + term.logits(q, k, scale))
    out = attn @ v
    extra = term.values(attn)
    if extra is not None:
        out = out + extra
    return out.transpose(0, 2, 1, 3).reshape(b, t, c) @ p["proj.weight"].T + p["proj.bias"]


def layer_norm(x: Array, w: Array, b: Array, eps: float = 1e-6) -> Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x: Array) -> Array:
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def vit_tokens(params: dict[str, Array], images: Array, patch: int, depth: int, heads: int,
               terms: Callable[[int], AnyTerm]) -> Array:
    """(B, 1 + N, D) final tokens of a pre-norm ViT with a CLS token, from its parameters by
    name: patch_embed.proj (conv, stride = kernel = patch), cls_token, pos_embed.embed (optional),
    blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm; ``terms(i)`` is block
    i's relative term."""
    b, ch, hh, ww = images.shape
    r, c = hh // patch, ww // patch
    w = params["patch_embed.proj.weight"]  # (D, 3, p, p)
    tiles = images.reshape(b, ch, r, patch, c, patch)
    x = np.einsum("bkrucv,dkuv->brcd", tiles, w).reshape(b, r * c, -1) + params["patch_embed.proj.bias"]
    cls = np.broadcast_to(params["cls_token"], (b, 1, x.shape[-1]))
    x = np.concatenate([cls, x], axis=1)
    if "pos_embed.embed" in params:
        x = x + params["pos_embed.embed"]
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in params.items() if k.startswith(f"blocks.{i}.")}
        attn_p = {k[len("attn."):]: v for k, v in p.items() if k.startswith("attn.")}
        x = x + attention(layer_norm(x, p["norm1.weight"], p["norm1.bias"]), attn_p, heads, terms(i))
        h = layer_norm(x, p["norm2.weight"], p["norm2.bias"])
        h = gelu(h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
        x = x + h @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
    return layer_norm(x, params["norm.weight"], params["norm.bias"])
