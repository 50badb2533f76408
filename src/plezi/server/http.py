"""HTTP/1.1 connections: httptools parsing, pipelining, limits, the switch to WebSocket or SSE.

Theory of operation
-------------------
One :class:`HttpProtocol` per TCP connection. httptools calls ``on_*`` as bytes arrive; a complete
request goes to :meth:`plezi.app.App.handle`. Sync controllers answer inside the parser callback and
the replies of one ``data_received`` call leave in one ``transport.write`` (pipelined requests
get their answers in one packet).

When a reply is a coroutine (an ``async`` controller method), ``_waiting`` becomes a queue: later
pipelined requests wait there (and reading pauses, so a client cannot queue without bound) and
are answered in order once the coroutine is done. Whatever else must come after those replies
waits too: a WebSocket upgrade (``_upgrade_rest``) or the error answering a malformed request
(``_deferred``). Replies therefore always leave in request order.

An SSE request the application accepts (an :class:`~plezi.app.Upgrade` with ``sse``) is the last
one read too: its ``200`` head is written after the replies before it, the transport goes to an
:class:`~.sse.SseConnection`, and parsing stops there (``_Switched`` is raised out of the parser
callback; requests pipelined behind it are dropped, unanswered).

A request that asks to close (``Connection: close``, HTTP/1.0 without keep-alive) is the last
one read (``_no_more``); the connection closes once it is answered (``_close_after``), and bytes
after it are ignored (RFC 9112 section 9.6).

``_state`` drives the timeouts the server's reaper enforces: IDLE (waiting for a request:
keep-alive timeout, counted from the last reply or read), HEAD (reading the request head:
slowloris timeout, 408), BODY (reading the body: no byte for ``header_timeout`` -> 408), BUSY (a
handler is running: no timeout).

The head size limit is checked twice, each count a lower bound of the real size so that neither
refuses a head within the limit: httptools' callbacks give the exact size of the request line and
of each complete header, and the raw bytes of reads that fall wholly inside one head catch a
header that is dribbled in and never completes (httptools buffers a header value until its end).
A chunked body's framing is bounded the same way: the bytes of reads wholly inside the body that
are not body data (chunk sizes, chunk extensions, which httptools skips without a callback) may
not exceed ``max_header_size`` plus the data received plus a few bytes per chunk; else a client
could stream extension bytes forever without ever reaching ``max_body_size``.

Hostile-input rules beyond httptools' own (see ``docs/security.md``): HTTP/1.1 needs exactly one
valid ``Host`` (an absolute-form target's authority replaces it, RFC 9112 section 3.2.2);
``Transfer-Encoding`` in HTTP/1.0 is refused (RFC 9112 section 6.1: its framing cannot be
trusted); an upgrade request may not carry a body (httptools would not read it); a WebSocket
upgrade must be HTTP/1.1 and, when ``allowed_origins`` is set, come from an allowed ``Origin``
(checked before the application sees the request).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from ..app import Reply, Upgrade, error_reply
from ..http.request import Request
from ..protocol.handshake import OriginPolicy, handshake_response, is_upgrade_request
from .sse import SseConnection, response_head
from .websocket import WebSocketConnection

if TYPE_CHECKING:
    from .server import Server

__all__ = ["HttpProtocol"]

log = logging.getLogger("plezi")
access_log = logging.getLogger("plezi.access")

IDLE, HEAD, BODY, BUSY = 0, 1, 2, 3
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Framing bytes every chunk may take on top of the allowance (see the module docstring): its
#: two CRLFs and a size of up to 12 hex digits, so that even 1-byte chunks always pass.
_CHUNK_FRAMING = 16
#: A valid ``Host`` value (RFC 9110 section 7.2): an IP literal or a reg-name, then a port.
#: Method names as ``str`` (PERF: no decode per request for the usual ones).
_METHODS: dict[bytes, str] = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
#: Lower-cased header names by their raw bytes, filled as they are seen (bounded: a client
#: sending random names only makes the cache stop growing).
#: Descriptors kept free for what is not a connection (files, Redis, logs) when
#: ``max_connections`` is 0 and the cap comes from the open-file limit.
_FD_RESERVE = 64


@functools.lru_cache(maxsize=8)
def connection_cap(max_connections: int) -> int:
    """The number of open connections past which a new one is refused (``Limits``)."""
    if max_connections:
        return max_connections
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 62
    return max(1, soft - _FD_RESERVE)


_HEADER_NAMES: dict[bytes, str] = {}
#: ``Server.now`` of the last "refused with 503" line (see ``_refuse_over_capacity``).
_last_capacity_log = float("-inf")
_HEADER_NAMES_MAX = 512
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


class _Limit(Exception):
    """Raised inside a parser callback to stop parsing with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Switched(Exception):
    """Raised inside a parser callback to stop parsing: the connection is an SSE stream now."""


