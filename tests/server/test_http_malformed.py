"""Malformed and hostile HTTP over raw sockets: each gets one clear error reply and a closed
connection, never a reply to a smuggled request, and the server goes on serving.

Every request below is followed by ``GET /secret``: if the server ever misreads where the bad
request ends, it answers the smuggled request and ``SMUGGLED`` shows up on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from rawhttp import RawHTTP, request_bytes

import plezi
from helpers import UNIT, Running


class Front:
    def index(self) -> str:
        return "front"

    def create(self) -> str:
        return "posted"


class Secret:
    def index(self) -> str:
        return "SMUGGLED"


class Chat:
    def index(self) -> str:
        return "chat page"

    def pre_connect(self) -> bool:
        return self.params.get("token") != "bad"  # type: ignore[attr-defined, no-any-return]

    def on_message(self, data: str | bytes) -> None:
        self.write(data)  # type: ignore[attr-defined]


def make_app() -> plezi.App:
    app = plezi.App()
    app.route("/secret", Secret)
    app.route("/chat", Chat)
    app.route("/", Front)
    return app


SMUGGLED = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"

MALFORMED: dict[str, tuple[bytes, int]] = {
    # the request line
    "garbage request line": (b"hello there\r\n\r\n", 400),
    "invalid method token": (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "unknown method": (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "NUL in method": (b"GE\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "control character in target": (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "space in target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "raw UTF-8 in target": ("GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    "bad version HTTP/1.2": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 400),
    "bad version HTTX/1.1": (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    "bad version HTTP/1": (b"GET / HTTP/1\r\nHost: x\r\n\r\n", 400),
    "version HTTP/2.0": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "version HTTP/0.9": (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "bare LF line ends": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    # headers
    "header without colon": (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "NUL in header value": (b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", 400),
    "NUL in header name": (b"GET / HTTP/1.1\r\nX\x00Y: 1\r\n\r\n", 400),
    "DEL in header value": (b"GET / HTTP/1.1\r\nHost: \x7f\r\n\r\n", 400),
    "obsolete line folding": (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),
    # body framing: the smuggling attempts
    "Content-Length and Transfer-Encoding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "Transfer-Encoding and Content-Length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 40\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two different Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 33\r\n\r\n",
        400,
    ),
    "two equal Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "Content-Length list": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\nab", 400),
    "signed Content-Length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nab", 400),
    "negative Content-Length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "invalid chunk size": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk size overflow": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1000000000000000000\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk without CRLF": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        400,
    ),
    "chunked twice": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunked not last": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "gzip then chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "gzip and chunked headers": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "chunked then gzip": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two Host headers": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "unknown transfer coding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
}


@pytest.fixture
def running(serve: Callable[..., Running]) -> Running:
    return serve(make_app())


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_is_refused_and_closed(
    running: Running, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    data, status = MALFORMED[name]
    with RawHTTP(running.port) as conn:
        conn.send_quietly(data + SMUGGLED)
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (status, "close"), r
        rest = conn.rest_until_closed()
    assert b"SMUGGLED" not in r.body + rest
    assert rest == b"", rest  # exactly one reply
    assert any(rec.name == "plezi" and f" {status} " in rec.getMessage() for rec in caplog.records)
    r2 = httpx.get(running.url + "/", trust_env=False, timeout=5 * UNIT)
    assert r2.text == "front"


def test_malformed_request_after_good_ones_on_the_same_connection(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        conn.send(request_bytes("GET", "/") + request_bytes("POST", "/", body=b"hi"))
        conn.send_quietly(b"GET / HTTP/1.1\r\nHost x\r\n\r\n" + SMUGGLED)
        assert conn.read_response().body == b"front"
        assert conn.read_response().body == b"posted"
        assert conn.read_response().status == 400
        assert conn.rest_until_closed() == b""


def test_error_replies_do_not_echo_the_request(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        conn.send_quietly(b"GET /<script>alert(1)</script> HTTP/9.9\r\nX-Evil: yes\r\n\r\n")
        r = conn.read_response()
    assert r.status == 400
    assert b"script" not in r.body and b"Evil" not in r.body and b"9.9" not in r.body


# -- WebSocket upgrade requests --------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(path: str, **overrides: str | None) -> bytes:
    headers: dict[str, str | None] = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": KEY,
    }
    headers.update(overrides)
    return request_bytes("GET", path, {k: v for k, v in headers.items() if v is not None})


UPGRADES: dict[str, tuple[bytes, int, dict[str, str]]] = {
    "to a route that is not a WebSocket controller": (upgrade("/"), 400, {}),
    "to a path with no route": (upgrade("/nowhere/at/all/x"), 404, {}),
    "refused by pre_connect": (upgrade("/chat?token=bad"), 403, {}),
    "wrong version": (
        upgrade("/chat", **{"Sec-WebSocket-Version": "8"}),
        426,
        {"sec-websocket-version": "13"},
    ),
    "missing version": (upgrade("/chat", **{"Sec-WebSocket-Version": None}), 426, {}),
    "missing key": (upgrade("/chat", **{"Sec-WebSocket-Key": None}), 400, {}),
    "key that is not 16 bytes": (
        upgrade("/chat", **{"Sec-WebSocket-Key": "c2hvcnQ="}),
        400,
        {},
    ),
    "no Connection: Upgrade": (upgrade("/chat", Connection="keep-alive"), 400, {}),
    "POST": (
        upgrade("/chat").replace(b"GET ", b"POST ", 1)[:-2] + b"Content-Length: 0\r\n\r\n",
        405,
        {"allow": "GET"},
    ),
}


@pytest.mark.parametrize("name", list(UPGRADES))
def test_bad_websocket_upgrades_get_an_http_error(running: Running, name: str) -> None:
    data, status, headers = UPGRADES[name]
    with RawHTTP(running.port) as conn:
        conn.send(data)
        r = conn.read_response()
        assert r.status == status, r
        for header, value in headers.items():
            assert r.header(header) == value
        assert r.header("sec-websocket-accept") is None
        assert b"chat page" not in r.body and b"front" not in r.body
        assert conn.rest_until_closed() == b""
    assert httpx.get(running.url + "/chat", trust_env=False).text == "chat page"


def test_a_good_upgrade_is_accepted(running: Running) -> None:
    """The control for the table above: the same request, valid, switches protocols."""
    with RawHTTP(running.port) as conn:
        conn.send(upgrade("/chat?token=good"))
        r = conn.read_response()
        assert r.status == 101
        assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
