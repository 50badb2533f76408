"""The main script: which file Python runs, and whether it is a tool that imports the app.

Several layers ask (templates look for ``views/`` beside the script, the pub/sub app name comes
from its name, autostart serves when it ends), so the answer lives here, below them all. It is
read when plezi is imported: CPython removes ``__main__.__file__`` once the script has run,
which is exactly when autostart looks.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main_file", "main_is_tool", "main_module", "read_main", "recorded_file", "set_main"]

#: ``__main__`` programs that import an app rather than being it.
_TOOLS = frozenset(
    [
        "pytest",
        "py.test",
        "uvicorn",
        "gunicorn",
        "hypercorn",
        "granian",
        "daphne",
        "ipython",
        "jupyter",
        "jupyter-lab",
        "pydoc",
        "sphinx-build",
        "celery",
        "rq",
        "mypy",
        "ruff",
        "coverage",
        "pdb",
        "trace",
        "cProfile",
        "profile",
    ]
)

#: The main script's file and module name (see the module docstring).
_main_file: str | None = None
_main_module = ""


def set_main(path: str) -> None:
    """``path`` is the main script, though ``__main__`` is another module: the ``plezi``
    command runs scripts with :mod:`runpy`."""
    global _main_file, _main_module
    _main_file = os.path.abspath(path)
    _main_module = os.path.basename(path).removesuffix(".py")


def main_file() -> str | None:
    """The main script's absolute path; ``None`` for a REPL or ``python -c``.

    Read when plezi was imported (CPython deletes ``__main__.__file__`` once the script ends,
    before autostart serves), else now (``python -m package.module`` imports plezi from the
    package before its ``__main__`` module exists)."""
    found = _main_file or getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.abspath(found) if found else None


def recorded_file() -> str | None:
    """The main script's file as recorded at import (or by :func:`set_main`), unresolved."""
    return _main_file


def main_module() -> str:
    """The main program's module name (``chat`` for ``chat.py``, ``uvicorn`` ...)."""
    return _main_module


def main_is_tool() -> bool:
    """Whether the main program is a tool that imports the app (uvicorn, gunicorn ...)."""
    if _main_file is None and not _main_module:
        read_main()
    return _main_module in _TOOLS


def read_main() -> None:
    """Record ``__main__``'s file and module name now."""
    global _main_file, _main_module
    main = sys.modules.get("__main__")
    _main_file = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        _main_module = str(spec.name).split(".")[0]
    else:
        _main_module = os.path.basename(_main_file or "").removesuffix(".py")
