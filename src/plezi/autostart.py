"""Autostart: like Plezi, a script that defines routes serves them when it ends.

The server starts after the main script finishes, unless :func:`plezi.run` already ran,
:func:`plezi.no_autostart` was called, ``PLEZI_NO_AUTOSTART`` is set, the script failed with an
exception, there is nothing to serve (no route, and no ``--public`` folder on the command line),
or Python is not running a script of the user's: a REPL (``python``, ``python -i``),
``python -c``, a test runner, or a tool that imports the app (uvicorn, gunicorn, hypercorn,
granian ...).

The hook runs when the main thread finishes, before the interpreter shuts its thread pools
down (``threading``'s exit hooks, registered after ``concurrent.futures``' own), so the server
can still use threads.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["install", "main_file", "no_autostart", "set_main", "should_autostart"]

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

_disabled = False
_started = False
#: The script is loaded to be inspected (``plezi routes``): nothing serves, not even ``run()``.
_load_only = False
_failed = False
#: The main script's file and module name, read at import: CPython removes ``__main__.__file__``
#: once the script has run, which is exactly when the hook looks.
_main_file: str | None = None
_main_module = ""


def no_autostart() -> None:
    """Do not start the server when the script ends."""
    global _disabled
    _disabled = True


def load_only() -> None:
    """The main script is loaded only to inspect it (``plezi routes``): neither the end of the
    script nor ``plezi.run()`` starts the server."""
    global _load_only
    _load_only = True
    no_autostart()


def loading_only() -> bool:
    """Whether :func:`load_only` was called."""
    return _load_only


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


def mark_started() -> None:
    """Record that the server ran (``plezi.run()``), so the script's end starts nothing."""
    global _started
    _started = True


def should_autostart(has_work: Callable[[], bool]) -> bool:
    """Whether the end of the main script should start the server now; ``has_work()`` (are
    there routes, or a public folder?) is asked last, when everything else says yes."""
    if _disabled or _started or _failed:
        return False
    if os.environ.get("PLEZI_NO_AUTOSTART") or sys.flags.interactive or hasattr(sys, "ps1"):
        return False
    if "pytest" in sys.modules or _main_module == "unittest":
        return False
    if not _main_file:
        return False  # REPL, `python -c`, an embedded interpreter
    return _main_module not in _TOOLS and has_work()


def main_is_tool() -> bool:
    """Whether the main program is a tool that imports the app (uvicorn, gunicorn ...)."""
    if _main_file is None and not _main_module:
        _read_main()
    return _main_module in _TOOLS


def _read_main() -> None:
    global _main_file, _main_module
    main = sys.modules.get("__main__")
    _main_file = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        _main_module = str(spec.name).split(".")[0]
    else:
        _main_module = os.path.basename(_main_file or "").removesuffix(".py")


def install(start: Callable[[], Any], has_work: Callable[[], bool]) -> None:
    """Arrange for ``start()`` to run when the main script ends (once, at import of plezi)."""
    import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours

    _read_main()
    previous_hook = sys.excepthook

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        global _failed
        _failed = True  # the script crashed: serving half an app would hide the error
        previous_hook(kind, value, tb)

    sys.excepthook = excepthook

    def at_end() -> None:
        if threading.current_thread() is threading.main_thread() and should_autostart(has_work):
            code = start()
            if code:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(at_end)
    else:  # pragma: no cover - every supported Python has it
        import atexit

        atexit.register(at_end)
