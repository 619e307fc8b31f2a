"""Progress bars: the one place reidbench draws them (tqdm), used by engine code.

Bars are off unless the caller turns them on for a block with ``showing(True)``: the CLI does
so when stderr is a terminal and ``-q`` is not given; a library caller gets none unless it asks.
Code below the engine never draws: it takes a plain callback (``extract_features(...,
on_batch=...)``), which ``ticks`` provides from a bar here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from tqdm.auto import tqdm

_SHOWING: ContextVar[bool] = ContextVar("reidbench_progress_bars", default=False)


@contextmanager
def showing(enabled: bool = True) -> Iterator[None]:
    """Draw progress bars (or not) inside this block."""
    token = _SHOWING.set(enabled)
    try:
        yield
    finally:
        _SHOWING.reset(token)


def bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (``desc``, ``total``, ``unit``, ``leave``, ... as tqdm takes them), disabled
    outside ``showing(True)``."""
    return tqdm(iterable, disable=not _SHOWING.get(), **kwargs)


@contextmanager
def ticks(total: int, desc: str) -> Iterator[Callable[[], None]]:
    """A transient bar of ``total`` steps; the callable advances it by one."""
    with bar(total=total, desc=desc, leave=False) as steps:
        yield steps.update
