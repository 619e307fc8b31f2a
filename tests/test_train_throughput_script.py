"""benchmarks/train_throughput.py runs end to end on a tiny input (its numbers are not checked:
timings are never asserted), in both timing modes, and prints one well-formed row per model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
TINY = ["--sizes", "nano", "--precisions", "fp32", "--models", "timm,ape,rope", "--steps", "1",
        "--warmup", "1", "--height", "32", "--width", "16", "--batch", "2", "--classes", "3",
        "--loader-workers", "", "--threads", "1"]
ROW = re.compile(r"^\| CPU .*, 1 threads \| nano \| fp32 \| (\w+) \| ([\d.]+) \| (.+?) \| - \|$")


def run(*extra: str) -> dict[str, tuple[float, str]]:
    out = subprocess.run([sys.executable, str(SCRIPT), *TINY, *extra], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    rows = {m.group(1): (float(m.group(2)), m.group(3))
            for m in map(ROW.match, out.splitlines()) if m}
    assert list(rows) == ["timm", "ape", "rope"], out
    assert all(rate > 0 for rate, _ in rows.values())
    return rows


@pytest.mark.slow  # two model builds and training steps in a subprocess: about 20 s
def test_one_pass_reports_ratios_to_timm() -> None:
    rows = run()
    assert rows["timm"][1] == "1.00"
    assert all(re.fullmatch(r"\d+\.\d\d", ratio) for _, ratio in rows.values())


@pytest.mark.slow
def test_rounds_report_the_median_ratio_and_its_range() -> None:
    rows = run("--rounds", "3")
    assert rows["timm"][1] == "1.00 (1.00-1.00)"
    for _, ratio in rows.values():
        m = re.fullmatch(r"(\d+\.\d\d) \((\d+\.\d\d)-(\d+\.\d\d)\)", ratio)
        assert m and float(m.group(2)) <= float(m.group(1)) <= float(m.group(3))


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--steps", "0"]])
def test_impossible_counts_are_refused(bad: list[str]) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), *TINY, *bad], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "must be >= 1" in done.stderr
