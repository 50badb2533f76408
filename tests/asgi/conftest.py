"""A real uvicorn server on a free port, in a thread, serving an ASGI application."""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from helpers import UNIT, wait_for

uvicorn = pytest.importorskip("uvicorn")


@dataclass
class Uvicorn:
    """A uvicorn server running in a background thread."""

    server: Any
    thread: threading.Thread
    port: int
    url: str = ""
    ws_url: str = ""

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = "ws" + self.url[4:]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15 * UNIT)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def start_uvicorn(app: Any, *, running: list[Uvicorn] | None = None, **options: Any) -> Uvicorn:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 (a port the kernel picks); the server
    is appended to ``running``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    options.setdefault("lifespan", "on")
    options.setdefault("log_level", "warning")
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # uvicorn says it is up only through this flag (or by ending its thread if it failed).
    wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start", timeout=10)
    assert thread.is_alive(), "uvicorn exited while starting"
    started = Uvicorn(server, thread, sock.getsockname()[1])
    if running is not None:
        running.append(started)
    return started


@pytest.fixture
def uvicorn_serve() -> Iterator[Callable[..., Uvicorn]]:
    """``uvicorn_serve(asgi_app, **uvicorn_options)``; every server is stopped after the test."""
    running: list[Uvicorn] = []
    yield functools.partial(start_uvicorn, running=running)
    for server in running:
        server.stop()


@pytest.fixture(autouse=True)
def _plezi_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
