"""One Server-Sent Events connection: a ``text/event-stream`` response that stays open.

Theory of operation
-------------------
A ``GET`` with ``Accept: text/event-stream`` to a route whose controller accepts connections (the
WebSocket rule: ``on_message`` or ``auto_dispatch``) is answered by ``pre_connect``, as a
WebSocket upgrade is (:meth:`plezi.web.app.App.handle` returns an
:class:`~plezi.http.response.Accept` with ``sse`` set). :class:`~.http.HttpProtocol` writes
:func:`response_head` (``200``, ``content-type: text/event-stream``, ``cache-control: no-cache``,
no length: the body ends when the connection does), stops parsing requests on that connection and
hands the transport to an :class:`SseConnection`.

:class:`SseConnection` is a :class:`~.connection.StreamConnection`, as a WebSocket connection is,
that frames events; everything else is shared with WebSockets: the ordered (sync or ``async``)
callbacks ``on_open``, ``on_drained``, ``on_shutdown``, ``on_close``; corked writes (one system call
per connection per loop iteration); the outgoing buffer cap and the slow-consumer policy; pub/sub
(``queue_frame`` and the fan-out's fast path append pre-framed bytes, here SSE events: the registry
keeps SSE subscribers apart and frames a published message once as an event for all of them); ``id``
and ``write_to``; graceful shutdown (``on_shutdown``, its writes delivered, then the stream ends).

*Incoming bytes.* The client cannot send anything on an event stream: bytes it sends anyway
(pipelined requests included) are read and discarded, so that its closing is still noticed
(``on_close``).

*Keep-alive.* A comment (``:``) goes out after ``ping_interval`` seconds during which the client
took no bytes from us, so that proxies do not cut a quiet stream; the HTTP idle timeout does not
apply. A client that takes nothing of what is queued for ``ping_interval + ping_timeout`` is
dropped (with a log line), as a WebSocket that does not answer a ping is.

*Text only.* An event stream is UTF-8 text: ``bytes`` written are decoded as UTF-8 (not UTF-8:
``UnicodeDecodeError`` for the caller); a binary pub/sub message that is not UTF-8 is not sent to
SSE subscribers (a log line says so).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from ..protocol.close import CloseCode
from ..protocol.connection import OPEN
from ..protocol.handshake import header_line
from ..protocol.sse import sse_comment, sse_event
from .connection import OUTBOX, StreamConnection
from .h1 import http_date

if TYPE_CHECKING:
    from .types import Prepared

__all__ = ["SseConnection", "response_head", "stream_headers"]

log: Final = logging.getLogger("plezi")

_HEAD: Final = b"HTTP/1.1 200 OK\r\n"
#: The headers every stream starts with, by name; one that ``pre_connect`` set replaces ours.
_DEFAULTS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    # nginx buffers responses unless told not to; an event stream must not wait in a buffer.
    ("x-accel-buffering", "no"),
)
_PLAIN_HEAD: Final = _HEAD + b"".join(header_line(name, value) for name, value in _DEFAULTS)
#: Never taken from ``pre_connect``: the stream has no length and ends with the connection.
_SKIP: Final = frozenset(("content-length", "transfer-encoding", "connection", "date"))
_KEEPALIVE: Final = sse_comment()


def stream_headers(controller: Any) -> list[tuple[str, str]]:
    """The headers of the ``200`` that starts an event stream, as checked pairs (names in lower
    case): ours, and the headers and cookies ``pre_connect`` set on ``self.response`` (its
    status is not used: a stream is a 200). ``ValueError`` for a header that would inject
    lines (CR, LF or NUL in it)."""
    response = controller._pl_response
    if response is None:
        return list(_DEFAULTS)
    pairs = [(name, value) for name, value in response.header_pairs() if name not in _SKIP]
    names = {name for name, _ in pairs}
    return [pair for pair in _DEFAULTS if pair[0] not in names] + pairs


def response_head(controller: Any) -> bytes:
    """The HTTP/1.1 head of :func:`stream_headers` (``ValueError`` as there)."""
    if controller._pl_response is None:
        return _PLAIN_HEAD + http_date() + b"\r\n"
    lines = [f"{name}: {value}\r\n".encode("latin-1") for name, value in stream_headers(controller)]
    return b"".join((_HEAD, http_date(), *lines, b"\r\n"))


@mypyc_attr(allow_interpreted_subclasses=True)
class SseConnection(StreamConnection):
    """The server side of one event stream (see the module docstring)."""

    __slots__ = ()

    is_sse = True
    kind = "SSE"

    def start(self, initial: bytes) -> None:
        """``on_open``, then Plezi's ``on_sse`` (the stream's own callback), when defined."""
        super().start(initial)
        if self.state == OPEN:  # not when on_open closed the stream already
            self._callback("on_sse")

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        pass  # nothing may come from an event stream's client: read and dropped

    # -- writing ----------------------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Queue ``data`` as one event (``data:`` lines). ``False`` once closing."""
        if self.state != OPEN:
            return False
        self._sent += 1
        self.queue_frame(sse_event(data if type(data) is str else _text(data)))
        return True

    def send_event(
        self,
        data: str | bytes | bytearray | memoryview,
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> bool:
        """Queue one event with a name (``event:``), an ``id:`` (what the browser sends back
        as ``Last-Event-ID`` when it reconnects) and a reconnection delay in milliseconds
        (``retry:``). ``False`` once closing; ``ValueError`` for a line break in ``event`` or
        ``id``, or a negative ``retry``."""
        if self.state != OPEN:
            return False
        text = data if type(data) is str else _text(data)
        ident = id if id is None or type(id) is str else str(id)
        self._sent += 1
        self.queue_frame(sse_event(text, event=event, id=ident, retry=retry))
        return True

    def queue_message(self, message: Prepared) -> None:
        """Queue a message sent to this connection alone (``write_to``) as an event."""
        event = message.sse_frame()
        if event is not None:
            self.queue_frame(event)

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the stream once what is queued is sent (an event stream has no closing
        handshake; ``code`` and ``reason`` are ignored)."""
        if self.state != OPEN:
            return
        pending = OUTBOX.pending
        if pending is not None:  # messages published before the close still go out
            pending()
        self._end()

    # -- timers (called by the server's reaper) ---------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Keep a quiet stream alive with a comment; drop a client that reads nothing; end an
        unfinished close."""
        limits = self.server.limits
        if self.state != OPEN:
            if self.close_expired(now, limits.close_timeout):
                self.abort()
            return
        interval = limits.ping_interval
        if not interval:
            return
        # ``_last`` here: when the client last took bytes from us (or the stream began).
        queued = self.transport.get_write_buffer_size()
        taken = self._flushed - queued
        if taken != self._drained:
            self._drained = taken
            self._last = now
        elif queued and now - self._last > interval + limits.ping_timeout:
            log.info(
                "SSE %s: the client took nothing for %.1fs; closing",
                self.id,
                now - self._last,
            )
            self.abort()
        elif not queued and now - self._last >= interval:
            self._last = now
            self.queue_frame(_KEEPALIVE)


def _text(data: object) -> str:
    """``data`` as text: a ``str`` subclass as is, bytes-like decoded as UTF-8; anything else
    is a ``TypeError``."""
    if isinstance(data, str):
        return str(data)
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data).decode()
    raise TypeError(f"write() takes str or bytes-like data, not {type(data).__name__}")
