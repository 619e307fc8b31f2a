"""The code base (package, tests, benchmarks, scripts) stays ruff clean (configuration in
pyproject.toml; ruff is a dev dependency)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "reidbench", "tests", "benchmarks",
                           "scripts"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