class HttpProtocol(asyncio.Protocol):
    """The HTTP side of a connection (see the module docstring)."""

    __slots__ = (
        "_body",
        "_body_size",
        "_chunks",
        "_close_after",
        "_completed",
        "_deferred",
        "_framing",
        "_head_raw",
        "_head_size",
        "_headers",
        "_host",
        "_last",
        "_no_more",
        "_out",
        "_parser",
        "_paused",
        "_started",
        "_state",
        "_upgrade",
        "_upgrade_rest",
        "_url",
        "_version",
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
        self._version = "1.1"
        self._headers: dict[str, str] = {}
        #: The last ``Host`` value found valid on this connection (see ``_check_host``).
        self._host = ""
        self._body: list[bytes] = []
        self._body_size = 0
        #: Bytes of the current head seen by the callbacks, and in reads wholly inside it.
        self._head_size = 0
        self._head_raw = 0
        #: Chunks of the current body, and the non-data bytes seen in reads wholly inside it.
        self._chunks = 0
        self._framing = 0
        #: Requests completed on this connection (tells whether a read spans two messages).
        self._completed = 0
        self._out: list[bytes] = []
        #: Requests waiting for an ``async`` reply ahead of them (``None``: no reply pending).
        self._waiting: deque[Request] | None = None
        #: What follows the pending replies: an error reply, or the rest of an upgrade.
        self._deferred: bytes | None = None
        self._upgrade: Request | None = None
        self._upgrade_rest: bytes | None = None
        self._no_more = False
        self._close_after = False
        self._paused = False
        self._last = server.now
        self._started = server.now
        self.client: tuple[str, int] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[:2] if isinstance(peer, tuple) else None
        server = self.server
        if len(server.connections) >= connection_cap(server.limits.max_connections):
            self._refuse_over_capacity()
            return
        server.connections.add(self)

    def _refuse_over_capacity(self) -> None:
        """503 and close: the server holds ``max_connections`` already (logged once a second
        at most, so that a flood of connections cannot flood the log too)."""
        global _last_capacity_log
        self._no_more = True
        now = self.server.now
        if now - _last_capacity_log >= 1.0:
            _last_capacity_log = now
            log.warning(
                "%s: refused with 503: %d connections open (max_connections)",
                self.client[0] if self.client else "-",
                len(self.server.connections),
            )
        self._write_and_close(error_reply(503, "Service Unavailable", keep_alive=False))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._state = IDLE
        self._waiting = None

    def data_received(self, data: bytes) -> None:
        self._last = self.server.now
        if self._no_more:
            return  # after a request that closes the connection, nothing more is read
        completed = self._completed
        state = self._state
        body_size = self._body_size
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._flush()
            self._upgrade_ready(data[exc.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Limit):
                self._fail(cause.status, str(cause))
            elif isinstance(cause, _Switched):
                pass  # the transport belongs to an event stream now
            else:
                log.error("error while parsing a request", exc_info=cause or exc)
                self._fail(500, "Internal Server Error")
            # A local exception keeps this frame in a cycle (through its traceback), and with
            # it the SSE stream's controller and connection, until the cyclic GC runs.
            del cause
            return
        except httptools.HttpParserError as exc:
            if self._no_more:  # bytes after a request that closes the connection: ignored
                self._flush()
            else:
                self._fail(400, f"Bad Request: {exc}")
            return
        if self._completed == completed:
            if self._state == HEAD:
                # This whole read belongs to a head that is still incomplete.
                self._head_raw += len(data)
                if self._head_raw > self.server.limits.max_header_size:
                    self._fail(431, "Request Header Fields Too Large")
                    return
            elif state == BODY and self._state == BODY and "transfer-encoding" in self._headers:
                # This whole read belongs to a chunked body: what is not data is framing.
                self._framing += len(data) - (self._body_size - body_size)
                allowance = (
                    self.server.limits.max_header_size
                    + self._body_size
                    + _CHUNK_FRAMING * self._chunks
                )
                if self._framing > allowance:
                    self._fail(413, "Content Too Large: chunk framing or extensions too large")
                    return
        self._flush()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        # Called on a request's first byte (even a lone "G" that no other callback reports):
        # the head timeout starts here.
        self._state = HEAD
        self._started = self.server.now
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self._head_raw = 0
        self._chunks = 0
        self._framing = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.server.limits.max_header_size:
            raise _Limit(431 if len(self._url) < 8192 else 414, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.server.limits.max_header_size:
            raise _Limit(431, "Request Header Fields Too Large")
        # PERF: clients send the same few header names on every request: decoded once.
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
                _HEADER_NAMES[name] = key
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            if key == "host":  # RFC 9112 3.2: which one would a proxy in front have used?
                raise _Limit(400, "Bad Request: more than one Host header")
            text = headers[key] + ("; " if key == "cookie" else ", ") + text
        headers[key] = text

    def on_headers_complete(self) -> None:
        self._state = BODY
        headers = self._headers
        # PERF: get_http_version() formats a new string every time. Without a Connection or
        # Proxy-Connection header, llhttp keeps a request's connection alive only for HTTP/1.1
        # (its other versions, 0.9, 1.0 and 2.0, have a major or a minor 0): that case needs
        # no call (tests/server/test_http_version.py checks this against httptools).
        if (
            "connection" not in headers
            and "proxy-connection" not in headers
            and self._parser.should_keep_alive()
        ):
            version = self._version = "1.1"
        else:
            version = self._version = self._parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Limit(505, f"HTTP Version Not Supported: HTTP/{version}")
        host = headers.get("host")
        # PERF: a keep-alive connection sends the same Host every time: it is checked once.
        if host is None or host != self._host or self._url[:1] != b"/":
            self._check_host(headers, version)
        length = headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self.server.limits.max_body_size
        ):
            raise _Limit(413, "Content Too Large")  # before the client sends the body
        coding = headers.get("transfer-encoding")
        if coding is not None and version == "1.0":
            # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing (an HTTP/1.0 proxy in front would not have read it as chunked).
            raise _Limit(400, "Bad Request: Transfer-Encoding in an HTTP/1.0 request")
        if coding is not None and coding.strip().lower() != "chunked":
            # RFC 9112 section 6: without "chunked" last the body has no reliable length (400);
            # httptools accepts "gzip, chunked" but hands over the body still gzipped, and a
            # coding the server does not decode is refused (501).
            if coding.rpartition(",")[2].strip().lower() != "chunked":
                raise _Limit(400, f"Bad Request: Transfer-Encoding {coding[:40]!r}")
            raise _Limit(501, f"Not Implemented: Transfer-Encoding {coding[:40]!r}")
        if (
            "expect" in headers
            and version == "1.1"
            and self._waiting is None
            and headers["expect"].lower() == "100-continue"
            and (length not in (None, "0") or "transfer-encoding" in headers)
        ):
            # The client waits for this before sending the body (curl waits a second without
            # it). Queued after any earlier reply, so it never jumps ahead of one; behind an
            # async reply it is left out and the client sends the body after its own delay.
            self._out.append(_CONTINUE)

    def _check_host(self, headers: dict[str, str], version: str) -> None:
        """RFC 9112 section 3.2: HTTP/1.1 needs a valid ``Host``; an absolute-form target's
        authority replaces it (the app must see the host the client and any proxy used)."""
        host = headers.get("host")
        if self._url[:1] != b"/":
            authority = _authority(self._url.decode("latin-1"))
            if authority is not None:
                host = authority
        if host is None:
            if version == "1.1":
                raise _Limit(400, "Bad Request: no Host header")
            return
        value = host.strip(" \t")
        if not _HOST.fullmatch(value):
            raise _Limit(400, "Bad Request: invalid Host header")
        headers["host"] = value
        if value == host and self._url[:1] == b"/":
            self._host = value

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.limits.max_body_size:
            raise _Limit(413, "Content Too Large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._completed += 1
        self._state = BUSY
        request = self._request()
        if self._parser.should_upgrade():
            self._upgrade = request
            self._no_more = True  # the parser stops here; the upgrade decides what follows
            return
        if not request.keep_alive:
            self._no_more = True
        if self._waiting is not None:
            self._waiting.append(request)
            self._pause()  # PERF/safety: one read's worth of requests queued at most
            return
        # PERF: `_handle` inlined: this is every request's path.
        reply = self.server.app.handle(request)
        # `type(...) is bytes` first: the common sync reply costs one identity check.
        if type(reply) is bytes:
            self._answer(request, reply)
        elif isinstance(reply, Upgrade):
            self._answer(request, reply)
            if reply.sse:
                raise _Switched  # what the client sends after an SSE request is not parsed
        else:
            self._waiting = deque()
            self.server.spawn(self._handle_async(request, reply))

    # -- requests ---------------------------------------------------------------------------

    def _request(self) -> Request:
        url = self._url.decode("latin-1")
        target = url if url[:1] == "/" else _origin_form(url)
        if "#" in target:
            target = target.partition("#")[0]
        path, _, query = target.partition("?")
        body = self._body
        parser = self._parser
        method = parser.get_method()
        return Request(  # PERF: by position (see Request)
            _METHODS.get(method) or method.decode("ascii"),
            url,
            path,
            query,
            self._headers,
            (body[0] if len(body) == 1 else b"".join(body)) if body else b"",
            self._version,
            self.client,
            "http",
            parser.should_keep_alive() and not self.server.shutting_down,
        )

    async def _handle_async(self, request: Request, pending: Any) -> None:
        """Await an ``async`` reply, then answer the requests queued behind it, in order."""
        reply = await pending
        while True:
            if self.transport.is_closing():
                return
            self._answer(request, reply)
            if isinstance(reply, Upgrade) and reply.sse:
                return  # the requests queued behind it are dropped: see the module docstring
            self._flush()
            waiting = self._waiting
            if not waiting or self._close_after:
                break
            request = waiting.popleft()
            reply = self.server.app.handle(request)
            if not isinstance(reply, bytes | Upgrade):
                reply = await reply
        self._waiting = None
        self._drained()

    def _drained(self) -> None:
        """The pending replies are sent: do what had to wait for them."""
        deferred, self._deferred = self._deferred, None
        rest, self._upgrade_rest = self._upgrade_rest, None
        if self._close_after:
            self.transport.close()
        elif deferred is not None:
            self.transport.write(deferred)
            self.transport.close()
        elif rest is not None:
            self._begin_upgrade(rest)
        else:
            self._resume()

    def _answer(self, request: Request, reply: Reply) -> None:
        if not isinstance(reply, bytes):
            if reply.sse:
                self._begin_sse(request, reply)
                return
            # An Upgrade for a request httptools did not flag as one: refuse rather than guess.
            request.keep_alive = False
            reply = error_reply(400, "Bad Request", keep_alive=False)
        self._out.append(reply)
        if self.server.config.verbose:
            access_log.info(
                '%s "%s %s HTTP/%s" %s %d',
                self.client[0] if self.client else "-",
                request.method,
                request.url,
                request.http_version,
                reply[9:12].decode(),
                len(reply),
            )
        if not request.keep_alive:
            self._close_after = True
        self._last = self.server.now  # the keep-alive timeout counts from the reply
        if self._state == BUSY and not self._waiting:
            self._state = IDLE  # (HEAD or BODY: the next pipelined request is arriving)

    def _flush(self) -> None:
        out = self._out
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        if self._close_after and self._waiting is None:
            self.transport.close()

    def _fail(self, status: int, message: str, *, level: int = logging.INFO) -> None:
        """Refuse the request being read with ``status``, after the replies still owed.

        ``message`` goes to the log; the peer only sees its part before the first colon."""
        peer = self.client[0] if self.client else "-"
        log.log(level, "%s: %d %s", peer, status, message)
        self._no_more = True
        reply = error_reply(status, message.split(":")[0], keep_alive=False)
        if self._waiting is not None:
            self._deferred = reply
            self._state = BUSY
            self._pause()
            return
        self._state = IDLE
        self._flush()
        if not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    # -- WebSocket upgrade ------------------------------------------------------------------

    def _upgrade_ready(self, rest: bytes) -> None:
        if self._waiting is not None:  # replies to earlier requests first
            self._upgrade_rest = rest
            self._pause()
        else:
            self._begin_upgrade(rest)

    def _begin_upgrade(self, rest: bytes) -> None:
        request, self._upgrade = self._upgrade, None
        if request is None:  # httptools flagged an upgrade we did not see complete
            self._fail(400, "Bad Request: incomplete upgrade")
            return
        headers = request.headers
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            # httptools switches protocols right after the head: a body would be read as the
            # new protocol's bytes, and the request answered without it. Refused instead.
            self._fail(400, "Bad Request: an upgrade request with a body")
            return
        if is_upgrade_request(headers) and not self._upgrade_allowed(request):
            return
        reply = self.server.app.handle(request)
        if isinstance(reply, bytes | Upgrade):
            self._finish_upgrade(request, reply, rest)
            return
        self._pause()
        self.server.spawn(self._upgrade_async(request, reply, rest))

    def _upgrade_allowed(self, request: Request) -> bool:
        """What a WebSocket upgrade must satisfy before the application sees it; if it does not,
        it is refused here (with a log line) and ``False`` returned."""
        headers = request.headers
        if request.http_version != "1.1":  # RFC 6455 section 4.1
            self._fail(400, "Bad Request: a WebSocket upgrade needs HTTP/1.1")
            return False
        allowed = self.server.config.allowed_origins
        if allowed and not _origin_policy(tuple(allowed)).allows(headers.get("origin")):
            origin = headers.get("origin", "")
            self._fail(
                403,
                f"Forbidden: WebSocket upgrade to {request.path[:200]!r} from Origin "
                f"{origin[:200]!r} refused (not in allowed_origins)",
                level=logging.WARNING,
            )
            return False
        return True

    async def _upgrade_async(self, request: Request, pending: Any, rest: bytes) -> None:
        reply = await pending
        if not self.transport.is_closing():
            self._finish_upgrade(request, reply, rest)

    def _finish_upgrade(self, request: Request, reply: Reply, rest: bytes) -> None:
        if isinstance(reply, bytes):
            # Refused (or not a WebSocket route): the parser cannot go on after an upgrade.
            request.keep_alive = False
            self._answer(request, reply)
            self._flush()
            self.transport.close()
            return
        if reply.sse:  # an SSE request that also asked for an upgrade (h2c ...): ignored
            self._begin_sse(request, reply)
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
        try:
            handshake = handshake_response(reply.key, headers)
        except ValueError as exc:  # e.g. a CR/LF in a header pre_connect set
            log.error("cannot accept the WebSocket for %s: %s", request.path, exc)
            self.transport.write(error_reply(500, "Internal Server Error", keep_alive=False))
            self.transport.close()
            return
        self.transport.write(handshake)
        if self.server.config.verbose:
            self._log_switch(request, "101 WebSocket")
        self._hand_over(WebSocketConnection, reply, rest)

    # -- Server-Sent Events -----------------------------------------------------------------

    def _begin_sse(self, request: Request, upgrade: Upgrade) -> None:
        """Answer an accepted SSE request: the ``200`` head after the replies before it, then
        the transport goes to an :class:`SseConnection`; nothing more is parsed."""
        self._no_more = True
        if self.server.shutting_down:
            self._write_and_close(error_reply(503, "Service Unavailable", keep_alive=False))
            return
        try:
            head = response_head(upgrade.controller)
        except ValueError as exc:  # e.g. a CR/LF in a header pre_connect set
            log.error("cannot start the event stream for %s: %s", request.path, exc)
            self._write_and_close(error_reply(500, "Internal Server Error", keep_alive=False))
            return
        self._write_and_close(head, close=False)
        if self.server.config.verbose:
            self._log_switch(request, "200 SSE")
        self._hand_over(SseConnection, upgrade, b"")

    def _hand_over(self, kind: type[WebSocketConnection], upgrade: Upgrade, rest: bytes) -> None:
        """Give the transport to a ``kind`` connection (WebSocket or SSE) for ``upgrade``'s
        controller; ``rest``: bytes read past the request, for the new protocol."""
        self.server.connections.discard(self)
        self._resume()
        conn = kind(self.server, self.transport, upgrade.controller, upgrade.route)
        self.transport.set_protocol(conn)
        conn.start(rest)

    def _log_switch(self, request: Request, outcome: str) -> None:
        """The access log line of a request that became a WebSocket or an event stream."""
        access_log.info(
            '%s "GET %s HTTP/%s" %s',
            self.client[0] if self.client else "-",
            request.url,
            request.http_version,
            outcome,
        )

    def _write_and_close(self, last: bytes, *, close: bool = True) -> None:
        """Write the replies queued so far and ``last`` in one call; then close, if asked."""
        out = self._out
        out.append(last)
        self.transport.write(b"".join(out))
        out.clear()
        if close:
            self.transport.close()

    # -- timers -----------------------------------------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Close connections that are idle too long or send their request too slowly."""
        state = self._state
        limits = self.server.limits
        if state == IDLE:
            if now - self._last > limits.keepalive_timeout:
                log.debug(
                    "%s: closing an idle keep-alive connection",
                    self.client[0] if self.client else "-",
                )
                self.transport.close()
        elif state == HEAD:
            if now - self._started > limits.header_timeout:
                self._fail(408, "Request Timeout: request head too slow")
        elif state == BODY and now - self._last > limits.header_timeout:
            self._fail(408, "Request Timeout: request body stalled")

    def shutdown(self) -> None:
        """Server shutdown: close now if idle, else after the current reply."""
        if self._state == IDLE and not self._out and self._waiting is None:
            self.transport.close()
        else:
            self._close_after = True


@functools.lru_cache(maxsize=16)
def _origin_policy(allowed: tuple[str, ...]) -> OriginPolicy:
    """The compiled ``allowed_origins`` (built once per distinct setting)."""
    return OriginPolicy(allowed)


def _authority(url: str) -> str | None:
    """The ``host[:port]`` of an absolute-form ``http(s)://`` target, ``None`` for any other
    form. Raises :class:`_Limit` (400) for userinfo, which RFC 9110 section 4.2.4 forbids."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    cut = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority = rest[:cut]
    if "@" in authority:
        raise _Limit(400, "Bad Request: userinfo in the request target")
    return authority


def _origin_form(url: str) -> str:
    """The path and query of an absolute-form target: ``http://host/p?q`` -> ``/p?q``.

    RFC 9112 section 3.2.2: a server must accept the absolute form (proxies send it). Any other
    target (``*``, an authority) is returned as is and will not route.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return url
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    target = rest[cut:]
    return target if target.startswith("/") else "/" + target
