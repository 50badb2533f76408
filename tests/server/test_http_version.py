"""The HTTP version a request is read as (the server skips ``get_http_version()`` when it can).

Without a ``Connection`` or ``Proxy-Connection`` header, llhttp keeps a request's connection
alive only for HTTP/1.1; the server relies on that to know the version without asking httptools
to format it. The first test pins that assumption on the installed httptools; the others check
what the application sees through a real server.
"""

from __future__ import annotations

from collections.abc import Callable

import httptools
import pytest
from rawhttp import RawHTTP

import plezi
from helpers import Running

#: Header lines that may change what llhttp says about keep-alive.
HEADERS = [
    b"",
    b"Connection: keep-alive\r\n",
    b"Connection: close\r\n",
    b"Connection: foo, keep-alive\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"Proxy-Connection: close\r\n",
    b"Keep-Alive: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
]


class _Seen:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.names: set[bytes] = set()
        self.result: tuple[bool, str] | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.add(name.lower())

    def on_headers_complete(self) -> None:
        self.result = (self.parser.should_keep_alive(), self.parser.get_http_version())


@pytest.mark.parametrize("header", HEADERS)
def test_keep_alive_without_connection_header_means_http_1_1(header: bytes) -> None:
    accepted = 0
    for major in range(10):
        for minor in range(10):
            seen = _Seen()
            try:
                seen.parser.feed_data(
                    b"GET / HTTP/%d.%d\r\nHost: x\r\n%s\r\n" % (major, minor, header)
                )
            except httptools.HttpParserError:
                continue  # a version llhttp refuses never reaches the server's check
            assert seen.result is not None
            accepted += 1
            keep_alive, version = seen.result
            if keep_alive and not seen.names & {b"connection", b"proxy-connection"}:
                assert version == "1.1", (major, minor, header)
    assert accepted >= 2  # at least HTTP/1.0 and HTTP/1.1


class Version:
    def index(self) -> str:
        return self.request.http_version  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def port(serve: Callable[..., Running]) -> int:
    app = plezi.App()
    app.route("/", Version)
    return serve(app).port


@pytest.mark.parametrize(
    ("request_line", "header", "version"),
    [
        (b"HTTP/1.1", b"", "1.1"),
        (b"HTTP/1.1", b"Connection: close\r\n", "1.1"),
        (b"HTTP/1.1", b"Proxy-Connection: close\r\n", "1.1"),
        (b"HTTP/1.1", b"Connection: keep-alive\r\n", "1.1"),
        (b"HTTP/1.0", b"", "1.0"),
        (b"HTTP/1.0", b"Connection: keep-alive\r\n", "1.0"),
        (b"HTTP/1.0", b"Proxy-Connection: keep-alive\r\n", "1.0"),
    ],
)
def test_request_sees_its_version(
    port: int, request_line: bytes, header: bytes, version: str
) -> None:
    with RawHTTP(port) as conn:
        conn.send(b"GET / " + request_line + b"\r\nHost: x\r\n" + header + b"\r\n")
        assert conn.read_response().text == version


@pytest.mark.parametrize("header", [b"", b"Connection: keep-alive\r\n", b"Proxy-Connection: x\r\n"])
@pytest.mark.parametrize("request_line", [b"HTTP/2.0", b"HTTP/0.9"])
def test_unsupported_versions_are_refused(port: int, request_line: bytes, header: bytes) -> None:
    with RawHTTP(port) as conn:
        conn.send(b"GET / " + request_line + b"\r\nHost: x\r\n" + header + b"\r\n")
        assert conn.read_response().status == 505
