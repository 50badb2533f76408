"""HTTP/1.1 connections: httptools parsing, pipelining, limits, the switch to WebSocket or SSE.

Theory of operation
-------------------
One :class:`HttpProtocol` per TCP connection. httptools calls ``on_*`` as bytes arrive; a complete
request goes to :meth:`plezi.web.app.App.handle`. Sync controllers answer inside the parser
callback and the replies of one ``data_received`` call leave in one ``transport.write`` (pipelined
requests get their answers in one packet). The application answers with data; :mod:`.h1` renders
it to HTTP/1.1 here, with the request's ``keep_alive`` and ``HEAD``.

When a reply is a coroutine (an ``async`` controller method), ``_waiting`` becomes a queue: later
pipelined requests wait there (and reading pauses, so a client cannot queue without bound) and
are answered in order once the coroutine is done. Whatever else must come after those replies
waits too: a WebSocket upgrade (``_upgrade_rest``) or the error answering a malformed request
(``_deferred``). Replies therefore always leave in request order.

An SSE request the application accepts (an :class:`~plezi.http.response.Accept` with ``sse``) is
the last one read too: its ``200`` head is written after the replies before it, the transport goes
to an :class:`~.sse.SseConnection`, and parsing stops there (``_Switched`` is raised out of the
parser callback; requests pipelined behind it are dropped, unanswered).

*Flow control and fair turns.* A connection's replies go to the transport, whose buffer past
``Limits.write_high_water`` calls ``pause_writing``: reading stops until the client has read
them (``resume_writing``), as for WebSockets. Each connection also gets a bounded amount of
work per loop turn: every reply counts its size plus ``_REQUEST_WORK``, and once a turn's work
passes ``_TURN_WORK`` the next requests wait in ``_waiting`` (reading paused) and are answered,
in order, in later turns (``loop.call_soon``); a read larger than ``_SLICE`` is parsed a slice
at a time, the rest kept in ``_rest`` until the requests parsed so far are answered. So a client
pipelining thousands of requests gets them answered at full speed, but one turn at a time, and
its unread replies never hold more than about ``write_high_water`` plus one turn's replies.
Each read starts a turn (the counter is set to 0: one store per read, and a client sending one
request per read never waits); a read that passes the budget pauses reading, which also ends
libuv's loop of reads on that socket for this iteration. A large file
(:class:`~plezi.http.static.FileReply`) is written a chunk at a time as the transport drains
(``_pump``), and the requests after it wait for it.

A request that asks to close (``Connection: close``, HTTP/1.0 without keep-alive) is the last
one read (``_no_more``); the connection closes once it is answered (``_close_after``), and bytes
after it are ignored (RFC 9112 section 9.6).

``_state`` drives the timeouts the server's reaper enforces: IDLE (waiting for a request:
keep-alive timeout, counted from the last reply or read), HEAD (reading the request head:
slowloris timeout, 408), BODY (reading the body: no byte for ``header_timeout`` -> 408, and
after ``header_timeout`` from the request's first byte the body must average ``min_body_rate``
bytes a second -> 408), BUSY (a handler is running: no timeout). In any state, a client that
reads none of our replies for ``keepalive_timeout`` while we wait for it to (``pause_writing``)
is cut.

Request bodies are kept in memory, so their total across connections is bounded by
``Limits.max_body_buffer``: a ``Content-Length`` is reserved when the head arrives (503 before
the body is sent if it does not fit), a chunked body as it arrives; released when the request
is handed to the application or the connection ends.

Repeated header names are collected in ``_multi`` and joined once, when the head (or the
trailers) is complete: joining them one at a time costs time quadratic in their number.

When the connection ends (or is handed over to a WebSocket or an event stream), the parser is
dropped: it holds our bound methods, and that cycle would keep the connection and its buffers
(a whole request body) alive until the cyclic garbage collector ran.

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
import logging
import re
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import httptools

from ..http.request import Request
from ..http.response import Accept, Outcome, Reply, unavailable
from ..http.static import FileReply
from ..protocol.handshake import handshake_response, is_upgrade_request, negotiate_extensions
from .connection import StreamConnection
from .h1 import error_bytes, render, render_text
from .limits import connection_cap
from .sse import SseConnection, response_head
from .websocket import WebSocketConnection

if TYPE_CHECKING:
    from .state import ServerState

__all__ = ["HttpProtocol"]

log: Final = logging.getLogger("plezi")
access_log: Final = logging.getLogger("plezi.access")

IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2
BUSY: Final = 3
#: A connection's work per loop turn (see the module docstring): each reply counts its size
#: plus ``_REQUEST_WORK``, so a turn answers about 250 small requests (2 to 3 ms), or up to
#: 64 KiB of replies, before the other connections get theirs.
_TURN_WORK: Final = 64 * 1024
_REQUEST_WORK: Final = 128
#: Reads larger than this are parsed a slice at a time (a slice holds at most a few hundred
#: requests, the most that can wait parsed but unanswered).
_SLICE: Final = 16 * 1024
#: A large file is written this much at a time, at most ``_FILE_TURN`` bytes per loop turn.
_FILE_CHUNK: Final = 64 * 1024
_FILE_TURN: Final = 256 * 1024
#: The standard phrases an error's body carries (``docs/security.md``: nothing else leaks).
_PHRASES: Final = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
#: What ``App.handle`` returns when nothing is awaited (PERF: a tuple built once, not a union
#: built by ``|`` on every upgrade).
_SYNC_OUTCOMES: Final = (bytes, Reply, Accept)
#: Framing bytes every chunk may take on top of the allowance (see the module docstring): its
#: two CRLFs and a size of up to 12 hex digits, so that even 1-byte chunks always pass.
_CHUNK_FRAMING: Final = 16
#: The bytes of every head that no callback reports: the shortest method (3), the request line's
#: two spaces, ``HTTP/1.1`` and CRLF, and the empty line that ends the head. The callbacks'
#: count starts here, so that it stays a lower bound of the head's size and is never more than
#: the method's extra letters below it (it was 17 bytes below, and a head over
#: ``max_header_size`` by up to that was let through).
_HEAD_FIXED: Final = 3 + 1 + 1 + 8 + 2 + 2
#: The bytes a chunk size line is looked for in (``_chunk_too_large``): 48 hex digits or
#: more, or long extensions, are left to the body's own count.
_SIZE_LINE: Final = 64
#: Method names as ``str`` (PERF: no decode per request for the usual ones).
_METHODS: Final[dict[bytes, str]] = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
#: Lower-cased header names by their raw bytes, filled as they are seen (bounded: a client
#: sending random names only makes the cache stop growing).
_HEADER_NAMES: Final[dict[bytes, str]] = {}
_HEADER_NAMES_MAX: Final = 512
#: Header values shared by the requests that long-lived connections keep (see
#: ``share_header_values``). Bounded by emptying it when full: a client sending random values
#: only makes it refill.
_HEADER_VALUES: Final[dict[str, str]] = {}
_HEADER_VALUES_MAX: Final = 1024
_HEADER_VALUE_MAX: Final = 256
_UNIQUE_VALUES: Final = frozenset(("sec-websocket-key", "cookie", "authorization"))
#: A valid ``Host`` value (RFC 9110 section 7.2): an IP literal or a reg-name, then a port
#: (its range is checked apart: see ``_check_host``).
_HOST: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::([0-9]*))?")
#: ``Host`` values found valid (PERF: every new connection names the same few hosts; the
#: regular expression ran once per connection). Bounded like _HEADER_VALUES.
_VALID_HOSTS: Final[dict[str, str]] = {}
_VALID_HOSTS_MAX: Final = 256


def _remember(cache: dict[str, str], value: str, limit: int) -> None:
    """Keep ``value`` in ``cache`` (a bounded cache of strings by themselves), emptying it first
    when it holds ``limit``: a client sending ever new values only makes it refill, where
    evicting one by one would cost more on every miss than the few misses after a reset."""
    if len(cache) >= limit:
        cache.clear()
    cache[value] = value


def share_header_values(headers: dict[str, str]) -> None:
    """Replace the values of ``headers`` by equal strings shared with earlier requests.

    MEMORY: a WebSocket or SSE connection keeps its request, headers included, for as long as
    it lives, and most values (``Host``, ``Upgrade``, ``User-Agent``, ``Origin``...) are the
    same on every connection: one string each for all, not one per connection (~60 bytes and
    more per header). Done once per long-lived connection, never per plain request (whose
    strings are freed with it). Values longer than ``_HEADER_VALUE_MAX`` and those unique to a
    request are left alone.
    """
    for key, value in headers.items():
        if len(value) > _HEADER_VALUE_MAX or key in _UNIQUE_VALUES:
            continue
        shared = _HEADER_VALUES.get(value)
        if shared is None:
            _remember(_HEADER_VALUES, value, _HEADER_VALUES_MAX)
        elif shared is not value:
            headers[key] = shared  # (a value replaced: the dict's size does not change)


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
        "__weakref__",
        "_async",
        "_body",
        "_body_size",
        "_chunk_at",
        "_chunk_tail",
        "_chunks",
        "_close_after",
        "_completed",
        "_deferred",
        "_file",
        "_framing",
        "_head_raw",
        "_head_size",
        "_headers",
        "_host",
        "_last",
        "_multi",
        "_no_more",
        "_out",
        "_parser",
        "_paused",
        "_reserved",
        "_rest",
        "_scheduled",
        "_started",
        "_state",
        "_tail",
        "_upgrade",
        "_upgrade_rest",
        "_url",
        "_version",
        "_waiting",
        "_work",
        "_write_paused",
        "client",
        "server",
        "transport",
    )

    def __init__(self, server: ServerState) -> None:
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
        self._head_size = _HEAD_FIXED
        self._head_raw = 0
        #: Chunks of the current body, and the non-data bytes seen in reads wholly inside it.
        self._chunks = 0
        self._framing = 0
        #: The body size when the open chunk's size line was read (-1: no chunk open), and the
        #: last bytes of the previous read of a chunked body (see ``_chunk_too_large``).
        self._chunk_at = -1
        self._chunk_tail = b""
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
        #: This turn's work (see the module docstring), and whether a next turn is scheduled.
        self._work = 0
        self._scheduled = False
        #: The transport's buffer is past ``write_high_water`` (the client is not reading).
        self._write_paused = False
        #: An ``async`` reply is being awaited; a large file is being sent.
        self._async = False
        self._file: FileReply | None = None
        #: Bytes read but not parsed yet (a large read, cut short at the end of a turn), and
        #: while a read is parsed slice by slice, what follows the current slice.
        self._rest: bytes = b""
        self._tail: bytes = b""
        #: Repeated header names: every value, joined when the head is complete.
        self._multi: dict[str, list[str]] | None = None
        #: Bytes of ``Limits.max_body_buffer`` this connection holds for the current body.
        self._reserved = 0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[:2] if isinstance(peer, tuple) else None
        server = self.server
        if server.shutting_down:  # a TLS handshake that ended after the shutdown began
            transport.close()
            return
        if len(server.connections) >= connection_cap(server.limits.max_connections):
            self._refuse_over_capacity()
            return
        server.connections.add(self)
        server.quick.add(self)
        # Past this, ``pause_writing``: replies wait and reading stops (see the docstring).
        self.transport.set_write_buffer_limits(high=server.limits.write_high_water)

    def _refuse_over_capacity(self) -> None:
        """503 and close: the server holds ``max_connections`` already (logged once a second
        at most, so that a flood of connections cannot flood the log too)."""
        self._no_more = True
        self.server.stats.refuse("capacity")
        self.server.throttle("capacity").log(
            log,
            logging.WARNING,
            "%s: refused with 503: %d connections open (max_connections)",
            self._peer(),
            len(self.server.connections),
        )
        self._write_and_close(error_bytes(503, "Service Unavailable"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.quick.discard(self)
        self._state = IDLE
        self._waiting = None
        self._release_body()
        self._drop_parser()
        self._body = []
        self._out.clear()
        self._rest = self._tail = b""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def _drop_parser(self) -> None:
        """Break the cycle between us and the parser (it holds our bound methods), so that
        the connection's memory returns as soon as the last reference goes."""
        self._parser = None  # type: ignore[assignment]

    def _peer(self) -> str:
        """The client's address as log lines show it (``-`` when the transport has none)."""
        return self.client[0] if self.client else "-"

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last = self.server.now  # the client reads: it is alive
        if self._waiting is not None:
            self._drain()
        else:
            self._resume_input()

    def data_received(self, data: bytes | memoryview) -> None:
        # (a memoryview: a slice of a long read, from _feed_slices)
        if len(data) > _SLICE:  # PERF: one comparison; a single request is never that long
            self._feed_slices(data)
            return
        self._work = 0  # a read starts a turn (see the module docstring)
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
            rest, self._tail = bytes(data[exc.args[0] :]) + self._tail, b""
            self._upgrade_ready(rest)
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
            if self._chunk_at >= 0 and self._chunk_too_large(data):
                return
            if self._state == BODY and "transfer-encoding" in self._headers:
                self._chunk_tail = bytes(data[-_SIZE_LINE:])
        self._flush()

    def _chunk_too_large(self, data: bytes | memoryview) -> bool:
        """Refuse (413) a chunk whose announced size alone passes ``max_body_size``, as soon
        as its size line is read, rather than once that much data has come.

        httptools does not tell the size. But a chunk still open at the end of a read whose
        size line came in this read ends this read with its data: the line ends where that
        data starts, ``len(data) - d`` (``d``: the data received since ``on_chunk_header``). A
        line that began in the read before is completed with that read's last bytes; a line
        that is longer (long extensions) or a header that came in a read that also completed
        an earlier request is left to the ``max_body_size`` count of the data itself. A chunk
        whose line came in an earlier read gives a position at or before 0: ignored."""
        at, self._chunk_at = self._chunk_at, -1
        end = len(data) - (self._body_size - at)
        if end <= 0:
            return False
        if end < _SIZE_LINE:  # the line may have begun in the read before: joined to it
            line = self._chunk_tail + bytes(data[:end])
        else:
            line = bytes(data[end - _SIZE_LINE : end])
        self._chunk_tail = b""
        if not line.endswith(b"\r\n"):
            return False
        start = line.rfind(b"\r\n", 0, len(line) - 2)
        if start < 0:
            return False
        digits = line[start + 2 : -2].partition(b";")[0].strip(b" \t")
        try:
            size = int(digits, 16)
        except ValueError:
            return False
        if at + size <= self.server.limits.max_body_size:
            return False
        self._fail(413, f"Content Too Large: a chunk of {size} bytes announced")
        return True

    def _feed_slices(self, data: bytes | memoryview) -> None:
        """Parse a large read a slice at a time; stop (keeping the rest in ``_rest``, reading
        paused) when this turn's work is done or replies must wait (see the module docstring).
        """
        view = memoryview(data)
        start = 0
        end = len(data)
        work = 0  # this turn's, over the slices (each one's call counts its own)
        try:
            while True:
                if self._no_more or self.transport.is_closing():
                    return
                if self._waiting is not None or self._write_paused or work > _TURN_WORK:
                    if start < end:
                        self._rest = bytes(view[start:])  # at most one read
                    self._pause()
                    if self._waiting is None and not self._write_paused:
                        self._schedule()  # nothing else would resume this connection
                    return
                if start >= end:
                    self._resume()
                    return
                piece = view[start : start + _SLICE]
                start += _SLICE
                self._tail = bytes(view[start:]) if start < end else b""
                self.data_received(piece)
                work += self._work
        finally:
            self._tail = b""

    def _resume_input(self) -> None:
        """Nothing is waiting to be answered: parse what a turn left over, or read again
        (not after the last request: an upgrade being decided keeps the bytes behind it)."""
        if self._write_paused or self._no_more or self.transport.is_closing():
            return
        rest, self._rest = self._rest, b""
        if rest:
            self._feed_slices(rest)
        else:
            self._resume()

    def _schedule(self) -> None:
        """Continue in a later loop turn (once, however often asked)."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self._scheduled = False
        self._work = 0
        if self._waiting is not None:
            self._drain()
        else:
            self._resume_input()

    def _hold(self, request: Request) -> None:
        """Queue a request whose turn has not come (its answer must wait for those before it,
        or for the next loop turn); reading pauses meanwhile."""
        if self._waiting is None:
            self._waiting = deque()
            self._schedule()
        self._waiting.append(request)
        self._pause()  # PERF/safety: one read's worth of requests queued at most

    def _drain(self) -> None:
        """Answer the queued requests in order, one turn's work at a time; what waited for
        them (see ``_drained``) follows. Whatever else is in flight (an ``async`` reply, a file
        being sent, a client that does not read) calls this again when it is done."""
        if self._async or self._write_paused or self.transport.is_closing():
            return
        if self._file is not None:
            self._pump()
            return
        waiting = self._waiting
        if waiting is None:
            return
        handle = self.server.app.handle
        while waiting and not self._close_after:
            if self._work > _TURN_WORK:
                self._flush()
                self._schedule()
                return
            request = waiting.popleft()
            reply = handle(request)
            if type(reply) is bytes or type(reply) is Reply:
                self._answer(request, reply)
            elif not self._answer_other(request, reply):
                self._flush()
                return  # an async reply, a file or an event stream: it goes on from there
        self._flush()
        self._waiting = None
        self._drained()

    def _answer_other(self, request: Request, reply: Any) -> bool:
        """Answer with a file, an :class:`Accept`, or a coroutine (an ``async`` controller);
        ``False`` when the answer is not complete yet (an ``async`` reply, a file being sent)
        or the connection is an event stream now. (A ``bytes`` or :class:`Reply` answer goes
        straight to :meth:`_answer`.)"""
        if isinstance(reply, FileReply):
            self._answer(request, reply)
            if request.method == "HEAD":
                reply.close()
                return True
            self._file = reply
            self._state = BUSY
            if self._waiting is None:
                self._waiting = deque()
            self._schedule()  # sent from the next turn (never from inside a parser callback)
            return False
        if isinstance(reply, Accept):
            self._answer(request, reply)
            return not reply.sse
        if self._waiting is None:
            self._waiting = deque()
        self._async = True
        self.server.spawn(self._handle_async(request, reply))
        return False

    def _pump(self) -> None:
        """Write the file being sent, a chunk at a time, while the transport takes it (at most
        ``_FILE_TURN`` bytes a turn); then answer the requests that waited for it."""
        file = self._file
        assert file is not None
        transport = self.transport
        self._flush()  # its head, and the replies before it
        sent = 0
        while not self._write_paused:
            if transport.is_closing():
                return
            if sent >= _FILE_TURN:
                self._schedule()
                return
            chunk = file.read(_FILE_CHUNK)
            if not chunk:
                break
            transport.write(chunk)
            sent += len(chunk)
        else:
            return  # resume_writing goes on
        self._file = None
        file.close()
        self._last = self.server.now
        if self._state == BUSY:
            self._state = IDLE
        if file.size > 0:  # the file shrank meanwhile: the response cannot be completed
            log.warning("a file shrank while it was being sent; connection closed")
            transport.abort()
            return
        self._drain()

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
        self._head_size = _HEAD_FIXED
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
            # Collected, and joined once at the end of the head (or of the trailers).
            multi = self._multi
            if multi is None:
                multi = self._multi = {}
            values = multi.get(key)
            if values is None:
                multi[key] = [headers[key], text]
            else:
                values.append(text)
            return
        headers[key] = text

    def _join_repeated(self) -> None:
        """Join the values of the repeated header names (RFC 9110 section 5.3: with commas;
        ``Cookie`` with semicolons, RFC 6265 section 5.4)."""
        multi, self._multi = self._multi, None
        assert multi is not None
        headers = self._headers
        for key, values in multi.items():
            headers[key] = ("; " if key == "cookie" else ", ").join(values)

    def on_headers_complete(self) -> None:
        self._state = BODY
        if self._multi is not None:
            self._join_repeated()
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
        if length is not None and length.isdigit() and length != "0":
            # Before the client sends the body: too large, or more than memory has room for.
            size = int(length)
            if size > self.server.limits.max_body_size:
                raise _Limit(413, "Content Too Large")
            self._reserve(size)
        coding = headers.get("transfer-encoding")
        if coding is not None:
            self._chunk_tail = b""
            if version == "1.0":
                # RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
                # framing (an HTTP/1.0 proxy in front would not have read it as chunked).
                raise _Limit(400, "Bad Request: Transfer-Encoding in an HTTP/1.0 request")
            if coding.strip().lower() != "chunked":
                # RFC 9112 section 6: without "chunked" last the body has no reliable length
                # (400); httptools accepts "gzip, chunked" but hands over the body still
                # gzipped, and a coding the server does not decode is refused (501).
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
        if value not in _VALID_HOSTS:
            match = _HOST.fullmatch(value)
            if match is None:
                raise _Limit(400, "Bad Request: invalid Host header")
            port = match.group(1)
            if port and (len(port) > 5 or int(port) > 65535):
                raise _Limit(400, "Bad Request: invalid port in the Host header")
            _remember(_VALID_HOSTS, value, _VALID_HOSTS_MAX)
        headers["host"] = value
        if value == host and self._url[:1] == b"/":
            self._host = value

    def on_chunk_header(self) -> None:
        self._chunks += 1
        self._chunk_at = self._body_size  # (see ``_chunk_too_large``)

    def on_chunk_complete(self) -> None:
        self._chunk_at = -1
        # (the last chunk completes after the trailers, whose repeated names are joined here)
        if self._multi is not None:
            self._join_repeated()

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._reserved:  # a chunked body: reserved as it arrives
            if self._body_size > self.server.limits.max_body_size:
                raise _Limit(413, "Content Too Large")
            self._reserve(self._body_size - self._reserved)
        self._body.append(body)

    def _reserve(self, size: int) -> None:
        """Count ``size`` more body bytes against ``Limits.max_body_buffer`` (503 past it)."""
        server = self.server
        limits = server.limits
        if server.body_buffered + size > max(limits.max_body_buffer, limits.max_body_size):
            raise _Limit(
                503,
                f"Service Unavailable: {server.body_buffered} bytes of request bodies in "
                f"memory already, {size} more do not fit (max_body_buffer)",
            )
        server.body_buffered += size
        self._reserved += size

    def _release_body(self) -> None:
        """Give this connection's share of ``max_body_buffer`` back."""
        if self._reserved:
            self.server.body_buffered -= self._reserved
            self._reserved = 0

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
        if self._waiting is not None or self._work > _TURN_WORK:
            self._hold(request)  # after the replies owed, or in the next turn
            return
        # PERF: `_handle` inlined: this is every request's path.
        reply = self.server.app.handle(request)
        # `type(...) is bytes` first: the hello-world reply costs one identity check.
        if type(reply) is bytes or type(reply) is Reply:
            self._answer(request, reply)
        elif not self._answer_other(request, reply) and isinstance(reply, Accept):
            raise _Switched  # what the client sends after an SSE request is not parsed

    # -- requests ---------------------------------------------------------------------------

    def _request(self) -> Request:
        url = self._url.decode("latin-1")
        target = url if url[:1] == "/" else _origin_form(url)
        if "#" in target:
            target = target.partition("#")[0]
        path, _, query = target.partition("?")
        body = self._body
        if body:
            # The chunks go with the request (the joined body is the application's now).
            self._body = []
            self._release_body()
            data = body[0] if len(body) == 1 else b"".join(body)
        else:
            data = b""
        parser = self._parser
        method = parser.get_method()
        return Request(  # PERF: by position (see Request)
            _METHODS.get(method) or method.decode("ascii"),
            url,
            path,
            query,
            self._headers,
            data,
            self._version,
            self.client,
            self.server.scheme,
            parser.should_keep_alive() and not self.server.shutting_down,
        )

    async def _handle_async(self, request: Request, pending: Any) -> None:
        """Await an ``async`` reply, then answer the requests queued behind it, in order."""
        reply = await pending
        self._async = False
        if self.transport.is_closing():
            if isinstance(reply, FileReply):
                reply.close()
            return
        if type(reply) is bytes or type(reply) is Reply:
            self._answer(request, reply)
        elif not self._answer_other(request, reply):
            self._flush()
            return  # (the requests queued behind an event stream are dropped: see above)
        self._flush()
        self._drain()

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
            self._resume_input()

    def _answer(self, request: Request, reply: Outcome) -> None:
        if type(reply) is bytes:
            # PERF: the hello-world path (a head built once a second).
            data = render_text(reply, request.keep_alive, request.method == "HEAD")
        elif type(reply) is Reply:
            data = render(reply, request.keep_alive, request.method == "HEAD")
        elif isinstance(reply, FileReply):  # the head: the file follows (`_pump`)
            data = render(reply, request.keep_alive, True, reply.size)
        else:
            assert isinstance(reply, Accept)
            if reply.sse:
                self._begin_sse(request, reply)
                return
            # An Accept for a request httptools did not flag as an upgrade: refuse, not guess.
            request.keep_alive = False
            data = error_bytes(400, "Bad Request")
        self._out.append(data)
        self._work += len(data) + _REQUEST_WORK
        if self.server.config.verbose:
            access_log.info(
                '%s "%s %s HTTP/%s" %s %d',
                self._peer(),
                request.method,
                request.url,
                request.http_version,
                data[9:12].decode(),
                len(data),
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

        ``message`` goes to the log; the peer only sees the status's standard phrase."""
        log.log(level, "%s: %d %s", self._peer(), status, message)
        self._no_more = True
        self._release_body()
        reply = error_bytes(status, _PHRASES.get(status, "Error"))
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
        if isinstance(reply, _SYNC_OUTCOMES):
            self._finish_upgrade(request, reply, rest)
            return
        self._pause()
        self.server.spawn(self._upgrade_async(request, reply, rest))

    def _upgrade_allowed(self, request: Request) -> bool:
        """What a WebSocket upgrade must satisfy before the application sees it; if it does not,
        it is refused here (with a log line) and ``False`` returned."""
        if request.http_version != "1.1":  # RFC 6455 section 4.1
            self._fail(400, "Bad Request: a WebSocket upgrade needs HTTP/1.1")
            return False
        if self.server.refuses_origin(request, self._peer()):
            self._fail(403, "Forbidden", level=logging.DEBUG)
            return False
        return True

    async def _upgrade_async(self, request: Request, pending: Any, rest: bytes) -> None:
        reply = await pending
        if not self.transport.is_closing():
            self._finish_upgrade(request, reply, rest)

    def _finish_upgrade(self, request: Request, reply: Outcome, rest: bytes) -> None:
        if not isinstance(reply, Accept):
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
        deflate = negotiate_extensions(request.headers, self.server.config.compression)
        if deflate is not None:
            headers.append(("sec-websocket-extensions", deflate.response))
        response = reply.controller._pl_response
        if response is not None:
            headers.extend(response.headers.items())
            headers.extend(("Set-Cookie", c) for c in response.cookies)
        if self.server.shutting_down:
            self.transport.write(render(unavailable(), False, False))
            self.transport.close()
            return
        try:
            handshake = handshake_response(reply.key, headers)
        except ValueError as exc:  # e.g. a CR/LF in a header pre_connect set
            log.error("cannot accept the WebSocket for %s: %s", request.path, exc)
            self.transport.write(error_bytes(500, "Internal Server Error"))
            self.transport.close()
            return
        self.transport.write(handshake)
        if self.server.config.verbose:
            self._log_switch(request, "101 WebSocket")
        share_header_values(request.headers)
        self._hand_over(WebSocketConnection, reply, rest, deflate=deflate)

    # -- Server-Sent Events -----------------------------------------------------------------

    def _begin_sse(self, request: Request, upgrade: Accept) -> None:
        """Answer an accepted SSE request: the ``200`` head after the replies before it, then
        the transport goes to an :class:`SseConnection`; nothing more is parsed."""
        self._no_more = True
        if self.server.shutting_down:
            self._write_and_close(render(unavailable(), False, False))
            return
        try:
            head = response_head(upgrade.controller)
        except ValueError as exc:  # e.g. a CR/LF in a header pre_connect set
            log.error("cannot start the event stream for %s: %s", request.path, exc)
            self._write_and_close(error_bytes(500, "Internal Server Error"))
            return
        self._write_and_close(head, close=False)
        if self.server.config.verbose:
            self._log_switch(request, "200 SSE")
        share_header_values(request.headers)
        self._hand_over(SseConnection, upgrade, b"")

    def _hand_over(
        self, kind: type[StreamConnection], upgrade: Accept, rest: bytes, **extra: Any
    ) -> None:
        """Give the transport to a ``kind`` connection (WebSocket or SSE) for ``upgrade``'s
        controller; ``rest``: bytes read past the request, for the new protocol; ``extra``:
        keywords for ``kind`` (a WebSocket's agreed extensions)."""
        self.server.connections.discard(self)
        self.server.quick.discard(self)
        self._resume()
        self._drop_parser()
        conn = kind(self.server, self.transport, upgrade.controller, upgrade.route, **extra)
        self.transport.set_protocol(conn)
        conn.start(rest)

    def _log_switch(self, request: Request, outcome: str) -> None:
        """The access log line of a request that became a WebSocket or an event stream."""
        access_log.info(
            '%s "GET %s HTTP/%s" %s',
            self._peer(),
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
        if self._write_paused:
            # Our replies wait for the client to read them; no progress for this long: cut.
            if now - self._last > limits.keepalive_timeout:
                log.info(
                    "%s: the client read none of its replies in %.0fs; connection cut",
                    self._peer(),
                    limits.keepalive_timeout,
                )
                self.transport.abort()
            return
        if state == IDLE:
            if now - self._last > limits.keepalive_timeout:
                log.debug(
                    "%s: closing an idle keep-alive connection",
                    self._peer(),
                )
                self.transport.close()
        elif state == HEAD:
            if now - self._started > limits.header_timeout:
                self._fail(408, "Request Timeout: request head too slow")
        elif state == BODY and not self._paused:
            if now - self._last > limits.header_timeout:
                self._fail(408, "Request Timeout: request body stalled")
                return
            # A minimum average rate, from the request's first byte after a grace: else one
            # byte every few seconds would hold the connection (and its slot) forever.
            elapsed = now - self._started - limits.header_timeout
            rate = limits.min_body_rate
            if rate and elapsed > 0 and self._body_size < rate * elapsed:
                self._fail(
                    408,
                    f"Request Timeout: request body too slow ({self._body_size} bytes in "
                    f"{elapsed + limits.header_timeout:.0f}s; min_body_rate is {rate}/s)",
                )

    def shutdown(self) -> None:
        """Server shutdown: close now if idle, else after the current reply."""
        if self._state == IDLE and not self._out and self._waiting is None:
            self.transport.close()
            self._rest = b""
        else:
            self._close_after = True


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
