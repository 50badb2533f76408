"""What the application answers with, as plain data: the :class:`Response` a controller sees
as ``self.response``, the :class:`Reply` it becomes (status, headers, body), and :class:`Accept`
("this request becomes a WebSocket, or an event stream").

Nothing here writes HTTP/1.1: the native server renders a reply (:mod:`plezi.server.h1`), the
ASGI adapter hands the same data to the ASGI server (:mod:`plezi.asgi.scope`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.handshake import check_header

__all__ = [
    "HTML",
    "Accept",
    "Outcome",
    "Reply",
    "Response",
    "Upgrade",
    "error_reply",
    "has_body",
    "unavailable",
]

#: The content type of a body nothing else names (a ``str`` returned by an action).
HTML: Final = "text/html; charset=utf-8"
#: The headers of plezi's own plain-text answers (errors).
_TEXT: Final = (("content-type", "text/plain; charset=utf-8"),)
#: Set by the server from the body (or the connection), never taken from the application.
_COMPUTED: Final = frozenset(("content-length", "connection"))


def has_body(status: int) -> bool:
    """Whether a reply with ``status`` carries a body (and a ``Content-Length``)."""
    return status != 204 and status != 304 and not 100 <= status < 200


class Reply:
    """A finished reply: ``status``, ``headers`` (checked ``(name, value)`` pairs, names in
    lower case, without ``Content-Length``, ``Connection`` or ``Date``, which the server sets;
    a tuple for fixed headers, which the server may render once a second) and ``body``.
    Whoever serves it adds the framing: the native server renders it to HTTP/1.1, the ASGI
    adapter passes it on as ``http.response.*`` messages."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Sequence[tuple[str, str]], body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers!r}, {len(self.body)} bytes)"


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

    def header_pairs(self) -> list[tuple[str, str]]:
        """The headers and cookies as checked ``(name, value)`` pairs, names in lower case,
        without the ones the server computes; ``ValueError`` for one that would inject lines
        (see :func:`plezi.protocol.handshake.check_header`)."""
        pairs = []
        for name, value in self.headers.items():
            lname = check_header(name, value)
            if lname not in _COMPUTED:  # a stale length would break framing
                pairs.append((lname, value))
        for cookie in self.cookies:
            pairs.append((check_header("set-cookie", cookie), cookie))
        return pairs

    def reply(self) -> Reply:
        """The finished :class:`Reply` (``text/html`` when a body has no type)."""
        headers = self.header_pairs() if self.headers or self.cookies else []
        body = self.body
        # PERF: the type is looked for only when it matters (a body the server will send).
        if body and has_body(self.status):
            for name, _ in headers:
                if name == "content-type":
                    break
            else:
                headers.append(("content-type", HTML))
        return Reply(self.status, headers, body)


@dataclass(slots=True)
class Accept:
    """ "Accept this connection": the request becomes a WebSocket (or, with ``sse``, a
    Server-Sent Events stream) run by ``controller``."""

    #: The controller instance that takes the connection (:class:`plezi.Controller`).
    controller: Any
    #: The route that accepted it (:class:`plezi.web.routes.ControllerRoute`).
    route: Any
    #: The client's ``Sec-WebSocket-Key`` (empty for SSE, and when an ASGI server did the
    #: handshake).
    key: str
    #: A Server-Sent Events stream rather than a WebSocket.
    sse: bool = False

    @property
    def kind(self) -> str:
        """``"sse"`` or ``"websocket"``."""
        return "sse" if self.sse else "websocket"


#: The earlier name of :class:`Accept`.
Upgrade = Accept

#: What the application answers a request with: a :class:`Reply` (a
#: :class:`~plezi.http.static.FileReply` for a large file), an :class:`Accept`, or ``bytes``: the
#: body of a ``200`` ``text/html`` reply with no other header (PERF: the hello-world path, which
#: the server renders from a head it builds once a second).
Outcome = bytes | Reply | Accept


def error_reply(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """A short plain-text reply (errors); ``headers``: more of them (``Allow`` for a 405)."""
    return Reply(status, _TEXT + tuple(headers) if headers else _TEXT, message.encode() + b"\n")


def unavailable() -> Reply:
    """The ``503`` that answers what arrives while the server shuts down."""
    return error_reply(503, "Service Unavailable")
