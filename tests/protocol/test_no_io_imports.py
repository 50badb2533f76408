"""plezi.protocol is sans-I/O: no module in it may import an I/O or concurrency module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "src" / "plezi" / "protocol"
FORBIDDEN = {"asyncio", "socket", "selectors", "ssl", "threading"}
MODULES = sorted(PROTOCOL_DIR.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names imported by ``tree``, including dynamic imports of literals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            arg = node.args[0]
            if name in ("__import__", "import_module") and isinstance(arg, ast.Constant):
                names.add(str(arg.value))
    return names


def test_modules_found() -> None:
    names = {path.name for path in MODULES}
    assert {
        "__init__.py",
        "close.py",
        "connection.py",
        "frames.py",
        "reader.py",
        "handshake.py",
        "sse.py",
    } <= names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = {name for name in imported_modules(tree) if name.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_detector_catches_forbidden_imports() -> None:
    samples = [
        "import asyncio",
        "import socket as s",
        "from selectors import DefaultSelector",
        "import ssl, os",
        "from threading import Lock",
        "import asyncio.events",
        "__import__('socket')",
        "importlib.import_module('threading')",
    ]
    for source in samples:
        found = imported_modules(ast.parse(source))
        assert {n.split(".")[0] for n in found} & FORBIDDEN, source


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_every_module_has_all(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    targets = [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert "__all__" in targets


def test_package_reexports_every_public_name() -> None:
    import plezi.protocol as package
    from plezi.protocol import close, connection, deflate, frames, handshake, reader, sse

    modules = (close, connection, deflate, frames, handshake, reader, sse)
    for module in modules:
        for name in module.__all__:
            assert name in package.__all__, name
            assert getattr(package, name) is getattr(module, name)
    assert sorted(package.__all__) == sorted(n for m in modules for n in m.__all__)
