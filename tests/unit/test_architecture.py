"""The dependency rule, read from the source: a module's folder says what it may import.

Builds the import graph of pipeline/, schemas/ and agents/ from the AST (every `import`
and `from … import`, including those inside functions and `TYPE_CHECKING` blocks) and
asserts the layering of README.md ("Architecture") with no allow-list:

- no import cycles between the project's modules;
- Faust (faust, mode) and aiokafka only under agents/;
- clickhouse_connect (and chdb) only under pipeline/adapters/clickhouse/;
- pipeline/domain imports only the standard library, numpy/scipy, `schemas` and itself;
- pipeline/service imports no adapter, tool, Settings or bootstrap; adapters import no tool.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "schemas", "agents")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _sources()


def _imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name the module imports (for `from a import b`: `a.b` and `a`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def _resolve(name: str) -> str | None:
    """The project module an imported name refers to (the longest existing prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    internal: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name in _imported_names(module, path):
            target = _resolve(name)
            if target is None:
                external[module].add(name.split(".")[0])
            elif target != module:
                internal[module].add(target)
    return internal, external


INTERNAL, EXTERNAL = _graph()


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for targets in graph.values() for w in targets}):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions():
    # cli imports its commands lazily, inside functions: the graph must still see them
    assert "pipeline.tools.demo" in INTERNAL["pipeline.tools.cli"]
    assert "pipeline.domain.state" in INTERNAL["pipeline.domain.scoring"]
    # agents.faust_internals imports aiokafka and faust only inside the functions that patch / use them
    assert {"faust", "aiokafka"} <= EXTERNAL["agents.faust_internals"]


def test_no_import_cycles():
    assert _cycles(INTERNAL) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("library, home", [
    ("faust", "agents"), ("mode", "agents"), ("aiokafka", "agents"),
    ("clickhouse_connect", "pipeline.adapters.clickhouse"), ("chdb", "pipeline.adapters.clickhouse"),
])
def test_framework_imported_only_in_its_home(library, home):
    offenders = sorted(m for m, libs in EXTERNAL.items() if library in libs and not _under(m, home))
    assert offenders == [], f"{library} imported outside {home}/"


def test_domain_imports_only_stdlib_numpy_scipy_and_schemas():
    allowed_external = set(sys.stdlib_module_names) | {"numpy", "scipy", "__future__"}
    bad = {}
    for module in MODULES:
        if not _under(module, "pipeline.domain"):
            continue
        wrong = sorted(lib for lib in EXTERNAL[module] if lib not in allowed_external)
        wrong += sorted(t for t in INTERNAL[module]
                        if not (_under(t, "pipeline.domain") or _under(t, "schemas") or t == "pipeline"))
        if wrong:
            bad[module] = wrong
    assert bad == {}


def test_learning_imports_only_stdlib_numeric_and_ml_libraries_and_domain():
    """pipeline/learning trains models: numpy/scipy/scikit-learn/LightGBM (and threadpoolctl,
    scikit-learn's own, for the BLAS threads) and the domain (features, snapshots), no I/O
    layers; the domain never imports learning."""
    allowed_external = set(sys.stdlib_module_names) | {"numpy", "scipy", "sklearn", "lightgbm", "threadpoolctl",
                                                       "__future__"}
    bad = {}
    for module in MODULES:
        if not _under(module, "pipeline.learning"):
            continue
        wrong = sorted(lib for lib in EXTERNAL[module] if lib not in allowed_external)
        wrong += sorted(t for t in INTERNAL[module]
                        if not (_under(t, "pipeline.domain") or _under(t, "pipeline.learning")
                                or _under(t, "schemas") or t == "pipeline"))
        if wrong:
            bad[module] = wrong
    assert any(_under(m, "pipeline.learning") for m in MODULES)
    assert bad == {}


@pytest.mark.parametrize("layer, forbidden", [
    ("pipeline.service", ("pipeline.adapters", "pipeline.tools", "pipeline.bootstrap", "pipeline.config", "agents")),
    ("pipeline.adapters", ("pipeline.tools", "pipeline.bootstrap", "agents")),
    ("schemas", ("pipeline", "agents")),
])
def test_layer_imports_nothing_above_it(layer, forbidden):
    bad = {m: sorted(t for t in INTERNAL[m] if any(_under(t, f) for f in forbidden))
           for m in MODULES if _under(m, layer)}
    assert {m: t for m, t in bad.items() if t} == {}
