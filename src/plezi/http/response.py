"""The response object a controller sees as ``self.response``, and response serialization."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final

__all__ = [
    "Reply",
    "Response",
    "Upgrade",
    "error_reply",
    "http_date",
    "simple_response",
    "status_line",
]

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus
}

#: The ``Date:`` line for the second ``[_date_start, _date_end)``.
_date_start = 0.0
_date_end = 0.0
_date_header = b""


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` (precomputed for every known status)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")
    return line


def http_date() -> bytes:
    """The ``Date:`` header line for now.

    PERF: formatting a date costs more than a whole hello-world response; it changes once a second,
    so it is cached per second (two float comparisons per call; a clock set back refreshes it too).
    """
    global _date_start, _date_end, _date_header
    now = time.time()
    if not _date_start <= now < _date_end:
        second = int(now)
        _date_start = float(second)
        _date_end = _date_start + 1.0
        _date_header = b"date: " + formatdate(second, usegmt=True).encode("latin-1") + b"\r\n"
        _starts.clear()  # they hold the old date
    return _date_header


_HTML = b"content-type: text/html; charset=utf-8\r\n"
_KEEP = b""
_CLOSE = b"connection: close\r\n"
#: The heads of :func:`simple_response` up to ``Content-Length`` (status line, date, type, extra
#: lines, connection) by their inputs; emptied when the date changes, and when full.
_starts: dict[tuple[int, bytes, bytes, bool], bytes] = {}
_STARTS_MAX = 64


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: bytes = _HTML,
    keep_alive: bool = True,
    head: bool = False,
    extra: bytes = b"",
) -> bytes:
    """Serialize a response with no custom headers.

    PERF: the common case (a controller returned a string and never touched ``self.response``)
    skips the :class:`Response` object entirely, and all but the length and body of the head is
    built once a second.
    """
    date = http_date()
    key = (status, content_type, extra, keep_alive)
    start = _starts.get(key)
    if start is None:
        if len(_starts) >= _STARTS_MAX:
            _starts.clear()
        start = _starts[key] = b"".join(
            (status_line(status), date, content_type, extra, _KEEP if keep_alive else _CLOSE)
        )
    return b"%scontent-length: %d\r\n\r\n%s" % (start, len(body), b"" if head else body)


class Response:
    """A response under construction: status, headers, cookies and body.

    ``headers`` is a plain dict; names are sent in lower case whatever case they were set in
    (as HTTP/2 and ASGI servers send them), so ``headers["X-Foo"]`` goes out as ``x-foo``. Set
    the content type through the ``content-type`` header (any capitalization) or leave the
    default ``text/html``.
    """

    __slots__ = ("body", "cookies", "headers", "status")

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        #: Values of ``Set-Cookie`` headers, one per cookie.
        self.cookies: list[str] = []
        self.body: bytes = b""

    def set_body(self, body: str | bytes | bytearray | memoryview) -> None:
        """Set the body; ``str`` is encoded as UTF-8."""
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    def has_header(self, name: str) -> bool:
        """Whether a header was set, comparing names case-insensitively."""
        lname = name.lower()
        return any(k.lower() == lname for k in self.headers)

    def serialize(self, *, keep_alive: bool = True, head: bool = False) -> bytes:
        """The full response bytes (status line, headers, body)."""
        parts = [status_line(self.status), http_date()]
        has_type = False
        for name, value in self.headers.items():
            lname = name.lower()
            if lname == "content-length" or lname == "connection":
                continue  # computed below; a stale value would break framing
            if lname == "content-type":
                has_type = True
            _check_header(name, value)
            # PERF: the lower-case name is already at hand; one header case costs nothing.
            parts.append(f"{lname}: {value}\r\n".encode("latin-1"))
        for cookie in self.cookies:
            _check_header("set-cookie", cookie)
            parts.append(b"set-cookie: " + cookie.encode("latin-1") + b"\r\n")
        if not has_type and self.body and self.status not in (204, 304):
            parts.append(_HTML)
        if not keep_alive:
            parts.append(_CLOSE)
        if self.status not in (204, 304) and not (100 <= self.status < 200):
            parts.append(b"content-length: %d\r\n" % len(self.body))
        parts.append(b"\r\n")
        if not head and self.status not in (204, 304):
            parts.append(self.body)
        return b"".join(parts)


def _check_header(name: str, value: str) -> None:
    # A CR or LF in a header would let whoever controls the value inject headers or a body.
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"invalid character in response header {name!r}")


#: ``content-type`` of plezi's own plain-text answers (errors).
_TEXT: Final = b"content-type: text/plain; charset=utf-8\r\n"


@dataclass(slots=True)
class Upgrade:
    """The request was accepted as a WebSocket (or an SSE stream) by ``controller``."""

    #: The controller instance that takes the connection (:class:`plezi.Controller`).
    controller: Any
    #: The route that accepted it (:class:`plezi.web.routes.ControllerRoute`).
    route: Any
    #: The client's ``Sec-WebSocket-Key`` (empty for SSE).
    key: str
    #: A Server-Sent Events stream rather than a WebSocket.
    sse: bool = False


#: What the application answers a request with: the response's bytes, or an :class:`Upgrade`.
Reply = bytes | Upgrade


def error_reply(
    status: int, message: str, *, keep_alive: bool = True, head: bool = False, extra: bytes = b""
) -> bytes:
    """A short plain-text error response."""
    return simple_response(
        status,
        message.encode() + b"\n",
        content_type=_TEXT,
        keep_alive=keep_alive,
        head=head,
        extra=extra,
    )
