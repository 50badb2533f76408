"""Imports point one way: the layer order of docs/architecture.md, checked on every module.

The graph counts every import a reader must follow: module level, inside functions, and under
``if TYPE_CHECKING:``. A module may import its own layer's modules and the layers below it,
never a layer above; and no chain of imports may come back to where it started (within a
layer too). The order is written here and in docs/architecture.md, nowhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "plezi"

#: Bottom to top. A name is a module or a package (the package's modules with it).
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base",
        ["plezi.compiled", "plezi.errors", "plezi.mainscript", "plezi.throttle", "plezi.version"],
    ),
    ("protocol", ["plezi.protocol"]),
    ("http", ["plezi.http"]),
    ("config", ["plezi.config"]),
    ("server", ["plezi.server"]),
    ("pubsub", ["plezi.pubsub"]),
    ("web", ["plezi.web"]),
    ("asgi", ["plezi.asgi"]),
    ("launch", ["plezi.launch"]),
    ("api", ["plezi", "plezi.testing", "plezi.__main__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, found = -1, -1
    for index, (_name, members) in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > best:
                best, found = len(member), index
    if found < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return found


def imports_of(module: str) -> set[str]:
    """The plezi modules ``module`` imports (the module itself excluded)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in MODULES else target)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(m for m in GRAPH[module] if layer_of(m) > mine)
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports a layer above it: {upward}"


def test_the_checks_catch_what_they_must() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("plezi.server.http") > layer_of("plezi.protocol.reader")
    assert layer_of("plezi") == len(LAYERS) - 1


def test_docs_state_the_same_order() -> None:
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    positions = [text.find(f"`{name}`") for name, _ in LAYERS]
    assert all(p >= 0 for p in positions), "docs/architecture.md names every layer in backticks"
    assert positions == sorted(positions), "docs/architecture.md lists the layers bottom to top"
