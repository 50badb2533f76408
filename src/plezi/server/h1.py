"""HTTP/1.1 replies on the wire: the one place that turns the application's data
(:class:`~plezi.http.response.Reply`, or the body of a hello-world reply) into bytes.

The status line, the ``Date`` line (cached per second) and, for the hello-world path, the
whole head up to ``Content-Length`` are precomputed: rendering a small reply is one join.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

from ..http.response import HTML, Reply, error_reply

__all__ = ["error_bytes", "http_date", "render", "render_text", "status_line"]

_STATUS_LINES: Final[dict[int, bytes]] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in HTTPStatus
}
_HTML_LINE: Final = f"content-type: {HTML}\r\n".encode("latin-1")
_CLOSE: Final = b"connection: close\r\n"

#: The ``Date:`` line for the second ``[_date_start, _date_end)``.
_date_start = 0.0
_date_end = 0.0
_date_header = b""
#: The hello-world heads up to ``Content-Length`` (status line, date, type, connection) by
#: ``keep_alive``; emptied when the date changes.
_text_heads: Final[dict[bool, bytes]] = {}
#: The heads of replies with fixed (tuple) headers up to ``Content-Length``, by status, headers
#: and ``keep_alive``; emptied when the date changes, and when full.
_starts: Final[dict[tuple[int, Sequence[tuple[str, str]], bool], bytes]] = {}
_STARTS_MAX: Final = 64
#: The clock of the ``Date:`` line (a module global, not ``time.time`` itself: tests set it).
_now = time.time


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
    now = _now()
    if not _date_start <= now < _date_end:
        second = int(now)
        _date_start = float(second)
        _date_end = _date_start + 1.0
        _date_header = b"date: " + formatdate(second, usegmt=True).encode("latin-1") + b"\r\n"
        _text_heads.clear()  # they hold the old date
        _starts.clear()
    return _date_header


def render_text(body: bytes, keep_alive: bool, head: bool) -> bytes:
    """A ``200`` ``text/html`` reply with ``body`` and no other header (what an action's ``str``
    becomes). PERF: the hello-world path: all but the length and the body is built once a
    second, and within that second this is one clock read and no other call."""
    now = _now()
    if not _date_start <= now < _date_end:
        http_date()  # a new second: a new date, and the heads that held the old one dropped
    start = _text_heads.get(keep_alive)
    if start is None:
        start = _text_heads[keep_alive] = b"".join(
            (_STATUS_LINES[200], http_date(), _HTML_LINE, b"" if keep_alive else _CLOSE)
        )
    return b"%scontent-length: %d\r\n\r\n%s" % (start, len(body), b"" if head else body)


def render(reply: Reply, keep_alive: bool, head: bool, length: int = -1) -> bytes:
    """``reply`` as HTTP/1.1 bytes; ``head``: without the body (a ``HEAD`` request's reply).
    ``length`` (when not ``-1``) is the ``Content-Length`` of a body sent after the head (a
    file's), ``reply.body`` then being empty."""
    status = reply.status
    headers = reply.headers
    framed = status != 204 and status != 304 and not 100 <= status < 200  # (`has_body`)
    if type(headers) is tuple:
        # PERF: fixed headers (plezi's own replies: errors): the head up to the length is
        # built once a second, as for the hello-world path.
        key = (status, headers, keep_alive)
        start = _starts.get(key)
        if start is None:
            if len(_starts) >= _STARTS_MAX:
                _starts.clear()
            start = _starts[key] = _start(status, headers, keep_alive)
        if not framed:
            return start + b"\r\n"
        size = len(reply.body) if length < 0 else length
        return b"%scontent-length: %d\r\n\r\n%s" % (start, size, b"" if head else reply.body)
    # PERF: one join for the whole reply; names were checked and lower-cased when it was made.
    parts = [status_line(status), http_date()]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        parts.append(_CLOSE)
    if framed:
        parts.append(b"content-length: %d\r\n\r\n" % (len(reply.body) if length < 0 else length))
        if not head:
            parts.append(reply.body)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def _start(status: int, headers: Sequence[tuple[str, str]], keep_alive: bool) -> bytes:
    """The head of a reply up to its ``Content-Length`` (the status line to the connection)."""
    parts = [status_line(status), http_date()]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        parts.append(_CLOSE)
    return b"".join(parts)


def error_bytes(status: int, message: str, *, head: bool = False) -> bytes:
    """A plain-text error reply that closes the connection (the server's own refusals)."""
    return render(error_reply(status, message), False, head)
