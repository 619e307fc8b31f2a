"""Files the package writes and reads: atomic writes, and the one safe reader of torch files.

Atomic writes: a result file is either absent or complete, never half-written.

Every writer goes through ``_atomic``: the data goes to a temporary file beside the target
(``.<name>.<random>.tmp``), is flushed and fsynced, then renamed over the target. Whatever
stops it (an error, a full disk, Ctrl-C) removes the temporary file and leaves the previous
version of the target untouched. An ``OSError`` of the operating system (no space left,
permission denied, a directory in the way) becomes one ``RecordWriteError`` line naming the
file and the error, even where the writer (``torch.save``) wraps it in an error of its own.
The file gets the mode a plain ``open(path, "w")`` would give it: the target's own mode when it
exists, else ``0o666`` less the umask (``tempfile.mkstemp`` alone would give ``0o600``, records
only their owner could read).

Reading: ``load_torch_file`` is the only ``torch.load`` in the package, always with
``weights_only=True`` (tensors and plain values; a pickled object that would run code is refused
before it is built). Its callers (checkpoints, pretrained weights) turn its errors into one line
naming the file.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reidbench.errors import ReidbenchError


class RecordWriteError(ReidbenchError, OSError):
    """A file could not be written (full disk, permissions, ...); the previous version is kept.

    Also an ``OSError``, so code that handles OS errors keeps working."""


class _Recording:
    """A binary file that remembers the first ``OSError`` its writes raised.

    ``torch.save`` reports a failed write as ``RuntimeError: ... unexpected pos`` (the OS error
    only surfaces later, if at all); this keeps the real cause."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise


def _write_error(path: Path, exc: OSError) -> RecordWriteError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    error = RecordWriteError(f"cannot write {path}: {reason}; nothing was changed there (the "
                             "previous version, if any, is kept)")
    error.errno = exc.errno
    return error


def _atomic(path: Path, write: Callable[[Any], Any]) -> None:
    tmp: str | None = None
    sink: _Recording | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, _file_mode(path))
        with os.fdopen(fd, "wb") as fh:
            sink = _Recording(fh)
            write(sink)
            sink.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, RecordWriteError)):
            raise
        cause = exc if isinstance(exc, OSError) else sink.error if sink is not None else None
        if cause is None:
            raise
        raise _write_error(path, cause) from exc


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux >= 4.7:
    ``/proc/self/status``); elsewhere set and restored at once (under a lock for our own
    threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    """The permission bits of a file written at ``path``: those of the file already there, else
    ``0o666`` less the umask, as ``open`` would create it."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda fh: fh.write(data))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic(path, lambda fh: torch.save(obj, fh))


def load_torch_file(path: Path) -> Any:
    """The object in a ``torch.save`` file, on the CPU, read with ``weights_only=True``.

    Raises ``pickle.UnpicklingError`` for anything but tensors and plain values (no code in the
    file runs), ``OSError`` when it cannot be read, and torch's own errors for a truncated or
    foreign file; callers name the file in one line."""
    return torch.load(path, map_location="cpu", weights_only=True)
