"""Between ASGI and plezi: a scope becomes a :class:`~plezi.http.request.Request`, and the reply
data :meth:`plezi.web.app.App.handle` returns becomes ``http.response.*`` messages.

``App.handle`` stays the one place that knows how a controller's return value becomes a reply,
for the native server and for ASGI alike; it answers with data (status, header pairs, body), which
is handed to the ASGI server as it is: nothing is rendered to HTTP/1.1 and parsed back.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from ..http.request import Request
from ..http.response import HTML, Reply, has_body
from ..http.static import FileReply
from .types import ASGIMessage, Receive, Scope

__all__ = [
    "BodyTooLarge",
    "ClientGone",
    "asgi_headers",
    "read_body",
    "reply_messages",
    "request_from_scope",
]

#: Characters a path segment may hold raw besides the unreserved ones (as :mod:`plezi.routing`).
_PATH_SAFE: Final = "/!$&'()*+,;=:@"
#: The one header of a hello-world reply besides its length.
_HTML_TYPE: Final = (b"content-type", HTML.encode("latin-1"))
_SCHEMES: Final = {"ws": "http", "wss": "https"}


class BodyTooLarge(Exception):
    """The request body is over ``max_body_size`` (answered with 413)."""


class ClientGone(Exception):
    """The client disconnected before its request was complete (nothing to answer)."""


def request_from_scope(scope: Scope, body: bytes = b"") -> Request:
    """The request a controller sees for an ``http`` or ``websocket`` scope.

    As on the native server: header names are lower case, repeated headers are joined (cookies
    with ``"; "``), and ``path`` is the raw, still percent-encoded path, here without the
    ``root_path`` the application is mounted at.
    """
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in headers:
            value = headers[name] + ("; " if name == "cookie" else ", ") + value
        headers[name] = value
    path = _route_path(scope)
    query = (scope.get("query_string") or b"").decode("latin-1")
    client = scope.get("client")
    scheme = scope.get("scheme") or "http"
    return Request(
        scope.get("method", "GET"),
        f"{path}?{query}" if query else path,
        path,
        query,
        headers,
        body,
        scope.get("http_version", "1.1"),
        (str(client[0]), int(client[1])) if client else None,
        _SCHEMES.get(scheme, scheme),
        True,
    )


def _route_path(scope: Scope) -> str:
    """The raw path below ``root_path`` (ASGI: ``path`` and ``raw_path`` include it)."""
    raw = scope.get("raw_path")
    path: str
    if raw:
        path = raw.decode("latin-1").partition("?")[0]
    else:
        path = quote(scope.get("path") or "/", safe=_PATH_SAFE)
    root = (scope.get("root_path") or "").rstrip("/")
    if root and (scope.get("path") or "").startswith(root):
        # Drop as many segments as the root has: the raw path may spell them percent-encoded.
        parts = path.split("/")
        path = "/" + "/".join(parts[root.count("/") + 1 :])
    return path


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """The whole request body; :class:`BodyTooLarge` past ``limit`` bytes (checked against a
    declared ``Content-Length`` before anything is read), :class:`ClientGone` on disconnect."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body") or b""
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def reply_messages(reply: bytes | Reply, *, head: bool, prefix: str = "http") -> list[ASGIMessage]:
    """The ``<prefix>.response.start`` and ``<prefix>.response.body`` messages of ``reply``
    (``prefix`` is ``"websocket.http"`` for a refused WebSocket handshake): ``bytes`` are the
    body of a ``200 text/html`` reply, as ``App.handle`` answers a ``str``. ``Content-Length``
    is the body's, as the native server sends it (a ``HEAD`` reply's too); the connection and
    the date are the ASGI server's."""
    if type(reply) is bytes:
        status = 200
        body = reply
        headers = [_HTML_TYPE, (b"content-length", b"%d" % len(body))]
    else:
        assert isinstance(reply, Reply)
        status = reply.status
        body = reply.body
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in reply.headers]
        if has_body(status):
            # A file's reply (to a HEAD request: closed, unread) has its length in ``size``.
            length = reply.size if isinstance(reply, FileReply) else len(body)
            headers.append((b"content-length", b"%d" % length))
        else:
            body = b""
    return [
        {"type": f"{prefix}.response.start", "status": status, "headers": headers},
        {"type": f"{prefix}.response.body", "body": b"" if head else body},
    ]


def asgi_headers(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """``(name, value)`` strings as ASGI header pairs (lower-case Latin-1 bytes)."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
