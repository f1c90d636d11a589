"""Layers only point down, and no module import cycles.

The subpackages of ``brainvq_monai`` form layers, lowest first::

    <root> <- utils <- networks <- losses, metrics <- data <- transforms <- visualize <- inferers <- engines
           <- handlers <- bundle <- apps <- cli

A module may import modules of its own layer and of lower layers only (``scripts/`` and ``tests/`` may import
anything). Every import counts: module level, inside functions and classes, under ``try`` or ``if TYPE_CHECKING``,
absolute or relative (``from . import x``, ``from ..data import y``), and ``importlib.import_module`` with a literal
(or literal-prefixed f-string) module name. Lazy imports do not excuse an upward import: what a lower layer needs
moves down.

One adjustment to the order of the issue: ``<root>`` is the package's own ``brainvq_monai/__init__.py``, which holds
only ``__version__`` and imports nothing; it sits below ``utils`` because ``utils.environment.versions`` reports the
package version (``import brainvq_monai``). Were the root ever to import a subpackage, this test would flag it.

The cycle check builds the graph of module-to-module imports (the same imports; ``from pkg import name`` points at
``pkg.name`` when that is a module, else at ``pkg``; the implicit import of a parent package's ``__init__`` is not an
edge, or every package importing its own siblings would be a cycle; an f-string ``import_module`` names no module
and is no edge) and fails on every strongly connected component
with more than one module, except the ones listed in ``KNOWN_CYCLES`` with their reason; a known cycle that grows
fails, and one that is gone fails until it is removed from the list.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

PACKAGE = "brainvq_monai"
ROOT = "<root>"

#: layers, lowest first; a group of names shares one layer
LAYERS: list[tuple[str, ...]] = [
    (ROOT,),
    ("utils",),
    ("networks",),
    ("losses", "metrics"),
    ("data",),
    ("transforms",),
    ("visualize",),
    ("inferers",),
    ("engines",),
    ("handlers",),
    ("bundle",),
    ("apps",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

#: strongly connected components that are known and tolerated for now, with the reason
KNOWN_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's target inside the package."""

    source: str  #: importing module
    path: Path  #: its file
    line: int
    target: str  #: imported module (or the package prefix of a dynamic import)
    text: str  #: the statement as written
    exact: bool = True  #: False for an f-string import, whose module is known only up to its literal prefix


def _modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package."""
    out = {}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return ROOT if len(parts) == 1 else parts[1]


def _resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str, path: Path) -> Iterator[Import]:
    """Every import of a package module in ``path``, at any depth of the syntax tree."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        targets: list[str] = []
        exact = True
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import name`` imports the submodule pkg.name when there is one
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                targets = [arg.value]
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                targets = [str(arg.values[0].value).rstrip(".")]  # the literal prefix of an f-string
                exact = False
        for target in dict.fromkeys(targets):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                text = ast.get_source_segment(path.read_text(), node) or ast.dump(node)
                yield Import(module, path, node.lineno, _resolve(target), " ".join(text.split()), exact)


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


ALL_IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def test_every_subpackage_has_a_layer():
    unknown = sorted({_layer(m) for m in MODULES} - set(RANK))
    assert not unknown, f"modules outside every layer: {unknown}; add them to LAYERS in {Path(__file__).name}"


def test_layers_only_point_down():
    violations = [
        f"{imp.path.relative_to(REPO)}:{imp.line}: {_layer(imp.source)} imports {imp.target} "
        f"({_layer(imp.target)}, a higher layer): {imp.text}"
        for imp in ALL_IMPORTS
        if RANK[_layer(imp.target)] > RANK[_layer(imp.source)]
    ]
    assert not violations, "upward imports (move what is needed down instead):\n" + "\n".join(violations)


def test_the_checker_sees_nested_relative_and_dynamic_imports(tmp_path):
    source = (
        "from . import writers\n"
        "from ..engines import utils\n"
        "def f():\n"
        "    import brainvq_monai.apps.demo\n"
        "    importlib.import_module(f'brainvq_monai.bundle.{x}')\n"
    )
    path = tmp_path / "fake.py"
    path.write_text(source)
    found = {(imp.line, imp.target) for imp in _imports(f"{PACKAGE}.data.fake", path)}
    assert found == {
        (1, f"{PACKAGE}.data.writers"),
        (2, f"{PACKAGE}.engines.utils"),
        (4, f"{PACKAGE}.apps.demo"),
        (5, f"{PACKAGE}.bundle"),
    }


def _graph() -> dict[str, dict[str, Import]]:
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in ALL_IMPORTS:
        if imp.exact and imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].setdefault(imp.target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; returns the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _describe(component: list[str], graph: dict[str, dict[str, Import]]) -> str:
    edges = [
        f"  {imp.path.relative_to(REPO)}:{imp.line}: {imp.text}"
        for source in component
        for target, imp in sorted(graph[source].items())
        if target in component
    ]
    return f"{component}:\n" + "\n".join(edges)


def test_no_import_cycles():
    graph = _graph()
    components = _strongly_connected(graph)
    new = [c for c in components if frozenset(c) not in KNOWN_CYCLES]
    grown = [c for c in new if any(known < frozenset(c) for known in KNOWN_CYCLES)]
    assert not new, (
        ("known cycles that grew:\n" if grown else "import cycles:\n")
        + "\n".join(_describe(c, graph) for c in new)
        + "\nbreak them by moving what both modules need into a third, lower one"
    )
    gone = [sorted(known) for known in KNOWN_CYCLES if sorted(known) not in components]
    assert not gone, f"these cycles are gone, remove them from KNOWN_CYCLES: {gone}"


def test_cycle_finder_finds_a_planted_cycle():
    def imp(source: str, target: str) -> Import:
        return Import(source, REPO / "x.py", 1, target, f"import {target}")

    graph = {"a": {"b": imp("a", "b")}, "b": {"c": imp("b", "c")}, "c": {"a": imp("c", "a")}, "d": {"a": imp("d", "a")}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b": imp("a", "b")}, "b": {}}) == []
