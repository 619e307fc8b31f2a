"""A small typed name -> object registry, one per pluggable axis of the benchmark.

Each registry is filled next to the code it registers (``@MODELS.register("ape")`` above the
builder in ``models/vit.py``, a dataset's entry in its adapter module, ...). ``load_builtins``
imports every module that registers something built in; the CLI and the library's ``build_*``
entry points call it, so a built-in name is known wherever a name is looked up, whatever the
caller imported before. It imports the modules by name, as a plugin loader would: the registry
itself depends on nothing of ours but ``errors``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs in registration order."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


MODELS: Registry[Callable[..., object]] = Registry("model")
# entries are ``reidbench.datasets.catalog.DatasetEntry`` (the info `reidbench data list` shows
# and the builder), registered by ``catalog.register_dataset`` in each adapter module
DATASETS: Registry[Any] = Registry("dataset")
LOSSES: Registry[Callable[..., object]] = Registry("loss")
PERTURBATIONS: Registry[Callable[..., object]] = Registry("perturbation")

# Every module that registers a built-in model, loss, perturbation or dataset. Datasets are
# listed (`reidbench data list`) in this order of their modules.
BUILTIN_MODULES = (
    "reidbench.models.vit",
    "reidbench.models.poster",
    "reidbench.models.cnn",
    "reidbench.losses.modules",
    "reidbench.losses.margins",
    "reidbench.losses.positional",
    "reidbench.data.perturb",
    "reidbench.datasets.market1501",
    "reidbench.datasets.dukemtmc",
    "reidbench.datasets.msmt17",
    "reidbench.datasets.lfw",
    "reidbench.datasets.ijb",
    "reidbench.datasets.folder",
    "reidbench.synthetic.sets",
)
_loaded = False


def load_builtins() -> None:
    """Register every built-in model, loss, perturbation and dataset (imports
    ``BUILTIN_MODULES``; later calls return at once)."""
    global _loaded
    if _loaded:
        return
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    _loaded = True
