"""Records are created with the mode ``open`` would give them (0o666 less the umask), not
mkstemp's 0o600; a replaced file keeps its own mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from reidbench import fileio


@pytest.fixture
def umask() -> Iterator[None]:
    saved = os.umask(0o022)
    yield
    os.umask(saved)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664),
                                           (0o077, 0o600)])
def test_new_records_respect_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    os.umask(mask)
    fileio.atomic_write_json(tmp_path / "metrics.json", {"mAP": 0.5})
    fileio.atomic_write_text(tmp_path / "history.jsonl", "{}\n")
    fileio.atomic_write_bytes(tmp_path / "grid.png", b"\x89PNG")
    fileio.atomic_torch_save(tmp_path / "checkpoint.pt", {"w": torch.zeros(2)})
    (tmp_path / "plain.txt").write_text("x")  # what open() gives: the reference
    assert mode(tmp_path / "plain.txt") == expected
    for name in ("metrics.json", "history.jsonl", "grid.png", "checkpoint.pt"):
        assert mode(tmp_path / name) == expected, name


@pytest.mark.usefixtures("umask")
def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "leaderboard.csv"
    target.write_text("old\n")
    target.chmod(0o664)
    os.umask(0o077)
    fileio.atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and mode(target) == 0o664


@pytest.mark.usefixtures("umask")
def test_reading_the_umask_leaves_it_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    os.umask(0o027)
    assert fileio.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # unchanged by the read

    def no_proc(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(fileio, "open", no_proc, raising=False)  # the set-and-restore fallback
    assert fileio.current_umask() == 0o027
    assert os.umask(0o027) == 0o027
