"""The positive control of issue 19 at the level where KP-RPE acts: can its keypoint term LEARN to
point attention at a keypoint, and does the static table of iRPE's product bias (the same module
without the keypoint term) fail at it?

Task: an 8x8 patch grid; per sample one random patch p carries three keypoints (its top-left and
top-right corners and the middle of its bottom edge, as the image-level control marks its
identity square). Every query patch within one patch of p (Chebyshev distance <= 1, iRPE's exact
buckets at ratio 1.9) should put its attention on p. One attention layer whose logits are the
KP-RPE bias alone is trained with Adam on -log(attention on p). A static table can only learn
"attend to a neighbour on average", at best about 1/9 of the mass; a keypoint term that works
moves the peak with the keypoints. The reference is the task's optimum (mass 1 on p), not the
implementation.
"""

from __future__ import annotations

import torch

from reidbench.layers.kprpe import KeypointRPE
from reidbench.layers.position import AttentionContext

GRID = (8, 8)
N = GRID[0] * GRID[1]


def keypoints_on(patch: torch.Tensor) -> torch.Tensor:
    """(B,) patch indices -> (B, 3, 2) keypoints (x, y) in [0, 1]: the patch's top-left and
    top-right corners and the middle of its bottom edge."""
    r, c = (patch // GRID[1]).float(), (patch % GRID[1]).float()
    rows, cols = GRID
    return torch.stack([torch.stack([c / cols, r / rows], -1),
                        torch.stack([(c + 1) / cols, r / rows], -1),
                        torch.stack([(c + 0.5) / cols, (r + 1) / rows], -1)], dim=1)


def near(patch: torch.Tensor) -> torch.Tensor:
    """(B, N) True for the query patches within one patch (Chebyshev) of ``patch``."""
    idx = torch.arange(N)
    dr = (idx[None] // GRID[1] - (patch // GRID[1])[:, None]).abs()
    dc = (idx[None] % GRID[1] - (patch % GRID[1])[:, None]).abs()
    return torch.maximum(dr, dc) <= 1


def attention_on(module: KeypointRPE, patch: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """(B, N) log of the attention each query patch puts on ``patch`` (logits = KP-RPE bias)."""
    ctx = AttentionContext(GRID, 0, keypoints)
    logp = module.layer_bias(0, ctx, len(patch))[:, 0].log_softmax(-1)  # (B, N, N)
    return logp.gather(2, patch[:, None, None].expand(-1, N, 1))[..., 0]


def train(keypoint_term: bool, steps: int = 300) -> KeypointRPE:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    module = KeypointRPE(num_keypoints=3, depth=1, num_heads=1)
    params = [module.weight, module.bias] if keypoint_term else [module.bias]  # bias: iRPE's table
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(steps):
        patch = torch.randint(0, N, (32,), generator=gen)
        mask = near(patch)
        loss = -(attention_on(module, patch, keypoints_on(patch)) * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return module


def mass_on_keypoint_patch(module: KeypointRPE, shuffle: bool = False) -> float:
    """Mean attention on the keypoints' patch from its neighbours, on 256 fresh samples;
    ``shuffle``: each sample gets another sample's keypoints."""
    gen = torch.Generator().manual_seed(1)
    patch = torch.randint(0, N, (256,), generator=gen)
    kps = keypoints_on(patch)
    if shuffle:
        kps = kps[torch.randperm(len(patch), generator=gen)]
    with torch.no_grad():
        mass = attention_on(module, patch, kps).exp()
    return float(mass[near(patch)].mean())


def test_kprpe_learns_to_attend_where_the_keypoints_are_and_a_static_table_cannot() -> None:
    kprpe, static = train(keypoint_term=True), train(keypoint_term=False)
    learned, fixed = mass_on_keypoint_patch(kprpe), mass_on_keypoint_patch(static)
    assert fixed < 0.2  # a table that ignores the keypoints: about 1/9 (1/4-1/6 at the borders)
    assert learned > 0.5 > fixed  # measured 0.65 after 300 steps (0.92 after 1000)
    # it reads the keypoints: with another sample's keypoints the peak is elsewhere and the
    # patch gets no more than a static table gives it (measured 0.14; 0.13 static)
    assert mass_on_keypoint_patch(kprpe, shuffle=True) < 0.2
    assert float(kprpe.weight.detach().abs().max()) > 1.0  # the keypoint map moved far from its zero init
