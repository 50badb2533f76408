"""Shared fixtures: real servers on port 0 (in a thread or a subprocess), never mocks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from plezi import App, Limits, ServerConfig
from plezi.launch.run import new_event_loop
from plezi.server.server import Server

# Tests that want Redis pass a private server's URL explicitly; one inherited from the
# environment must not switch the in-process tests to a shared Redis.
os.environ.pop("PL_REDIS_URL", None)
os.environ.pop("REDIS_URL", None)

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
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

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
    """Serve ``app`` on 127.0.0.1, port 0, in a thread; returns once it accepts connections."""
    shutdown_timeout = limits.pop("shutdown_timeout", 5.0 * UNIT)
    config = ServerConfig(
        port=0, bind="127.0.0.1", limits=Limits(**limits), shutdown_timeout=shutdown_timeout
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


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    """``serve(app, **limits)`` starts a server; all are stopped after the test."""
    running: list[Running] = []

    def start(app: App, **limits: Any) -> Running:
        r = start_server(app, **limits)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()
        assert not r.errors, r.errors


_LISTEN = re.compile(rb"listening on (\S+)")


@dataclass
class Script:
    """A plezi script running in a subprocess."""

    proc: subprocess.Popen[bytes]
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]

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
) -> Script:
    """Run ``python path --port 0 --bind 127.0.0.1 args...``; wait for the listening line.
    ``launcher`` goes before ``path``: ``("-m", "plezi")`` runs ``python -m plezi path ...``."""
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
                return Script(proc, url)
    finally:
        timer.cancel()
    proc.kill()
    raise AssertionError(f"{path} did not start:\n" + b"".join(lines).decode(errors="replace"))


@pytest.fixture
def script() -> Iterator[Callable[..., Script]]:
    """``script(path, *args)`` runs a plezi script in a subprocess; killed after the test."""
    started: list[Script] = []

    def start(path: Path | str, *args: str, **kwargs: Any) -> Script:
        s = start_script(path, *args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()
