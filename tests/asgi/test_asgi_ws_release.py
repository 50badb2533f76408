"""A WebSocket served through plezi's ASGI application is freed by reference counting once it
ends: the connection, its ASGI transport and their frame reader hold no cycle (issue 18)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from wsclient import connect

import plezi
from helpers import UNIT, Events, wait_for
from plezi.asgi import ASGIApp
from plezi.asgi.websocket import ASGITransport
from plezi.server.websocket import WebSocketConnection

EVENTS = Events()


class Echo:
    def on_open(self) -> None:
        self.subscribe(f"own-{self.id}")  # type: ignore[attr-defined]

    def on_message(self, data: str | bytes) -> None:
        self.write(data)  # type: ignore[attr-defined]

    def on_close(self) -> None:
        EVENTS.add("closed")


def alive() -> tuple[int, int]:
    """Connection objects and ASGI transports alive (GC-tracked objects, listed without
    collecting anything)."""
    objects = gc.get_objects()
    return (
        sum(issubclass(type(o), WebSocketConnection) for o in objects),
        sum(issubclass(type(o), ASGITransport) for o in objects),
    )


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_ended_asgi_websockets_are_freed_without_the_cyclic_collector(
    uvicorn_serve: Any, no_cyclic_gc: None
) -> None:
    app = plezi.App()
    app.route("/echo", Echo)
    server = uvicorn_serve(ASGIApp(app))
    before = alive()
    count = 20
    for _ in range(count):
        with connect(f"{server.ws_url}/echo") as ws:
            ws.send("hi")
            assert ws.recv(5 * UNIT) == "hi"
    for _ in range(count):
        EVENTS.take("closed")
    # on_close runs before the ASGI call returns: the server's tasks end a little later.
    wait_for(lambda: alive() == before, f"the connections to be freed ({alive()} != {before})", 5)
