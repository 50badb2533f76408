"""One header case in every response: lower-case names, as HTTP/2 and ASGI servers send them,
whatever case the application set them in. Checked on the raw bytes each kind of reply puts on
the wire (a parser that lower-cases names, as ``RawResponse`` does, would hide the case)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawhttp import RawHTTP, request_bytes
from wsclient import RawClient

import plezi
from helpers import UNIT, Running
from plezi.asgi import ASGIApp
from plezi.http.static import install_public


def names(head: bytes | str) -> list[str]:
    """The header names of a response head (status line first, up to the blank line)."""
    text = head.decode("latin-1") if isinstance(head, bytes) else head
    lines = text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [line.partition(":")[0] for line in lines]


def assert_lower(head: bytes | str, *expected: str) -> None:
    found = names(head)
    assert found == [n.lower() for n in found], found
    for name in expected:
        assert name in found, (name, found)


def raw_reply(port: int, data: bytes) -> bytes:
    """Everything the server sends for ``data`` (a request that closes the connection)."""
    with RawHTTP(port) as conn:
        conn.send(data)
        return conn.rest_until_closed()


class Headers:
    def index(self) -> str:
        self.response.headers["X-Custom-Thing"] = "Value Case Kept"  # type: ignore[attr-defined]
        self.response.headers["Cache-Control"] = "no-store"  # type: ignore[attr-defined]
        self.cookies["Session"] = "abc"  # type: ignore[attr-defined]
        return "headers"

    def json(self) -> dict[str, Any]:
        return {"a": 1}

    def blob(self) -> bytes:
        return b"\x00"

    def away(self) -> bool:
        return self.redirect_to("/elsewhere")  # type: ignore[attr-defined, no-any-return]

    def file(self) -> bool:
        self.response.headers["Content-Type"] = "text/x-overridden"  # type: ignore[attr-defined]
        return self.send_file(__file__)  # type: ignore[attr-defined, no-any-return]


class Socket:
    def pre_connect(self) -> bool:
        self.response.headers["X-Socket-Header"] = "yes"  # type: ignore[attr-defined]
        self.cookies["Seen"] = "1"  # type: ignore[attr-defined]
        return True

    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


@pytest.fixture
def running(serve: Callable[..., Running], tmp_path: Path) -> Running:
    (tmp_path / "page.html").write_text("<p>static</p>")
    app = plezi.App()
    app.route("/client.js", "client")
    app.route("/h", Headers)
    app.route("/ws", Socket)
    install_public(app, tmp_path)
    return serve(app)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/h", ("x-custom-thing", "cache-control", "set-cookie", "content-type")),
        ("/h/json", ("content-type", "content-length", "date")),
        ("/h/blob", ("content-type",)),
        ("/h/away", ("location",)),
        ("/h/file", ("content-type", "etag", "last-modified")),
        ("/page.html", ("content-type", "etag", "last-modified", "accept-ranges")),
        ("/client.js", ("content-type", "etag", "cache-control", "x-content-type-options")),
        ("/nothing/here/at/all", ("content-type", "connection")),
    ],
)
def test_http_replies_have_lower_case_names(
    running: Running, target: str, expected: tuple[str, ...]
) -> None:
    reply = raw_reply(running.port, request_bytes("GET", target, close=True))
    assert_lower(reply, *expected)
    assert b"Value Case Kept" in reply or target != "/h"  # values are sent as set


def test_send_file_replaces_a_header_set_in_another_case(running: Running) -> None:
    reply = raw_reply(running.port, request_bytes("GET", "/h/file", close=True))
    assert names(reply).count("content-type") == 1


def test_error_replies_have_lower_case_names(running: Running) -> None:
    assert_lower(raw_reply(running.port, request_bytes("DELETE", "/h", close=True)), "allow")
    # a refused handshake: 405 with allow, 426 with the version to use
    bad_method = request_bytes(
        "POST",
        "/ws",
        {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"},
    )
    assert_lower(raw_reply(running.port, bad_method), "allow")
    key = base64.b64encode(os.urandom(16)).decode()
    old_version = request_bytes(
        "GET",
        "/ws",
        {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "8",
        },
    )
    reply = raw_reply(running.port, old_version)
    assert reply.startswith(b"HTTP/1.1 426")
    assert_lower(reply, "sec-websocket-version", "upgrade")
    # malformed request: the server's own 400
    assert_lower(raw_reply(running.port, b"NOT HTTP AT ALL\r\n\r\n"), "connection")


def test_the_101_handshake_has_lower_case_names(running: Running) -> None:
    with RawClient(running.port, "/ws") as ws:
        assert_lower(
            ws.response_head,
            "upgrade",
            "connection",
            "sec-websocket-accept",
            "x-socket-header",
            "set-cookie",
        )


def test_the_sse_head_has_lower_case_names(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=5 * UNIT) as sock:
        sock.sendall(request_bytes("GET", "/ws", {"Accept": "text/event-stream"}))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 200")
    assert_lower(
        head, "content-type", "cache-control", "x-accel-buffering", "x-socket-header", "set-cookie"
    )


def test_the_asgi_adapter_sends_lower_case_names() -> None:
    app = plezi.App()
    app.route("/h", Headers)
    asgi = ASGIApp(app)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/h",
        "raw_path": b"/h",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(asgi(scope, receive, send))
    start = sent[0]
    assert start["type"] == "http.response.start"
    header_names = [name for name, _ in start["headers"]]
    assert header_names == [n.lower() for n in header_names]
    assert b"x-custom-thing" in header_names and b"set-cookie" in header_names
