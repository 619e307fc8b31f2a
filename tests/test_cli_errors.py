"""The CLI's last-resort handling: operating-system errors are one line and exit 2; programming
errors and Ctrl-C are not hidden."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import pytest

from reidbench import cli


def features(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "f.npz"
    np.savez(path, query_feats=rng.standard_normal((4, 8)).astype(np.float32),
             gallery_feats=rng.standard_normal((12, 8)).astype(np.float32),
             query_pids=np.arange(4), gallery_pids=np.arange(12) % 4,
             query_camids=np.zeros(4, int), gallery_camids=np.ones(12, int))
    return path


def test_json_pointing_at_a_directory_is_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").mkdir()
    code = cli.main(["-q", "evaluate", "--features", str(features(tmp_path)), "--json",
                     str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert f"--json {tmp_path / 'out'} is a directory" in captured.err
    assert captured.out == ""  # refused before any metric was computed
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("exc,line", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/runs"),
     "reidbench: error: cannot access /data/runs: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device", "/r/checkpoint.pt"),
     "reidbench: error: cannot write /r/checkpoint.pt: No space left on device"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/r/lb.csv"),
     "reidbench: error: cannot access /r/lb.csv: Is a directory"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
     "reidbench: error: cannot access /a -> /b: Invalid cross-device link"),
    (OSError("something odd\nhappened"), "reidbench: error: cannot access a file: something odd happened"),
])
def test_os_errors_that_escape_a_command_are_one_line(
    exc: OSError, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    def boom(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_leaderboard", boom)
    code = cli.main(["-q", "leaderboard"])
    err = capsys.readouterr().err
    assert code == 2 and err == line + "\n"


def test_verbose_shows_where_an_os_error_came_from(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def boom(args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    monkeypatch.setattr(cli, "cmd_leaderboard", boom)
    with caplog.at_level(logging.DEBUG, logger="reidbench"):
        assert cli.main(["-v", "leaderboard"]) == 2
    assert any(r.exc_info and r.exc_info[0] is PermissionError for r in caplog.records)
    capsys.readouterr()


@pytest.mark.parametrize("exc", [ValueError("bug"), TypeError("bug"), KeyError("bug"),
                                 KeyboardInterrupt()])
def test_programming_errors_and_ctrl_c_are_not_swallowed(
    exc: BaseException, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "cmd_leaderboard", boom)
    with pytest.raises(type(exc)):
        cli.main(["-q", "leaderboard"])


def test_a_real_os_error_from_the_file_system(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A runs folder that cannot be listed (EACCES is not testable as root: simulate it)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    real_iterdir = Path.iterdir

    def denied(self: Path):  # type: ignore[no-untyped-def]
        if self == runs:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    code = cli.main(["-q", "leaderboard", "--runs", str(runs), "--out", str(tmp_path / "lb.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"reidbench: error: cannot access {runs}: Permission denied\n"
    assert not (tmp_path / "lb.csv").exists()
