"""Reading a dataset tree's files so that every failure is one DatasetError naming the path.

Dataset text files (``pairs.txt``, keypoint sidecars, IJB meta files, MSMT17 lists) are UTF-8
(ASCII is UTF-8; a leading byte-order mark is accepted). A file in another encoding is an
error naming the file, the line and the offending byte, never a ``UnicodeDecodeError``
traceback. ``os_errors`` turns an ``OSError`` raised while listing or reading a tree (above
all ``PermissionError``) into a DatasetError naming the path; ``catalog.build_dataset`` wraps
every adapter in it, so no adapter has to guard each ``iterdir`` or ``stat``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reidbench.errors import DatasetError

ENCODING = "utf-8-sig"  # UTF-8, a leading byte-order mark (as spreadsheets write) dropped


def os_error_message(exc: OSError, what: str = "") -> str:
    """One line for an OSError: what failed, on which path, and what to do about it."""
    path = exc.filename if exc.filename is not None else "?"
    reason = exc.strerror or type(exc).__name__
    prefix = f"{what}: " if what else ""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{prefix}permission denied on {path} ({reason}); make it readable "
            "(and folders listable) by this user, or point to another copy"
        )
    if exc.errno == errno.ENOSPC:
        return f"{prefix}no space left on the device while writing {path}; free some space"
    return f"{prefix}cannot access {path}: {reason}"


@contextmanager
def os_errors(what: str) -> Iterator[None]:
    """Re-raise an OSError from the block as a DatasetError (``os_error_message``)."""
    try:
        yield
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(os_error_message(exc, what)) from None


def decode_error(path: Path, data: bytes, exc: UnicodeDecodeError, what: str) -> DatasetError:
    """The DatasetError for ``data`` (the bytes of ``path``) failing to decode at ``exc.start``."""
    line = data.count(b"\n", 0, exc.start) + 1
    return DatasetError(
        f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
        f"{what} must be UTF-8 (ASCII is fine): re-save it as UTF-8"
    )


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``; a missing or unreadable file is a DatasetError naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(os_error_message(exc, what)) from None


def read_text(path: Path, what: str) -> str:
    """The text of ``path``, decoded as UTF-8 (``what`` names the file's role in errors)."""
    data = read_bytes(path, what)
    try:
        return data.decode(ENCODING)
    except UnicodeDecodeError as exc:
        raise decode_error(Path(path), data, exc, what) from None


def check_utf8(path: Path, what: str) -> None:
    """Raise the DatasetError of ``read_text`` if ``path`` is not UTF-8; used after a fast
    parser (numpy) failed, to tell an encoding problem from a malformed line."""
    read_text(path, what)


def is_number(text: str) -> bool:
    """Whether a CSV cell parses as a float (tells a header row from a data row)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
