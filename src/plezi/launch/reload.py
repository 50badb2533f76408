"""``--reload``: restart the server when the application's files change (development only).

Like uvicorn's reloader, the process started with ``--reload`` never serves: it binds the
listening socket, starts the server in a child process (a fresh interpreter running the same
command line, told by :data:`RELOAD_ENV` which inherited socket to serve), watches files with
``watchfiles``, and on a change stops the child gracefully (WebSockets get close 1001; the
browser client reconnects by itself) and starts a new one. The socket stays open in this
process the whole time, so a client connecting during a restart waits in its backlog instead
of being refused.

What is watched: every ``.py`` file under the main script's folder, every file in the templates
folder (``views/``), and every file under each ``--reload-dir``; caches, virtual environments
and version-control folders are ignored (``watchfiles.DefaultFilter``). A child that exits on
its own (a syntax error in the edited file) is reported, and the next change starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from watchfiles import Change, DefaultFilter, awatch

from .. import mainscript
from ..config import ServerConfig
from ..http import templates

__all__ = ["RELOAD_ENV", "Reloader", "reload_child_fd", "watched_folders"]

log = logging.getLogger("plezi")

#: The inherited listening socket's descriptor, in the environment of the server's process.
RELOAD_ENV = "PLEZI_RELOAD_FD"
#: Seconds between checks that the server's process is alive.
_POLL = 0.2


def reload_child_fd() -> int | None:
    """The listening socket to serve when this process is the server under ``--reload``."""
    value = os.environ.get(RELOAD_ENV, "")
    return int(value) if value.isdigit() else None


def _app_folder() -> str:
    main = mainscript.main_file()
    return os.path.dirname(main) if main else os.getcwd()


def watched_folders(config: ServerConfig) -> tuple[str, list[str]]:
    """``(the app's folder, [the templates folder and the --reload-dir folders])``: in the
    first only ``.py`` files count, in the others every file."""
    app = os.path.realpath(_app_folder())
    others = [os.path.realpath(templates.folder())]
    others += [os.path.realpath(d) for d in config.reload_dirs]
    return app, others


class _Filter(DefaultFilter):
    """``.py`` files anywhere under the watched folders, and any file under ``everything``
    (the templates, ``--reload-dir``), minus what :class:`DefaultFilter` ignores."""

    def __init__(self, everything: Sequence[str]) -> None:
        super().__init__()
        self._everything = tuple(os.path.join(d, "") for d in everything)

    def __call__(self, change: Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        return path.endswith(".py") or os.path.realpath(path).startswith(self._everything)


class Reloader:
    """Runs in the process started with ``--reload`` (see the module docstring)."""

    def __init__(self, config: ServerConfig, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock
        self.child: subprocess.Popen[bytes] | None = None
        self._reported = False

    def _spawn(self) -> None:
        fd = self.sock.fileno()
        env = {**os.environ, RELOAD_ENV: str(fd)}
        # A session of its own: Ctrl+C reaches this process only, which stops the server once.
        self.child = subprocess.Popen(
            [sys.executable, *sys.orig_argv[1:]], env=env, pass_fds=(fd,), start_new_session=True
        )
        self._reported = False

    async def run(self) -> int:
        """Watch and restart until SIGINT/SIGTERM; returns the exit code."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        app, others = watched_folders(self.config)
        folders = [app, *(d for d in others if os.path.isdir(d))]
        log.warning(
            "reload is on: the server restarts when a file changes in %s (development only: "
            "never in production)",
            ", ".join(folders),
        )
        watch = loop.create_task(self._watch(folders, others, stop))
        try:
            self._spawn()
            while not stop.is_set() and not watch.done():
                self._check_child()
                try:
                    await asyncio.wait_for(stop.wait(), _POLL)
                except TimeoutError:
                    pass
        finally:
            stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._stop_child()
            await asyncio.wait([watch], timeout=5.0)
            if self.config.is_unix:  # the server leaves the socket's path to this process
                with contextlib.suppress(OSError):
                    os.unlink(self.config.bind)
        failed = watch.exception() if watch.done() and not watch.cancelled() else None
        if failed is not None:  # e.g. the system's limit of watched folders
            log.error("--reload cannot watch the files (%s); stopped", failed)
            return 1
        return 0

    async def _watch(self, folders: list[str], others: list[str], stop: asyncio.Event) -> None:
        async for changes in awatch(*folders, watch_filter=_Filter(others), stop_event=stop):
            names = sorted({os.path.relpath(path, folders[0]) for _change, path in changes})
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            log.warning("%s changed: restarting the server", shown)
            await self._stop_child()
            if not stop.is_set():
                self._spawn()

    def _check_child(self) -> None:
        child = self.child
        if child is None or self._reported or child.poll() is None:
            return
        self._reported = True
        log.error(
            "the server (pid %d) exited with code %d; it starts again when a file changes",
            child.pid,
            child.returncode,
        )

    async def _stop_child(self) -> None:
        """SIGTERM (the server shuts down gracefully), then SIGKILL past the shutdown timeout."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout + 5.0
        while child.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(_POLL / 4)
        if child.poll() is None:
            log.warning("the server (pid %d) did not stop in time; killing it", child.pid)
            child.kill()
            child.wait()
