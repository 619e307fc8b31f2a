"""A small typed name -> object registry, one per pluggable axis of the benchmark.

Each registry is filled next to the code it registers (``@MODELS.register("ape")`` above the
builder in ``models/vit.py``, a dataset's entry in its adapter module, ...). ``load_builtins``
imports every module that registers something built in; the CLI and the library's ``build_*``
entry points call it, so a built-in name is known wherever a name is looked up, whatever the
caller imported before. It imports the modules by name, as ``load_plugins`` does for modules of
one's own (the CLI's ``--plugin`` and the ``reidbench.plugins`` entry points): the registry
itself depends on nothing of ours but ``errors``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
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

    def snapshot(self) -> dict[str, T]:
        """A copy of the entries, for ``restore`` (tests that register temporarily)."""
        return dict(self._items)

    def restore(self, items: dict[str, T]) -> None:
        """Put back the entries of a ``snapshot``: names registered since are forgotten."""
        self._items = dict(items)


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
    "reidbench.models.aligned",
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


# Entry-point group of third-party plugins: a package declares, in its pyproject.toml,
#   [project.entry-points."reidbench.plugins"]
#   my_encodings = "my_package.encodings"          (a module: importing it registers)
#   my_losses = "my_package.losses:register"       (or a function, called with no arguments)
PLUGIN_GROUP = "reidbench.plugins"
_plugins_loaded: set[str] = set()  # "module:NAME" / "entry-point:NAME=VALUE" already loaded


def load_plugins(modules: Iterable[str] = (), entry_points: bool = True) -> list[str]:
    """Import plugins, which register their models, losses, perturbations or datasets with the
    registries above as the built-in modules do.

    Args:
        modules: importable module names (the CLI's ``--plugin``), imported in the order given.
        entry_points: also load every entry point of the group ``reidbench.plugins`` of the
            installed distributions, in name order.

    Returns:
        the plugins loaded by this call (each one is loaded once per process).

    Raises:
        ReidbenchError: one line naming the plugin and the problem (not importable, failed while
            importing or registering, e.g. a name registered twice).
    """
    loaded = []
    for module in modules:
        if module.endswith(".py") or "/" in module or "\\" in module:
            stem = module.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
            raise ReidbenchError(f"plugin {module!r} is a file path; give its module name ({stem} "
                                 f"for {stem}.py) with its folder on PYTHONPATH")
        key = f"module:{module}"
        if key not in _plugins_loaded:
            _load(module, f"plugin {module!r}", lambda m=module: importlib.import_module(m))
            _plugins_loaded.add(key)
            loaded.append(module)
    if entry_points:
        from importlib.metadata import entry_points as find_entry_points

        for ep in sorted(find_entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
            key = f"entry-point:{ep.name}={ep.value}"
            if key in _plugins_loaded:
                continue
            dist = getattr(ep, "dist", None)
            where = (f"plugin entry point {ep.name} = {ep.value!r} (group {PLUGIN_GROUP}"
                     + (f", distribution {dist.name} {dist.version})" if dist else ")"))
            _load(ep.value, where, lambda ep=ep: _call_entry_point(ep.load()))
            _plugins_loaded.add(key)
            loaded.append(ep.value)
    return loaded


def _call_entry_point(obj: object) -> None:
    """An entry point names a module (imported: done) or a registration function (called)."""
    if callable(obj) and not isinstance(obj, type(importlib)):
        obj()


def _load(module: str, where: str, load: Callable[[], object]) -> None:
    try:
        load()
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            hint = ("; expected an importable module name such as my_package.encodings (is its "
                    "folder on PYTHONPATH? e.g. PYTHONPATH=. reidbench --plugin my_module ...)")
        raise ReidbenchError(f"cannot load {where}: {exc}{hint}") from None
    except Exception as exc:  # a plugin's own error: one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ReidbenchError(f"cannot load {where}: {type(exc).__name__}"
                             + (f": {first}" if first else "")) from None
