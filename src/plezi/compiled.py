"""Which of plezi's modules run compiled (mypyc), and the switch back to pure Python.

The hot, fully typed modules in :data:`MODULES` are compiled to C extensions by mypyc when plezi
is installed (``setup.py``); the ``.py`` files stay beside them and are the same program. They
are used instead of the extensions (all of them, never a mix) when:

* ``PLEZI_PURE_PYTHON=1`` is in the environment (profilers such as py-spy see into pure Python
  only; the test suite runs once in each mode);
* any source is newer than its extension (an edited checkout: ``scripts/install`` rebuilds them);
* some modules have an extension and others do not (a half-finished build).

A machine without a C compiler installs no extensions at all and runs the same ``.py`` files.
:func:`mode` tells which it is; the server logs it at start.

This module has no plezi import (``setup.py`` reads :data:`MODULES` from it) and acts when
first imported: ``plezi/__init__.py`` imports it before any compiled module can load.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["MODULES", "build_problem", "mode", "native_helper", "optional_attr"]

#: ``getattr(obj, name, default)`` for compiled code to call. PERF: compiled, the expression
#: ``getattr(obj, name, None)`` is ``PyObject_GetAttr`` plus clearing the AttributeError of a
#: miss: an exception object and its formatted message each time (about 3,000 instructions: a
#: controller without ``on_open``, ``on_close`` or ``pre_connect`` paid it per connection). The
#: builtin, called as a function, looks the name up without raising when it is not there.
optional_attr: Callable[[object, str, Any], Any] = builtins.getattr

#: The compiled modules: the HTTP request path, the WebSocket reader, framing and handshake.
#: Interpreted code cannot subclass their classes (mypyc's rule) unless a class is marked
#: ``@mypyc_attr(allow_interpreted_subclasses=True)``, as ``RoutePattern`` is.
MODULES: tuple[str, ...] = (
    "plezi.http.paths",
    "plezi.http.request",
    "plezi.protocol.close",
    "plezi.protocol.connection",
    "plezi.protocol.frames",
    "plezi.protocol.handshake",
    "plezi.protocol.reader",
    "plezi.server.connection",
    "plezi.server.h1",
    "plezi.server.http",
    "plezi.server.sse",
    "plezi.server.state",
    "plezi.server.websocket",
    "plezi.web.app",
    "plezi.web.patterns",
    "plezi.web.routes",
)

#: A source edited less than this long after its extension was built still counts as built
#: with it: installing from a wheel writes both within moments, in no set order.
_SLACK_SECONDS = 2.0

_ROOT = Path(__file__).resolve().parent


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the ``.py`` file of a compiled module, never its extension."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES or not path:
            return None
        loaders = [(importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES)]
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *loaders).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def _extension(module: str) -> tuple[Path, Path | None]:
    """The source of ``module`` and its extension (``None`` when it has none)."""
    source = _ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        built = source.with_suffix(suffix)
        if built.exists():
            return source, built
    return source, None


def _choose(found: list[tuple[Path, Path | None]]) -> tuple[str, str, bool]:
    """``("compiled" | "pure", why, whether that is what the install meant)`` for the modules'
    sources and extensions (:func:`_extension`)."""
    if os.environ.get("PLEZI_PURE_PYTHON", "") not in ("", "0"):
        return "pure", "PLEZI_PURE_PYTHON is set", True
    built = [(source, extension) for source, extension in found if extension is not None]
    if not built:
        return "pure", "no compiled modules are installed", True
    if len(built) != len(found):
        return "pure", f"only {len(built)} of {len(found)} modules are compiled", False
    for source, extension in built:
        if source.stat().st_mtime > extension.stat().st_mtime + _SLACK_SECONDS:
            why = f"{source.name} is newer than its compiled module (reinstall plezi)"
            return "pure", why, False
    return "compiled", f"{len(built)} modules compiled with mypyc", True


_FOUND = [_extension(module) for module in MODULES]
_MODE, _WHY, _MEANT = _choose(_FOUND)
if _MODE == "pure" and any(extension for _, extension in _FOUND):
    sys.meta_path.insert(0, _SourceFinder())


def mode() -> tuple[str, str]:
    """How plezi runs: ``("compiled", why)`` or ``("pure", why)``, as the start log line says."""
    return _MODE, _WHY


def build_problem() -> str | None:
    """Why the compiled modules installed are not used (stale or half built), or ``None``."""
    return None if _MEANT else _WHY


def native_helper(name: str) -> ModuleType | None:
    """The C helper module ``name`` (``setup.py`` builds it beside the compiled modules), or
    ``None`` when plezi runs as pure Python (:func:`mode`) or it was not built here."""
    if _MODE != "compiled":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
