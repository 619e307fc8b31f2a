"""The package's import graph follows one layer order, with no cycles, and its registries are
filled by the modules ``registry.load_builtins`` imports.

Layer order (each may import only layers before it; imports inside functions and under
``TYPE_CHECKING`` count too): the package root, errors, registry < config (config.py,
config_rules.py) < metrics < layers < models < losses < data < datasets < synthetic < keypoints
< retrieval < evaluation < reporting < engine < testing (the public contract checks) < cli
(cli*.py, __main__.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from reidbench.registry import BUILTIN_MODULES

PACKAGE = REPO / "reidbench"
LAYERS = ["reidbench", "errors", "fileio", "registry", "config", "metrics", "layers", "models", "losses",
          "data", "datasets", "synthetic", "keypoints", "retrieval", "evaluation", "reporting",
          "engine", "testing", "cli"]
REGISTRIES = {"MODELS", "DATASETS", "LOSSES", "PERTURBATIONS"}
REGISTERING_CALLS = {"register_dataset", "register_market_layout"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The layer a module of the package belongs to (its subpackage or top-level module)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "reidbench"
    top = parts[1]
    if top.startswith("cli") or top == "__main__":
        return "cli"
    if top in ("config", "config_rules"):
        return "config"
    return top


def resolve(name: str) -> str:
    """The package module an imported name lives in: ``reidbench.engine.progress`` for
    ``from reidbench.engine import progress``, ``reidbench.config`` for ``reidbench.config.X``."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str, *, runtime_only: bool = False) -> Iterator[tuple[str, int]]:
    """(imported package module, line) of every import in ``module``, at any depth; with
    ``runtime_only``, those under ``if TYPE_CHECKING:`` are left out (they never run)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if runtime_only and isinstance(child, ast.If) and _type_checking(child):
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "reidbench" or name.startswith("reidbench."):
                yield resolve(name), node.lineno


def test_every_module_has_a_layer() -> None:
    unknown = sorted({layer_of(m) for m in MODULES} - set(LAYERS))
    assert not unknown, f"place {unknown} in the layer order (tests/test_layers.py, README)"


def test_each_layer_imports_only_earlier_layers() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for module in MODULES:
        mine = layer_of(module)
        for imported, line in imports(module):
            theirs = layer_of(imported)
            if theirs != mine and rank[theirs] > rank[mine]:
                upward.append(f"{MODULES[module].relative_to(REPO)}:{line} ({mine}) imports "
                              f"{imported} ({theirs})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules() -> None:
    """No module imports, directly or through others, a module that imports it back (imports
    inside functions included; type-only imports excluded)."""
    graph = {m: {i for i, _ in imports(m, runtime_only=True) if i != m} for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for module in sorted(graph):
        if module not in index:
            connect(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_lazy_import() -> None:
    """The checks read imports inside functions: engine/run.py's lazy FAISS import is seen."""
    assert ("reidbench.retrieval.rerank" in
            {name for name, _ in imports("reidbench.engine.run")})


def _registers(module: str) -> bool:
    """Whether ``module`` registers something when imported: a ``<REGISTRY>.register(...)`` or
    ``register_dataset(...)`` call outside function bodies (decorators included)."""
    def calls(node: ast.AST) -> Iterator[ast.Call]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in child.decorator_list:
                    yield from (n for n in ast.walk(deco) if isinstance(n, ast.Call))
                continue
            if isinstance(child, ast.Call):
                yield child
            yield from calls(child)

    for call in calls(ast.parse(MODULES[module].read_text())):
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "register" and isinstance(
                func.value, ast.Name) and func.value.id in REGISTRIES:
            return True
        if isinstance(func, ast.Name) and func.id in REGISTERING_CALLS:
            return True
    return False


def test_load_builtins_imports_every_registering_module() -> None:
    registering = {m for m in MODULES if _registers(m)}
    assert registering >= {"reidbench.models.vit", "reidbench.datasets.ijb", "reidbench.data.perturb"}
    assert registering == set(BUILTIN_MODULES), "registry.BUILTIN_MODULES must list exactly these"


def test_library_entry_points_load_the_builtins() -> None:
    """In a fresh interpreter, importing the packages registers nothing by side effect, and each
    build function finds every built-in name on its own (no import in the caller needed)."""
    code = """
import reidbench.datasets, reidbench.models, reidbench.evaluation
from reidbench.registry import DATASETS, MODELS, PERTURBATIONS
assert not len(DATASETS) and not len(MODELS), (DATASETS.names(), MODELS.names())
from reidbench.config import DataConfig, LossConfig, ModelConfig
from reidbench.datasets.catalog import build_dataset, dataset_info
from reidbench.errors import DatasetError
try:
    build_dataset(DataConfig(name="ijbc", root="/nonexistent"))
except DatasetError:
    pass
assert dataset_info("synthetic-faces").num_keypoints == 5
from reidbench.models import build_model
model = build_model(ModelConfig(name="kprpe", depth=1, embed_dim=32, num_heads=2), (32, 16), 5)
from reidbench.losses import build_loss
build_loss(LossConfig(terms=("arcface",), weights=(1.0,)), 32, 4)
from reidbench.data.perturb import build_perturbation
assert build_perturbation("affine").name == "affine" and len(PERTURBATIONS) == 6
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("package", ["datasets", "models", "losses"])
def test_package_docstrings_say_how_registration_works(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text())) or ""
    assert "registers every" not in doc.lower(), doc
