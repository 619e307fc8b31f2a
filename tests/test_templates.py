"""IJB template features against an independent per-template loop."""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.evaluation.templates import template_features, template_pair_scores


def loop_reference(feats, tids, mids):  # type: ignore[no-untyped-def]
    out = {}
    for t in sorted(set(tids.tolist())):
        in_t = tids == t
        total = np.zeros(feats.shape[1])
        for m in sorted(set(mids[in_t].tolist())):
            total += feats[in_t & (mids == m)].mean(0)
        out[t] = total / np.linalg.norm(total)
    return out


def test_media_mean_then_template_sum_then_normalise() -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((200, 8))
    tids = rng.integers(100, 130, 200)
    mids = rng.integers(0, 5, 200)  # media ids repeat across templates
    templates, tf = template_features(feats, tids, mids)
    ref = loop_reference(feats, tids, mids)
    assert templates.tolist() == sorted(ref)
    for t, f in zip(templates, tf):
        np.testing.assert_allclose(f, ref[t], atol=1e-6)


def test_hand_case_media_weighting() -> None:
    # template 7: media 1 has two frames (mean), media 2 one still; the sum weighs media equally
    feats = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    _, tf = template_features(feats, np.array([7, 7, 7]), np.array([1, 1, 2]))
    np.testing.assert_allclose(tf[0], np.array([2.0, 2.0]) / np.sqrt(8), atol=1e-7)


def test_pair_scores_in_chunks_and_missing_template() -> None:
    rng = np.random.default_rng(1)
    templates, tf = template_features(rng.standard_normal((50, 4)), rng.integers(0, 10, 50),
                                      rng.integers(0, 3, 50))
    t1, t2 = rng.choice(templates, 1000), rng.choice(templates, 1000)
    got = template_pair_scores(templates, tf, t1, t2, chunk=7)
    idx = {t: i for i, t in enumerate(templates)}
    ref = np.array([tf[idx[a]] @ tf[idx[b]] for a, b in zip(t1, t2)])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="template 999 has no images"):
        template_pair_scores(templates, tf, np.array([999]), templates[:1])
