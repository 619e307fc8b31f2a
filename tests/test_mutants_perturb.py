"""Perturbations: what the mutation run found undefended (scripts/mutation_test.py).

The level descriptions written into the robustness reports had no test: they are compared with
the module docstring's table, level by level. Also: "" names the default set and "all" every
perturbation, a
malformed severity range is one error, a draw without keypoints has no keypoint noise rows,
keypoint noise is float32 like the keypoints.
"""

from __future__ import annotations

import numpy as np
import pytest

from reidbench.data.perturb import (
    ORDER,
    build_perturbation,
    parse_names,
    parse_severities,
)
from reidbench.errors import ConfigError

# the docstring's table: scale d, rotate a, translate t, kpnoise s at severities 1..5
DESCRIPTIONS = {
    "scale": ["none", "x0.92 or x1.08", "x0.84 or x1.16", "x0.76 or x1.24", "x0.68 or x1.32",
              "x0.60 or x1.40"],
    "rotate": ["none", "+-8 deg", "+-16 deg", "+-24 deg", "+-32 deg", "+-40 deg"],
    "translate": ["none", "5% of size", "10% of size", "15% of size", "20% of size",
                  "25% of size"],
    "affine": ["none"] + [f"rot U(+-{a} deg), scale U(1+-{d}), shift U(+-{t}%)" for a, d, t in
                          [(8, "0.08", 5), (16, "0.16", 10), (24, "0.24", 15), (32, "0.32", 20),
                           (40, "0.40", 25)]],
    "kpnoise": ["none", "sigma 2% of size", "sigma 4% of size", "sigma 6% of size",
                "sigma 8% of size", "sigma 10% of size"],
}
DESCRIPTIONS["affine_kpnoise"] = ["none"] + [f"{a}; keypoints {k}" for a, k in
                                             zip(DESCRIPTIONS["affine"][1:], DESCRIPTIONS["kpnoise"][1:])]


@pytest.mark.parametrize("name", ORDER)
def test_level_descriptions_follow_the_table(name: str) -> None:
    perturbation = build_perturbation(name)
    assert [perturbation.describe(s) for s in range(6)] == DESCRIPTIONS[name]
    with pytest.raises(ConfigError, match="severity must be an integer in 0..5"):
        perturbation.describe(6)


@pytest.mark.parametrize("text", [None, "", "  "])
def test_empty_names_the_default_set_in_report_order(text: str | None) -> None:
    assert parse_names(text) == tuple(n for n in ORDER if n != "affine_kpnoise")


@pytest.mark.parametrize("text", ["all", " all "])
def test_all_names_every_perturbation_in_report_order(text: str) -> None:
    assert parse_names(text)[:len(ORDER)] == ORDER


def test_malformed_severity_ranges_are_one_error() -> None:
    assert parse_severities("1-3") == (0, 1, 2, 3)
    for text in ("-1-2", "1-3-5", "a-2"):
        with pytest.raises(ConfigError, match="malformed severities"):
            parse_severities(text)


def test_a_draw_without_keypoints_has_no_noise_rows() -> None:
    noise = build_perturbation("kpnoise").draw(3, np.random.default_rng(0), (112, 112))
    assert noise.keypoint_noise is not None and noise.keypoint_noise.shape == (0, 2)


def test_keypoint_noise_is_float32() -> None:
    mis = build_perturbation("kpnoise").draw(2, np.random.default_rng(1), (128, 64), 5)
    assert mis.keypoint_noise is not None
    assert mis.keypoint_noise.dtype == np.float32 and mis.keypoint_noise.shape == (5, 2)
