"""The package ships its config presets (package data), finds them when installed from a wheel,
and the tests that read ``../shared/data`` skip with the reason where it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, require_shared_data

import reidbench
from reidbench.config import CONFIG_DIR


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel . --no-deps --no-build-isolation`` of a copy of the source (the build writes
    build/ and *.egg-info beside the sources: never into the checkout)."""
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the build backend is not installed ({exc.name}); building without network "
                    "needs setuptools and wheel (pip wheel --no-build-isolation)")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "reidbench", src / "reidbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = _pip("wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (tmp / "dist").glob("reidbench-*.whl")
    return built


def test_config_dir_is_inside_the_package() -> None:
    assert CONFIG_DIR == Path(reidbench.__file__).resolve().parent / "configs"
    assert (CONFIG_DIR / "base.yaml").is_file()
    assert not (REPO / "configs").exists()  # one copy of the presets, the package's


def test_wheel_contains_every_config_preset(wheel: Path) -> None:
    presets = {f"reidbench/configs/{p.relative_to(CONFIG_DIR).as_posix()}"
               for p in CONFIG_DIR.rglob("*.yaml")}
    assert len(presets) >= 15 and {"reidbench/configs/base.yaml",
                                   "reidbench/configs/datasets/synthetic-reid.yaml"} <= presets
    assert presets <= set(zipfile.ZipFile(wheel).namelist())


def test_an_installed_wheel_runs_on_its_presets(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel (not editable, away from the checkout), the presets are found
    inside the installed package: synthetic-reid's 40 epochs, not the dataclass default 12."""
    site = tmp_path / "site"
    proc = _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("import reidbench, reidbench.config as c; "
            "print(reidbench.__file__); print(c.CONFIG_DIR); "
            "print(c.resolve_config('synthetic-reid').train.epochs)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    module, config_dir, epochs = run.stdout.split()
    assert Path(module).is_relative_to(site) and Path(config_dir) == site / "reidbench" / "configs"
    assert epochs == "40"


def test_missing_shared_data_skips_naming_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"absent here: .*nowhere"):
        require_shared_data(tmp_path / "nowhere")
    require_shared_data(tmp_path)  # present: no skip
