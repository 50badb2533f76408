"""HTTP/1.1 rendering (:mod:`plezi.server.h1`): the hello-world head cached per second, the
``Date`` line, and a :class:`Reply` on the wire."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from plezi.http.response import Reply, error_reply
from plezi.server import h1
from plezi.server.h1 import http_date, render, render_text

T0 = 1_800_000_000.0  # a whole second
DATE = b"date: Fri, 15 Jan 2027 08:00:00 GMT\r\n"
HTML = b"content-type: text/html; charset=utf-8\r\n"


def date_of(reply: bytes) -> float:
    for line in reply.split(b"\r\n"):
        if line.startswith(b"date: "):
            return parsedate_to_datetime(line[6:].decode()).timestamp()
    raise AssertionError(f"no date line in {reply!r}")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [T0]
    monkeypatch.setattr(h1, "_now", lambda: now[0])
    return now


def test_date_follows_the_clock(clock: list[float]) -> None:
    assert date_of(render_text(b"x", True, False)) == T0
    clock[0] = T0 + 0.999
    assert date_of(render_text(b"x", True, False)) == T0
    clock[0] = T0 + 1
    assert date_of(render_text(b"x", True, False)) == T0 + 1
    assert http_date() == b"date: Fri, 15 Jan 2027 08:00:01 GMT\r\n"
    assert date_of(render(Reply(204, []), True, False)) == T0 + 1
    assert date_of(render(error_reply(404, "no"), True, False)) == T0 + 1  # (a cached head)
    clock[0] = T0 - 30  # a clock set back gives the date it says, not the cached one
    assert date_of(render_text(b"x", True, False)) == T0 - 30
    assert date_of(render(error_reply(404, "no"), True, False)) == T0 - 30


def test_the_cache_of_fixed_heads_is_bounded(clock: list[float]) -> None:
    for n in range(3 * h1._STARTS_MAX):
        reply = error_reply(405, "no", (("allow", f"X{n}"),))
        assert f"allow: X{n}\r\n".encode() in render(reply, True, False)
        assert len(h1._starts) <= h1._STARTS_MAX


def test_the_hello_world_head(clock: list[float]) -> None:
    ok = b"HTTP/1.1 200 OK\r\n" + DATE + HTML
    assert render_text(b"hello", True, False) == ok + b"content-length: 5\r\n\r\nhello"
    assert render_text(b"hello", True, True) == ok + b"content-length: 5\r\n\r\n"
    assert render_text(b"hello", False, False) == (
        ok + b"connection: close\r\ncontent-length: 5\r\n\r\nhello"
    )
    assert render_text(b"hello", True, False) == ok + b"content-length: 5\r\n\r\nhello"


def test_a_reply_on_the_wire(clock: list[float]) -> None:
    text = b"content-type: text/plain; charset=utf-8\r\n"
    assert render(error_reply(404, "no"), False, False) == (
        b"HTTP/1.1 404 Not Found\r\n" + DATE + text + b"connection: close\r\n"
        b"content-length: 3\r\n\r\nno\n"
    )
    assert render(error_reply(405, "no", [("allow", "GET")]), True, True) == (
        b"HTTP/1.1 405 Method Not Allowed\r\n" + DATE + text + b"allow: GET\r\n"
        b"content-length: 3\r\n\r\n"
    )
    assert render(Reply(599, []), True, False) == (
        b"HTTP/1.1 599 Unknown\r\n" + DATE + b"content-length: 0\r\n\r\n"
    )
    # No body and no length for 1xx, 204 and 304.
    assert render(Reply(304, [("etag", '"x"')], b"ignored"), True, False) == (
        b"HTTP/1.1 304 Not Modified\r\n" + DATE + b'etag: "x"\r\n\r\n'
    )
    # A file's head: its length, the body following.
    assert render(Reply(200, []), True, True, 1234) == (
        b"HTTP/1.1 200 OK\r\n" + DATE + b"content-length: 1234\r\n\r\n"
    )
