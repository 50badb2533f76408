"""Helpers shared by the tests, in one importable place: ``from helpers import ...``.

``tests/`` is on ``sys.path`` (pytest's rootdir insertion for ``tests/conftest.py``, a folder
without ``__init__.py``), so every test module imports this the same way, wherever it sits;
so are :mod:`rawhttp` (a raw HTTP/1.1 client) and :mod:`wsclient` (WebSocket clients).
Fixtures live in ``conftest.py``; the plain functions and classes they use live here.

Real servers on port 0 (in a thread or a subprocess), never mocks; every wait is bounded and
waits on something observable, never on elapsed time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import plezi
from plezi import App, Limits, ServerConfig
from plezi.launch.run import new_event_loop
from plezi.server.server import Server

__all__ = [
    "ROOT",
    "UNIT",
    "Events",
    "Recorder",
    "Running",
    "Script",
    "app_of",
    "free_port",
    "loop_turns",
    "run_script",
    "start_script",
    "start_server",
    "wait_for",
]

ROOT = Path(__file__).resolve().parent.parent
#: Every timeout in the tests is a multiple of this unit (raise it on a slow machine).
UNIT = float(os.environ.get("PLEZI_TEST_UNIT", "1.0"))


@dataclass
class Running:
    """A server running in a background thread."""

    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    app: App
    errors: list[BaseException] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        scheme = "https" if self.server.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.server.ssl_context is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}"

    def call(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the server's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(func())
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5 * UNIT), "server loop did not answer"
        return box[0] if box else None

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.request_shutdown)
            self.thread.join(15 * UNIT)
        assert not self.thread.is_alive(), "server did not stop"


def start_server(app: App, **limits: Any) -> Running:
    """Serve ``app`` on 127.0.0.1, port 0, in a thread; returns once it accepts connections.

    ``limits`` are :class:`Limits` fields, plus ``shutdown_timeout``, ``compression``,
    ``tls_cert`` and ``tls_key``."""
    shutdown_timeout = limits.pop("shutdown_timeout", 5.0 * UNIT)
    tls = {k: limits.pop(k) for k in ("tls_cert", "tls_key") if k in limits}
    compression = limits.pop("compression", "on")
    config = ServerConfig(
        port=0,
        bind="127.0.0.1",
        limits=Limits(**limits),
        shutdown_timeout=shutdown_timeout,
        **tls,
        compression=compression,
    )
    server = Server(app, config)
    loop = new_event_loop()
    ready = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        await server.start()
        ready.set()
        assert server._stop is not None
        await server._stop.wait()
        await server.shutdown()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(10 * UNIT), "server did not start"
    if errors:
        raise errors[0]
    return Running(server, loop, thread, app, errors)


_LISTEN = re.compile(rb"listening on (\S+)")


@dataclass
class Script:
    """A plezi script running in a subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    #: What the process wrote to stderr up to and with its "listening on" line.
    head: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``GET path`` with httpx (no proxy from the environment, a bounded timeout)."""
        return httpx.get(self.url + path, trust_env=False, timeout=5 * UNIT, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str]:
        """Signal the process and return (exit code, everything it wrote to stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _out, err = self.proc.communicate(timeout=timeout * UNIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError("the script did not exit after the signal") from None
        return self.proc.returncode, err.decode(errors="replace")


def start_script(
    path: Path | str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
    launcher: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> Script:
    """Run ``python path --port 0 --bind 127.0.0.1 args...``; wait for the listening line.
    ``launcher`` goes before ``path``: ``("-m", "plezi")`` runs ``python -m plezi path ...``;
    ``preexec_fn`` runs in the child before it starts (e.g. to lower a resource limit)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PLEZI_NO_AUTOSTART", None)
    # Unbuffered: the lines read here up to "listening on" must not take later ones into a
    # buffer that ``communicate()`` (which reads the descriptor itself) never sees.
    proc = subprocess.Popen(
        [sys.executable, *launcher, str(path), "--port", "0", "--bind", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=str(ROOT),
        bufsize=0,
        preexec_fn=preexec_fn,
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    timer = threading.Timer(timeout * UNIT, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            lines.append(line)
            m = _LISTEN.search(line)
            if m:
                url = m.group(1).decode().replace("localhost", "127.0.0.1")
                return Script(proc, url, b"".join(lines).decode(errors="replace"))
    finally:
        timer.cancel()
    proc.kill()
    raise AssertionError(f"{path} did not start:\n" + b"".join(lines).decode(errors="replace"))


def run_script(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a script that is expected to end on its own (a server would make it time out)."""
    path = tmp_path / "app.py"
    path.write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "PLEZI_NO_AUTOSTART"}
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=10 * UNIT,
        env=env,
        cwd=str(ROOT),
        check=False,
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process that must be told its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_of(*routes: tuple[str, type]) -> plezi.App:
    """An app with each ``(path, controller)`` routed, in order."""
    app = plezi.App()
    for path, controller in routes:
        app.route(path, controller)
    return app


async def loop_turns(turns: int = 3) -> None:
    """Let the event loop run ``turns`` times: an async callback that is not done at once,
    without a wall-clock delay (whatever the test orders by it is then decided by the server's
    rules, not by how fast the machine is)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def wait_for(check: Callable[[], bool], what: str = "the condition", timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds, for at most ``timeout * UNIT`` seconds.

    For state that can only be asked for (a status page, a request that succeeds once the
    server noticed something); state the test itself records is waited for with
    :class:`Events`, which wakes at once."""
    deadline = time.monotonic() + timeout * UNIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Events:
    """What happened, in order, recorded from any thread (controller callbacks run on the
    server's loop) and waited for by the test thread: a list and a condition.

    :meth:`wait_for` counts what was ever added (for an instance a test makes for itself);
    :meth:`take` takes what it waited for out again, so that a module-wide instance shared by
    the controllers of several tests starts every test from what is left."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.events: list[Any] = []
        #: The event loop of the last callback that added an event (the server's loop).
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, event: Any) -> None:
        with self.changed:
            with contextlib.suppress(RuntimeError):  # added from outside any loop
                self.loop = asyncio.get_running_loop()
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, event: Any, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``event`` was added ``count`` times (``timeout * UNIT`` at most)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: self.events.count(event) >= count, timeout * UNIT)
            assert ok, f"{event!r} x{count} never happened: {self.events}"

    def take(self, event: Any, timeout: float = 5.0) -> None:
        """Wait until ``event`` was added (``timeout * UNIT`` at most), and take it out."""
        with self.changed:
            ok = self.changed.wait_for(lambda: event in self.events, timeout * UNIT)
            assert ok, f"{event!r} never happened: {self.events}"
            self.events.remove(event)

    def on_loop(self, func: Callable[[], Any]) -> Any:
        """``func()`` run on the loop that added the last event (the server's); its result."""
        assert self.loop is not None, "no event came from an event loop yet"

        async def call() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5 * UNIT)


class Recorder:
    """A ``FrameHandler`` for the sans-I/O reader tests: every callback kept as a tuple.

    Errors are recorded as ``("error", code, reason)``, or ``("error", code)`` in a subclass
    that sets :attr:`error_reasons` to ``False`` (for tests that only check the code)."""

    error_reasons = True

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_ws_message(self, data: str | bytes) -> None:
        self.events.append(("message", data))

    def on_ws_ping(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def on_ws_pong(self, payload: bytes) -> None:
        self.events.append(("pong", payload))

    def on_ws_close(self, code: int | None, reason: str) -> None:
        self.events.append(("close", code, reason))

    def on_ws_error(self, code: int, reason: str) -> None:
        self.events.append(("error", code, reason) if self.error_reasons else ("error", code))
