"""HTTP/1.1 connections: httptools parsing, pipelining, limits, and the switch to WebSocket.

Theory of operation
-------------------
One :class:`HttpProtocol` per TCP connection. httptools calls ``on_*`` as bytes arrive; a complete
request goes to :meth:`plezi.app.App.handle`. Sync controllers answer inside the parser callback and
the replies of one ``data_received`` call leave in one ``transport.write`` (pipelined requests
get their answers in one packet). When a reply is a coroutine (an ``async`` controller method),
later pipelined requests wait in ``_waiting`` so replies keep request order.

``_state`` drives the timeouts the server's reaper enforces: IDLE (waiting for a request:
keep-alive timeout), HEAD (reading the request head: slowloris timeout, 408), BODY (reading the
body: no byte for ``header_timeout`` -> 408), BUSY (a handler is running: no timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from ..app import Upgrade, error_reply
from ..http.request import Request
from ..protocol.handshake import handshake_response
from .websocket import WebSocketConnection

if TYPE_CHECKING:
    from .server import Server

__all__ = ["HttpProtocol"]

log = logging.getLogger("plezi")
access_log = logging.getLogger("plezi.access")

IDLE, HEAD, BODY, BUSY = 0, 1, 2, 3


class _Limit(Exception):
    """Raised inside a parser callback to stop parsing with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpProtocol(asyncio.Protocol):
    """The HTTP side of a connection (see the module docstring)."""

    __slots__ = (
        "_body",
        "_body_size",
        "_close_after",
        "_head_size",
        "_headers",
        "_last",
        "_out",
        "_parser",
        "_started",
        "_state",
        "_upgrade",
        "_url",
        "_waiting",
        "client",
        "server",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser = httptools.HttpRequestParser(self)
        self._state = IDLE
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._out: list[bytes] = []
        self._waiting: deque[Request] | None = None
        self._upgrade: Request | None = None
        self._close_after = False
        self._last = server.now
        self._started = server.now
        self.client: tuple[str, int] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[:2] if isinstance(peer, tuple) else None
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._state = IDLE
        self._waiting = None

    def data_received(self, data: bytes) -> None:
        self._last = self.server.now
        before = self._state
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            self._begin_upgrade(data[exc.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Limit):
                self._fail(cause.status, str(cause))
            else:
                log.error("error while parsing a request", exc_info=cause or exc)
                self._fail(500, "Internal Server Error")
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"Bad Request: {exc}")
            return
        if self._state == HEAD and before == HEAD:
            # The head arrives slowly over several reads: count raw bytes too, since httptools
            # holds a header value until it is complete.
            self._head_size += len(data)
            if self._head_size > self.server.limits.max_header_size:
                self._fail(431, "Request Header Fields Too Large")
                return
        self._flush()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._state = HEAD
        self._started = self.server.now
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.server.limits.max_header_size:
            raise _Limit(431 if len(self._url) < 8192 else 414, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.server.limits.max_header_size:
            raise _Limit(431, "Request Header Fields Too Large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            text = headers[key] + ("; " if key == "cookie" else ", ") + text
        headers[key] = text

    def on_headers_complete(self) -> None:
        self._state = BODY
        self._head_size = 0
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.limits.max_body_size:
            raise _Limit(413, "Content Too Large")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.limits.max_body_size:
            raise _Limit(413, "Content Too Large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._state = BUSY
        request = self._request()
        if self._parser.should_upgrade():
            self._upgrade = request
        elif self._waiting is not None:
            self._waiting.append(request)
        else:
            self._handle(request)

    # -- requests ---------------------------------------------------------------------------

    def _request(self) -> Request:
        url = self._url.decode("latin-1")
        path, sep, query = url.partition("?")
        if "#" in query:
            query = query.partition("#")[0]
        body = self._body
        parser = self._parser
        return Request(
            parser.get_method().decode("ascii"),
            url,
            path,
            query,
            self._headers,
            body=body[0] if len(body) == 1 else b"".join(body),
            http_version=parser.get_http_version(),
            client=self.client,
            keep_alive=parser.should_keep_alive() and not self.server.shutting_down,
        )

    def _handle(self, request: Request) -> None:
        reply = self.server.app.handle(request)
        if type(reply) is bytes:
            self._answer(request, reply)
        elif isinstance(reply, Upgrade):
            # Only reachable for a request httptools did not flag as an upgrade.
            self._answer(request, error_reply(400, "Bad Request", keep_alive=False))
        else:
            self._waiting = deque()
            self.server.spawn(self._handle_async(request, reply))

    async def _handle_async(self, request: Request, pending: Any) -> None:
        reply = await pending
        if self.transport.is_closing():
            return
        self._answer(request, reply)
        self._flush()
        waiting = self._waiting
        while waiting and not self._close_after:
            request = waiting.popleft()
            reply = self.server.app.handle(request)
            if type(reply) is not bytes:
                reply = await reply
            self._answer(request, reply)
            self._flush()
        self._waiting = None

    def _answer(self, request: Request, reply: bytes) -> None:
        self._out.append(reply)
        if self.server.config.verbose:
            access_log.info('%s "%s %s HTTP/%s" %s %d', self.client[0] if self.client else "-",
                            request.method, request.url, request.http_version, reply[9:12].decode(),
                            len(reply))
        if not request.keep_alive:
            self._close_after = True
        self._state = IDLE

    def _flush(self) -> None:
        out = self._out
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._close_after and self._waiting is None:
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        peer = self.client[0] if self.client else "-"
        log.info("%s: %d %s", peer, status, message)
        self._flush()
        self.transport.write(error_reply(status, message.split(":")[0], keep_alive=False))
        self.transport.close()
        self._state = IDLE

    # -- WebSocket upgrade ------------------------------------------------------------------

    def _begin_upgrade(self, rest: bytes) -> None:
        request, self._upgrade = self._upgrade, None
        if request is None:  # httptools flagged an upgrade we did not see complete
            self._fail(400, "Bad Request: incomplete upgrade")
            return
        reply = self.server.app.handle(request)
        if isinstance(reply, bytes | Upgrade):
            self._finish_upgrade(request, reply, rest)
            return
        self.transport.pause_reading()
        self.server.spawn(self._upgrade_async(request, reply, rest))

    async def _upgrade_async(self, request: Request, pending: Any, rest: bytes) -> None:
        reply = await pending
        if not self.transport.is_closing():
            self.transport.resume_reading()
            self._finish_upgrade(request, reply, rest)

    def _finish_upgrade(self, request: Request, reply: bytes | Upgrade, rest: bytes) -> None:
        if isinstance(reply, bytes):
            # Refused (or not a WebSocket route): the parser cannot go on after an upgrade.
            request.keep_alive = False
            self._answer(request, reply)
            self._flush()
            self.transport.close()
            return
        headers: list[tuple[str, str]] = []
        response = reply.controller._pl_response
        if response is not None:
            headers.extend(response.headers.items())
            headers.extend(("Set-Cookie", c) for c in response.cookies)
        if self.server.shutting_down:
            self.transport.write(error_reply(503, "Service Unavailable", keep_alive=False))
            self.transport.close()
            return
        self.transport.write(handshake_response(reply.key, headers))
        if self.server.config.verbose:
            access_log.info('%s "GET %s HTTP/1.1" 101 WebSocket', self.client[0] if self.client
                            else "-", request.url)
        self.server.connections.discard(self)
        conn = WebSocketConnection(self.server, self.transport, reply.controller, reply.route)
        self.transport.set_protocol(conn)
        conn.start(rest)

    # -- timers -----------------------------------------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Close connections that are idle too long or send their request too slowly."""
        state = self._state
        limits = self.server.limits
        if state == IDLE:
            if now - self._last > limits.keepalive_timeout:
                self.transport.close()
        elif state == HEAD:
            if now - self._started > limits.header_timeout:
                self._fail(408, "Request Timeout: request head too slow")
        elif state == BODY and now - self._last > limits.header_timeout:
            self._fail(408, "Request Timeout: request body stalled")

    def shutdown(self) -> None:
        """Server shutdown: close now if idle, else after the current reply."""
        if self._state == IDLE and not self._out:
            self.transport.close()
        else:
            self._close_after = True
