"""What counting for ``plezi.stats()`` costs on the hot paths, in instructions (deterministic).

Pushes N WebSocket echo messages, or N publishes fanned out to S subscribers, through the real
classes (``App``, ``WebSocketConnection``, the hub, its registry and the outbox) over a
transport that only counts bytes: no sockets and no event loop, so that a run under callgrind
counts the same instructions every time, whatever else the machine is doing.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/count_cost.py echo 20000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/count_cost.py echo 0

(``publish``: N publishes to 100 subscribers; ``http`` and ``http-timed``: N calls of
``App.handle`` for a hello-world route, without and with the latency histogram.)

The cost per message is (instructions at N - instructions at 0) / N; run it with the tree
before and after a change (``PYTHONPATH=<other tree>/src``) and compare.
"""

from __future__ import annotations

import sys
from typing import Any

from plezi import App, ServerConfig
from plezi.http.request import Request
from plezi.protocol.frames import OP_TEXT, encode_frame
from plezi.pubsub.hub import hub
from plezi.server.state import ServerState
from plezi.server.websocket import WebSocketConnection


class CountingTransport:
    """The transport calls a connection makes, writing nowhere."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Loop:
    """Just ``call_soon``, run by hand (the server's end-of-iteration flush)."""

    def __init__(self) -> None:
        self.ready: list[Any] = []

    def call_soon(self, func: Any, *args: Any) -> None:
        self.ready.append((func, args))

    def run_ready(self) -> None:
        ready, self.ready = self.ready, []
        for func, args in ready:
            func(*args)


class Echo:
    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


class Hello:
    def index(self) -> str:
        return "hello"


class Member:
    def on_open(self) -> None:
        self.subscribe("room")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        pass


def connection(server: ServerState, app: App, path: str) -> WebSocketConnection:
    headers = {
        "host": "bench",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    accept: Any = app.handle(Request("GET", path, path, "", headers))
    conn = WebSocketConnection(server, CountingTransport(), accept.controller, accept.route)  # type: ignore[arg-type]
    conn.start(b"")
    return conn


def main(kind: str, n: int, subscribers: int = 100) -> None:
    app = App()
    app.route("/echo", Echo)
    app.route("/room", Member)
    app.route("/hello", Hello)
    server = ServerState(app, ServerConfig())
    loop = Loop()
    server.use_loop(loop)  # type: ignore[arg-type]
    if kind == "echo":
        conn = connection(server, app, "/echo")
        frame = encode_frame(OP_TEXT, b"x" * 32, mask=b"abcd")
        for _ in range(n):
            conn.data_received(frame)
        assert conn.transport.written == n * 34, conn.transport.written  # type: ignore[attr-defined]
    elif kind in ("http", "http-timed"):
        # The application's side of a hello-world request (``App.handle``), with the latency
        # histogram on (``http-timed``: a metrics route exists) or not.
        if kind == "http-timed":
            app.route("/metrics", "metrics")
        request = Request("GET", "/hello", "/hello", "", {"host": "bench"})
        for _ in range(n):
            assert app.handle(request) == b"hello"
    elif kind == "publish":
        conns = [connection(server, app, "/room") for _ in range(subscribers)]
        message = "y" * 32
        for _ in range(n):
            hub.publish("room", message)
            loop.run_ready()
        written = sum(c.transport.written for c in conns)  # type: ignore[attr-defined]
        assert written == n * subscribers * 34, written
    else:
        raise SystemExit(f"unknown kind {kind!r}: echo, publish, http or http-timed")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
