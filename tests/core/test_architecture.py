"""The shape of the package (docs/architecture.md): no import cycles, imports point one way
(command line and demos -> sources -> core), one package per source, small modules that say
what they hold, and a registry whose "module:Class" strings name real classes.

The import graph is read from the source with ``ast``, without importing anything: every
``import`` and ``from ... import`` counts, at module level, inside functions and under
``if TYPE_CHECKING:`` alike (a cycle hidden in a function is still a cycle). Importing a
submodule does not count as importing the packages above it (Python runs their ``__init__``
first, but that is not a dependency of the importer's code).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "tensorfeed"
MAX_LINES = 600
# Modules allowed over MAX_LINES, each with its reason. Keep it short; empty is best.
LONG_MODULES: dict[str, str] = {}
# Re-export modules kept at an old path for imports in docs and examples (not a source of
# their own): the source package they belong to.
SHIMS = {"tensorfeed.sources._kafka_mock": "tensorfeed.sources.kafka"}
TOP = ("tensorfeed.cli", "tensorfeed.inspect", "tensorfeed.demo")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _target(name: str) -> str | None:
    """``name`` or its closest enclosing module that is one of ours (None: not ours)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str) -> set[str]:
    """The modules of ours that module ``name`` imports, anywhere in its code."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                t = _target(alias.name)
                if t is not None:
                    found.add(t)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule, not the package's own code
                t = _target(f"{module}.{alias.name}")
                if t != f"{module}.{alias.name}":
                    t = _target(module)
                if t is not None:
                    found.add(t)
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(name: str) -> str:
    if name == "tensorfeed":
        return "facade"
    if any(name == t or name.startswith(t + ".") for t in TOP):
        return "top"
    if name.startswith("tensorfeed.sources"):
        return "sources"
    return "core"


def _source_of(name: str) -> str:
    """The source package a module belongs to (``tensorfeed.sources.sql`` ...)."""
    name = SHIMS.get(name, name)
    return ".".join(name.split(".")[:3])


def test_the_graph_is_read():
    # a guard against a reader that silently sees nothing
    assert "tensorfeed.sources.sql.dataset" in GRAPH["tensorfeed.sources.sql"]
    assert "tensorfeed.dataset" in GRAPH["tensorfeed.sources.memory"]
    assert "tensorfeed.registry" in GRAPH["tensorfeed.cli"]  # an import inside a function
    assert "tensorfeed.sources.lake.fs" in GRAPH["tensorfeed.demo.lake"]


def test_there_are_no_import_cycles():
    cycles = _cycles(GRAPH)
    shown = [
        " <-> ".join(c) + ": " + "; ".join(f"{a} -> {sorted(GRAPH[a] & set(c))}" for a in c)
        for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(shown)


def test_the_core_imports_no_source_command_line_or_demo():
    bad = {
        (m, t)
        for m in GRAPH
        if _layer(m) == "core"
        for t in GRAPH[m]
        if _layer(t) in ("sources", "top", "facade")
    }
    assert not bad, sorted(bad)


def test_sources_import_only_the_core_and_themselves():
    bad = {
        (m, t)
        for m in GRAPH
        if _layer(m) == "sources"
        for t in GRAPH[m]
        if _layer(t) in ("top", "facade")
        or (_layer(t) == "sources" and t != "tensorfeed.sources" and _source_of(t) != _source_of(m))
    }
    assert not bad, sorted(bad)


def test_every_kind_of_source_is_a_package_that_names_its_classes():
    import tensorfeed.sources as sources

    for kind in ("sql", "lake", "kafka", "files"):
        name = f"tensorfeed.sources.{kind}"
        assert _is_package(name), f"{name} should be a folder with an __init__.py"
        module = importlib.import_module(name)
        assert module.__all__, name
        for public in module.__all__:
            assert hasattr(module, public), f"{name}.__all__ names {public}, which it lacks"
    assert not _is_package("tensorfeed.sources.memory")  # the simplest source is one module
    assert sources.__doc__


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_are_small_and_say_what_they_hold(name):
    path = MODULES[name]
    lines = len(path.read_text().splitlines())
    if name not in LONG_MODULES:
        assert lines <= MAX_LINES, f"{path} has {lines} lines (at most {MAX_LINES})"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.split()) >= 5, f"{path} opens with no docstring saying what it holds"


def test_the_long_module_allow_list_is_not_stale():
    for name in LONG_MODULES:
        assert len(MODULES[name].read_text().splitlines()) > MAX_LINES, name


def test_the_registry_points_at_real_classes():
    from tensorfeed.dataset import MapDataset, StreamDataset
    from tensorfeed.registry import _REGISTRY

    for scheme, (target, _extra) in _REGISTRY.items():
        module, _, cls = target.partition(":")
        assert module in MODULES, f"{scheme}: {module} is not a module of tensorfeed"
        found = getattr(importlib.import_module(module), cls)
        assert issubclass(found, MapDataset | StreamDataset), f"{scheme}: {target}"
        assert callable(getattr(found, "from_url", None)), f"{scheme}: {target} has no from_url"
