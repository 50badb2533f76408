"""HTTP limits through a real server: head size (431), body size (413), slow clients (408),
idle keep-alive connections. Each refusal is a clear status, a log line, a closed connection,
and the server goes on serving everyone else.

Some tests play a slow client: they send a request in small pieces with a short pause between
pieces. The pauses shape the traffic; they never stand in for waiting on the server, which is
always read until its reply is complete or the socket timeout (a multiple of ``UNIT``) expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import pytest
from rawhttp import RawHTTP, request_bytes
from wsclient import connect

import plezi
from helpers import UNIT, Running, wait_for

PACE = 0.005 * UNIT  # between the pieces a slow client sends


class Hello:
    def index(self) -> str:
        return "hello"

    def create(self) -> str:
        return f"got {len(self.request.body)}"  # type: ignore[attr-defined]

    async def slow(self) -> str:
        await asyncio.sleep(0.5 * UNIT)
        return "slow"


def hello_app() -> plezi.App:
    app = plezi.App()
    app.route("/", Hello)
    return app


def still_serving(running: Running) -> None:
    """A fresh client is served normally."""
    r = httpx.get(running.url + "/", trust_env=False, timeout=5 * UNIT)
    assert (r.status_code, r.text) == (200, "hello")


def logged(caplog: pytest.LogCaptureFixture, status: int) -> bool:
    return any(rec.name == "plezi" and f" {status} " in rec.getMessage() for rec in caplog.records)


def dribble(conn: RawHTTP, data: bytes, piece: int) -> None:
    """Send ``data`` in small paced pieces, stopping early once the server answers."""
    for i in range(0, len(data), piece):
        if conn.readable() or not conn.send_quietly(data[i : i + piece]):
            return
        time.sleep(PACE)


LIMITS = {"max_header_size": 1024, "max_body_size": 1000}


# -- head size -----------------------------------------------------------------------------

BIG_HEADS = {
    "one big header": request_bytes("GET", "/", {"X-Big": "a" * 2000}),
    "many headers": request_bytes("GET", "/", {f"X-H{i}": "v" * 20 for i in range(80)}),
    "long target": request_bytes("GET", "/?q=" + "a" * 2000),
    "big cookie": request_bytes("GET", "/", {"Cookie": "; ".join(f"c{i}=v" for i in range(400))}),
}


@pytest.mark.parametrize("name", list(BIG_HEADS))
def test_oversized_head_is_431_and_closed(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(hello_app(), **LIMITS)
    with RawHTTP(running.port) as conn:
        conn.send_quietly(BIG_HEADS[name])
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (431, "close")
        assert conn.rest_until_closed() == b""
    assert logged(caplog, 431)
    still_serving(running)


def test_head_just_under_the_limit_is_served(serve: Callable[..., Running]) -> None:
    running = serve(hello_app(), **LIMITS)
    head = request_bytes("GET", "/", {"X-Pad": ""})
    head = request_bytes("GET", "/", {"X-Pad": "p" * (1000 - len(head))})
    with RawHTTP(running.port) as conn:
        conn.send(head)
        assert conn.read_response().body == b"hello"


def test_oversized_head_dribbled_slowly_is_431(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """A header value that never ends, sent a few bytes at a time: httptools buffers it without
    calling back, so the raw bytes must be counted (and long before the 408)."""
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(hello_app(), header_timeout=30 * UNIT, **LIMITS)
    with RawHTTP(running.port) as conn:
        started = time.monotonic()
        dribble(conn, b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 3000, 64)
        r = conn.read_response()
        assert r.status == 431
        assert conn.rest_until_closed() == b""
        assert time.monotonic() - started < 10 * UNIT
    assert logged(caplog, 431)
    still_serving(running)


def test_head_within_the_limit_dribbled_in_pieces_is_served(
    serve: Callable[..., Running],
) -> None:
    """The pieces of one head are counted once: a 900-byte head in 100-byte reads is fine
    under a 1024-byte limit."""
    running = serve(hello_app(), header_timeout=30 * UNIT, **LIMITS)
    head = request_bytes("GET", "/", {f"X-H{i}": "v" * 90 for i in range(9)})
    assert 850 < len(head) < 1000
    with RawHTTP(running.port) as conn:
        dribble(conn, head, 100)
        r = conn.read_response()
        assert (r.status, r.body) == (200, b"hello")


def test_pipelined_heads_do_not_add_up(serve: Callable[..., Running]) -> None:
    """Many small pipelined requests in one send are each within the limit."""
    running = serve(hello_app(), **LIMITS)
    one = request_bytes("GET", "/", {"X-Pad": "p" * 600})
    with RawHTTP(running.port) as conn:
        conn.send(one * 6)
        assert [conn.read_response().body for _ in range(6)] == [b"hello"] * 6


# -- body size -----------------------------------------------------------------------------


def test_body_over_the_limit_by_content_length_is_413_before_the_body_is_sent(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(hello_app(), **LIMITS)
    with RawHTTP(running.port) as conn:
        conn.send(request_bytes("POST", "/", {"Content-Length": "1000001"}))  # and no body
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (413, "close")
        assert conn.rest_until_closed() == b""
    with RawHTTP(running.port) as conn:  # with Expect: no 100 Continue, the 413 at once
        conn.send(request_bytes("POST", "/", {"Content-Length": "5000", "Expect": "100-continue"}))
        assert conn.read_response().status == 413
    assert logged(caplog, 413)
    still_serving(running)


def test_body_at_the_limit_is_accepted(serve: Callable[..., Running]) -> None:
    running = serve(hello_app(), **LIMITS)
    r = httpx.post(running.url + "/", content=b"x" * 1000, trust_env=False, timeout=5 * UNIT)
    assert r.text == "got 1000"


def test_chunked_body_over_the_limit_is_413(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(hello_app(), **LIMITS)
    chunk = b"100\r\n" + b"c" * 256 + b"\r\n"
    with RawHTTP(running.port) as conn:
        conn.send(request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}))
        for _ in range(20):  # 5 KiB, far past 1000 bytes; the server answers long before
            if conn.readable() or not conn.send_quietly(chunk):
                break
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (413, "close")
        assert conn.rest_until_closed() == b""
    assert logged(caplog, 413)
    still_serving(running)
    # and a chunked body within the limit is fine
    with RawHTTP(running.port) as conn:
        conn.send(
            request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}) + chunk * 3 + b"0\r\n\r\n"
        )
        assert conn.read_response().body == b"got 768"


# -- slow and idle clients -----------------------------------------------------------------


def test_slowloris_partial_head_gets_408_in_bounded_time(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    timeout = 0.3 * UNIT
    running = serve(hello_app(), header_timeout=timeout, keepalive_timeout=30 * UNIT)
    with RawHTTP(running.port) as stalled:
        started = time.monotonic()
        stalled.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        still_serving(running)  # others are served meanwhile
        r = stalled.read_response()
        elapsed = time.monotonic() - started
        assert (r.status, r.header("connection")) == (408, "close")
        assert stalled.rest_until_closed() == b""
    assert 0.9 * timeout <= elapsed < timeout + 3 * UNIT, elapsed
    assert logged(caplog, 408)
    still_serving(running)


def test_a_head_that_keeps_trickling_still_times_out(serve: Callable[..., Running]) -> None:
    """The head timeout counts from its first byte: a byte now and then does not reset it."""
    timeout = 0.3 * UNIT
    running = serve(hello_app(), header_timeout=timeout, keepalive_timeout=30 * UNIT)
    with RawHTTP(running.port) as conn:
        started = time.monotonic()
        conn.send(b"GET / HTTP/1.1\r\n")
        while not conn.readable() and time.monotonic() - started < timeout + 3 * UNIT:
            if not conn.send_quietly(b"X: y\r\n"):
                break
            time.sleep(0.02 * UNIT)
        r = conn.read_response()
        assert r.status == 408
    assert time.monotonic() - started < timeout + 3 * UNIT


def test_a_lone_first_byte_starts_the_head_timeout(serve: Callable[..., Running]) -> None:
    """The head timeout starts with a request's first byte, though httptools reports nothing
    of a lone method byte but its start; also when that byte follows a complete request in
    the same read. (The keep-alive timeout, much longer here, must not apply.)"""
    timeout = 0.3 * UNIT
    running = serve(hello_app(), header_timeout=timeout, keepalive_timeout=30 * UNIT)
    for first in (b"G", b"GET / HTTP/1.1\r\nHost: x\r\n\r\nG"):
        with RawHTTP(running.port) as conn:
            started = time.monotonic()
            conn.send(first)
            if first != b"G":
                assert conn.read_response().status == 200
            r = conn.read_response()
            assert (r.status, r.header("connection")) == (408, "close")
        assert time.monotonic() - started < timeout + 3 * UNIT
    still_serving(running)


def test_stalled_body_gets_408(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    timeout = 0.3 * UNIT
    running = serve(hello_app(), header_timeout=timeout, keepalive_timeout=30 * UNIT)
    with RawHTTP(running.port) as conn:
        started = time.monotonic()
        conn.send(request_bytes("POST", "/", {"Content-Length": "100"}) + b"only ten..")
        r = conn.read_response()
        assert r.status == 408
        assert conn.rest_until_closed() == b""
    assert 0.9 * timeout <= time.monotonic() - started < timeout + 3 * UNIT
    assert logged(caplog, 408)
    still_serving(running)


def test_idle_keep_alive_connection_is_closed_after_the_timeout(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plezi")
    timeout = 0.3 * UNIT
    running = serve(hello_app(), keepalive_timeout=timeout, header_timeout=30 * UNIT)
    with RawHTTP(running.port) as conn:
        assert conn.request("GET", "/").body == b"hello"
        idle_since = time.monotonic()
        assert conn.rest_until_closed(timeout + 3 * UNIT) == b""  # closed quietly, no reply
    assert 0.9 * timeout <= time.monotonic() - idle_since < timeout + 3 * UNIT
    with RawHTTP(running.port) as conn:  # a connection that never sends anything either
        assert conn.rest_until_closed(timeout + 3 * UNIT) == b""
    assert any("idle" in rec.getMessage() for rec in caplog.records if rec.name == "plezi")
    still_serving(running)


def test_keep_alive_timeout_counts_from_the_reply(serve: Callable[..., Running]) -> None:
    """A reply that took longer than the keep-alive timeout leaves a usable connection."""
    timeout = 0.3 * UNIT
    running = serve(hello_app(), keepalive_timeout=timeout, header_timeout=30 * UNIT)
    with RawHTTP(running.port) as conn:
        assert conn.request("GET", "/slow").body == b"slow"  # 0.5 * UNIT > the timeout
        assert not conn.closed_within(timeout / 2)
        assert conn.request("GET", "/").body == b"hello"


def test_many_pipelined_requests_behind_a_slow_one_are_all_answered(
    serve: Callable[..., Running],
) -> None:
    """Reading pauses while requests queue behind an async reply, and resumes after."""
    running = serve(hello_app())
    count = 300
    with RawHTTP(running.port, timeout=10 * UNIT) as conn:
        conn.send(request_bytes("GET", "/slow") + request_bytes("GET", "/") * count)
        assert conn.read_response().body == b"slow"
        bodies = [conn.read_response().body for _ in range(count)]
        assert bodies == [b"hello"] * count
        assert conn.request("GET", "/").body == b"hello"


def test_limits_apply_per_connection_not_per_server(serve: Callable[..., Running]) -> None:
    """A refused client does not disturb a keep-alive client in the middle of its work."""
    running = serve(hello_app(), **LIMITS)
    with RawHTTP(running.port) as good, RawHTTP(running.port) as bad:
        assert good.request("GET", "/").body == b"hello"
        bad.send_quietly(request_bytes("GET", "/", {"X-Big": "b" * 5000}))
        assert bad.read_response().status == 431
        assert good.request("POST", "/", body=b"x" * 10).body == b"got 10"


# -- max_connections ---------------------------------------------------------------------------


def test_connections_past_max_connections_get_503_and_the_others_go_on(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP, WebSocket and SSE connections count together; one past the cap is answered 503
    and closed (one log line), the open ones keep working, and a freed slot is taken again."""
    caplog.set_level(logging.INFO, logger="plezi")

    class Room:
        def index(self) -> str:
            return "hello"

        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/", Room)
    running = serve(app, max_connections=3)
    with RawHTTP(running.port) as one, connect(running.ws_url + "/") as ws:
        assert one.request("GET", "/").status == 200
        with RawHTTP(running.port) as two:
            assert two.request("GET", "/").status == 200  # the third of three
            for _ in range(2):  # the fourth, twice (a single log line)
                with RawHTTP(running.port) as over:
                    refused = over.read_response()
                    assert (refused.status, refused.header("connection")) == (503, "close")
                    assert over.closed_within(5 * UNIT)
            lines = [r for r in caplog.records if "max_connections" in r.getMessage()]
            assert len(lines) == 1
            ws.send("still here")
            assert ws.recv(timeout=5 * UNIT) == "still here"
            assert one.request("GET", "/").status == 200

        def served() -> bool:
            with RawHTTP(running.port) as again:
                return again.request("GET", "/").status == 200

        # The server notices the closed connection, then a new one is served.
        wait_for(served, "the freed slot to be reused", timeout=5)


def test_max_connections_must_not_be_negative() -> None:
    with pytest.raises(plezi.ConfigError):
        plezi.Limits(max_connections=-1).validate()
