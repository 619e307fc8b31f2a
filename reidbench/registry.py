"""A small typed name -> object registry, one per pluggable axis of the benchmark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reidbench.errors import ReidbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders. Lookup of an unknown name raises a ReidbenchError listing the known ones.

    Args:
        kind: what is registered ("model", "dataset", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise ReidbenchError(f"unknown {self.kind} {name!r}; expected one of: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


MODELS: Registry[Callable[..., object]] = Registry("model")
DATASETS: Registry[Callable[..., object]] = Registry("dataset")
LOSSES: Registry[Callable[..., object]] = Registry("loss")
PERTURBATIONS: Registry[Callable[..., object]] = Registry("perturbation")
