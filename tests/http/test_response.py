"""Response serialization: the cached head of :func:`simple_response` and the ``Date`` line."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import pytest

from plezi.http import response
from plezi.http.response import http_date, simple_response

T0 = 1_800_000_000.0  # a whole second


def date_of(reply: bytes) -> float:
    for line in reply.split(b"\r\n"):
        if line.startswith(b"date: "):
            return parsedate_to_datetime(line[6:].decode()).timestamp()
    raise AssertionError(f"no date line in {reply!r}")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [T0]
    monkeypatch.setattr(response, "time", SimpleNamespace(time=lambda: now[0]))
    return now


def test_date_follows_the_clock(clock: list[float]) -> None:
    assert date_of(simple_response(200, b"x")) == T0
    clock[0] = T0 + 0.999
    assert date_of(simple_response(200, b"x")) == T0
    clock[0] = T0 + 1
    assert date_of(simple_response(200, b"x")) == T0 + 1
    assert http_date() == b"date: Fri, 15 Jan 2027 08:00:01 GMT\r\n"
    clock[0] = T0 - 30  # a clock set back gives the date it says, not the cached one
    assert date_of(simple_response(200, b"x")) == T0 - 30


def test_every_input_shapes_its_own_head(clock: list[float]) -> None:
    date = b"date: Fri, 15 Jan 2027 08:00:00 GMT\r\n"
    html = b"content-type: text/html; charset=utf-8\r\n"
    text = b"content-type: text/plain\r\n"
    assert simple_response(200, b"hello") == (
        b"HTTP/1.1 200 OK\r\n" + date + html + b"content-length: 5\r\n\r\nhello"
    )
    assert simple_response(404, b"no", content_type=text, keep_alive=False) == (
        b"HTTP/1.1 404 Not Found\r\n" + date + text + b"connection: close\r\n"
        b"content-length: 2\r\n\r\nno"
    )
    assert simple_response(200, b"hello", head=True) == (
        b"HTTP/1.1 200 OK\r\n" + date + html + b"content-length: 5\r\n\r\n"
    )
    assert simple_response(400, b"", extra=b"a: b\r\n") == (
        b"HTTP/1.1 400 Bad Request\r\n" + date + html + b"a: b\r\ncontent-length: 0\r\n\r\n"
    )
    assert simple_response(599, b"") == (
        b"HTTP/1.1 599 Unknown\r\n" + date + html + b"content-length: 0\r\n\r\n"
    )
    assert simple_response(200, b"hello") == (
        b"HTTP/1.1 200 OK\r\n" + date + html + b"content-length: 5\r\n\r\nhello"
    )


def test_the_head_cache_is_bounded(clock: list[float]) -> None:
    for n in range(3 * response._STARTS_MAX):
        extra = b"x-n: %d\r\n" % n
        assert extra in simple_response(200, b"", extra=extra)
        assert len(response._starts) <= response._STARTS_MAX
