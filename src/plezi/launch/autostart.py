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

from .. import mainscript

__all__ = ["install", "no_autostart", "should_autostart"]

_disabled = False
_started = False
#: The script is loaded to be inspected (``plezi routes``): nothing serves, not even ``run()``.
_load_only = False
_failed = False


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
    if "pytest" in sys.modules or mainscript.main_module() == "unittest":
        return False
    if not mainscript.recorded_file():
        return False  # REPL, `python -c`, an embedded interpreter
    return not mainscript.main_is_tool() and has_work()


def install(start: Callable[[], Any], has_work: Callable[[], bool]) -> None:
    """Arrange for ``start()`` to run when the main script ends (once, at import of plezi)."""
    import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours

    mainscript.read_main()
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
