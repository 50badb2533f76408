"""One WebSocket connection: frames in, controller callbacks, corked frames out.

Theory of operation
-------------------
After the upgrade the transport's protocol becomes a :class:`WebSocketConnection`: a
:class:`~.connection.StreamConnection` (the controller's ordered callbacks, corking, flow
control, the slow-consumer cap, pub/sub delivery, shutdown: see :mod:`.connection`) that is also
the sans-I/O session (:class:`~plezi.protocol.connection.SessionLogic`, the methods of
:class:`~plezi.protocol.connection.WebSocketSession`), which owns the frame reader,
the state, the close handshake and close codes, pongs and the control frame rate. Incoming bytes
go to the session's reader, which calls ``on_ws_message`` here; this module adds the framing of
what is sent, the answers to the peer's close and to bad input, and the timers.

*Liveness.* Any byte from the peer stamps ``_last`` with the reaper's clock. After
``ping_interval`` of silence the reaper sends a ping; no byte within ``ping_timeout`` -> close 1011
and abort. While reading is paused by us (back-pressure, or a backlog behind an async callback),
the peer cannot answer; then the bytes it reads from our queue count as its sign of life.

*Fair turns.* The reader spends at most about ``TURN_SECONDS`` on one read (it looks at the clock
every few KiB, so a read of a few frames never does); past that it keeps the rest, reading pauses
and the rest is parsed in a later loop iteration (``_next_turn``), so a client that sends
thousands of tiny frames in one read cannot hold the process while the others wait. Frames keep
their order.

*Floods.* More than ``MAX_CONTROL_FRAMES`` pings and pongs within a second fail the connection
with 1008 (policy violation; the session counts them), as do too many empty fragments in one
message (the reader's ``MAX_EMPTY_FRAGMENTS``). So the pongs of a client that pings without
reading are bounded by that rate, then by back-pressure (reading pauses past
``write_high_water``) and the outgoing cap.

*Compression.* With ``permessage-deflate`` agreed in the handshake (``server/http.py`` asks
``protocol/handshake.py``), the session's reader inflates compressed messages; ``send`` and
``queue_message`` compress each message on its own when the ``compression`` setting is "on"
(one flag read for a connection without it); published messages arrive already compressed,
once for all subscribers (``deflate_broadcasts``: pub/sub puts this connection with the
compressing subscribers). See ``docs/compression.md``.

*Closing.* The session's ``state`` is OPEN, then CLOSING once a close frame was queued or the
transport was told to close (the session stamps when; the reaper aborts after ``close_timeout``),
then CLOSED in ``connection_lost``. The peer's close, or a protocol error, is answered (by the
session) once the controller's pending async callbacks have run, so their replies go out first;
then the transport closes. Nothing is written once the transport is closing. Once ``on_close`` has
run, ``_release`` breaks the reference cycles (connection <-> reader, connection <-> controller),
so a closed connection is freed by reference counting, without waiting for the cyclic garbage
collector; a controller the application keeps still answers ``write`` with ``False``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from ..compiled import optional_attr
from ..errors import report_error
from ..protocol.close import CloseCode
from ..protocol.connection import (
    CLOSED,
    CLOSING,
    MAX_CONTROL_FRAMES,
    OPEN,
    SESSION_SLOTS,
    SessionLogic,
)
from ..protocol.deflate import DeflateParams
from ..protocol.frames import binary_frame, ping_frame, text_frame
from ..protocol.reader import TURN_SECONDS
from .connection import BACKLOG, OUTBOX, PROCESS_TOKEN, TURN, WRITES, StreamConnection

if TYPE_CHECKING:
    from .state import ServerState
    from .types import Prepared, RouteInfo

__all__ = [
    "CLOSED",
    "CLOSING",
    "MAX_CONTROL_FRAMES",
    "OPEN",
    "PROCESS_TOKEN",
    "WebSocketConnection",
]

log: Final = logging.getLogger("plezi")


@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketConnection(StreamConnection, SessionLogic):
    """The server side of one WebSocket connection (see the module docstring)."""

    __slots__ = (
        *SESSION_SLOTS,
        "_deflate_sends",
        "_msg_async",
        "_msg_function",
        "_on_message",
        "_ping_at",
        "deflate_broadcasts",
    )

    kind = "WebSocket"

    def __init__(
        self,
        server: ServerState,
        transport: asyncio.Transport,
        handler: Any,
        route: RouteInfo,
        deflate: DeflateParams | None = None,
    ) -> None:
        StreamConnection.__init__(self, server, transport, handler, route)
        self._init_session(server.limits.max_message_size, True, TURN_SECONDS, deflate)
        # permessage-deflate (docs/compression.md): published messages come compressed once for
        # all such subscribers (pub/sub reads ``deflate_broadcasts`` when this connection
        # subscribes); its own writes are compressed one by one when the setting is "on".
        self.deflate_broadcasts = deflate is not None and deflate.shares_frames
        self._deflate_sends = (
            deflate is not None and deflate.can_compress and server.config.compression == "on"
        )
        self._ping_at = 0.0
        # PERF: looked up once; a message costs one Python call into the user's method.
        # MEMORY: a method of the controller's class is kept as its function, called with the
        # controller, rather than as a bound method per connection (64 bytes each).
        on_message = optional_attr(handler, "on_message", None)
        self._msg_function = type(on_message) is MethodType and on_message.__self__ is handler
        self._on_message: Callable[..., Any] | None = (
            on_message.__func__ if self._msg_function else on_message
        )
        self._msg_async = "on_message" in route.async_names

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last = self.server.now
        self._in_feed = True
        try:
            more = self.reader.feed(data)
        finally:
            self._in_feed = False
        pending = OUTBOX.pending
        if pending is not None:  # what this read published goes out with this read's replies
            pending()
        if self._out is not None:
            self._flush_replies()
        if more:
            self._yield_turn()

    def _flush_replies(self) -> None:
        """What a read queued: at the end of this loop iteration, in the batch of every
        connection that replied (one ``io_uring_enter`` for them all, see ``SendBatch``), or
        now through the transport when this connection cannot join a batch or is likely to
        be alone in it (``Flusher.defer_reply``)."""
        if self._fd != -1:
            flusher = self.server.flusher
            if flusher.defer_reply():
                flusher.mark(self)
                return
        self.flush()

    def _yield_turn(self) -> None:
        """The reader used up its turn: pause reading and parse the rest in a later loop
        iteration, after the other connections' events (see "Fair turns")."""
        if self.state == CLOSED:
            return
        self._pause_reading(TURN)
        asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Go on parsing what the last turn left; resume reading once it is all parsed (unless
        reading is paused for another reason: back-pressure, a backlog of async callbacks)."""
        if self.state == CLOSED:
            return
        self._in_feed = True
        try:
            more = self.reader.feed(b"")
        finally:
            self._in_feed = False
        pending = OUTBOX.pending
        if pending is not None:
            pending()
        if self._out is not None:
            self._flush_replies()
        if more:
            self._yield_turn()
        else:
            self._resume_reading(TURN)

    def _release(self) -> None:
        """Also break the cycle through the reader (see the module docstring)."""
        self.reader.release()
        self._on_message = None
        StreamConnection._release(self)

    # -- writing ----------------------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Queue one message: ``str`` as text, bytes-like as binary. ``False`` once closing.

        Any other type raises ``TypeError`` (nothing is sent, the connection stays open)."""
        if self.state != OPEN:
            return False
        if self._deflate_sends:
            if not isinstance(data, str | bytes | bytearray | memoryview):
                _frame_of(data)  # the TypeError
            self.queue_frame(self.compressed_frame(data))
            return True
        # PERF: exact type checks first; str is by far the most common payload, then bytes.
        if type(data) is str:
            frame = text_frame(data)
        elif type(data) is bytes:
            frame = binary_frame(data)
        else:
            frame = _frame_of(data)
        self._sent += 1
        self.queue_frame(frame)
        return True

    def queue_message(self, message: Prepared) -> None:
        """Queue a message sent to this connection alone (``write_to``)."""
        if self._deflate_sends:
            self.queue_frame(self.compressed_frame(message.value))
            return
        self.queue_frame(message.frame())

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (the connection closes when the client answers or after
        ``close_timeout``)."""
        self.send_close(code, reason, self.server.now)

    # -- timers (called by the server's reaper) ---------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Ping an idle peer, give up on a silent one, end an unanswered closing handshake."""
        limits = self.server.limits
        if self.state == CLOSING:
            if self.close_expired(now, limits.close_timeout):
                self.abort()
            return
        if self.state != OPEN or not limits.ping_interval:
            return
        if self._paused_for & (WRITES | BACKLOG):
            self._check_progress(now)
        if self._ping_at:
            # ``_last`` is stamped with the reaper's clock, so a pong that arrived during the
            # tick that sent the ping carries the same time as ``_ping_at``: hence ``>=``.
            if self._last >= self._ping_at:
                self._ping_at = 0.0
            elif now - self._ping_at > limits.ping_timeout:
                log.info(
                    "WebSocket %s: no answer to ping in %.1fs; closing",
                    self.id,
                    limits.ping_timeout,
                )
                self.close(CloseCode.INTERNAL_ERROR, "ping timeout")
                self.flush()
                self.abort()
        elif now - self._last >= limits.ping_interval:
            self._ping_at = now
            self.queue_frame(ping_frame())

    def _check_progress(self, now: float) -> None:
        """Reading is paused by us, so the peer cannot show it is alive by sending (a pong would
        wait unread): count its reading of what we queued as a sign of life instead, and a
        backlog of our own async callbacks as no fault of its."""
        if not self._write_paused:
            self._last = now
            return
        drained = self._flushed - self.transport.get_write_buffer_size()
        if drained > self._drained:
            self._drained = drained
            self._last = now

    # -- sans-I/O reader callbacks ----------------------------------------------------------

    def on_ws_message(self, data: str | bytes) -> None:
        self._received += 1
        cb = self._on_message
        if cb is None or self.state == CLOSED:
            return
        if self._queue is not None:
            self._enqueue(self._bound_on_message(cb), data, self._msg_async)
        elif self._msg_async:
            self._start_async(self._bound_on_message(cb)(data), "on_message")
        else:
            try:
                # PERF: the common path calls the function with the controller: no bound method.
                result = cb(self.handler, data) if self._msg_function else cb(data)
            except Exception as exc:  # user code must not take the server down
                log.exception("error in %s.on_message", type(self.handler).__name__)
                report_error(exc)
                return
            # PERF: one comparison for a plain ``def``; a sync wrapper around an ``async def``
            # (a decorator) returns an awaitable, which is awaited like a declared one.
            if result is not None and inspect.isawaitable(result):
                self._start_async(result, "on_message")

    def _bound_on_message(self, cb: Callable[..., Any]) -> Callable[..., Any]:
        """The user's ``on_message`` as a callable of the message alone, for the paths that
        keep it for later (a queued message, an async one)."""
        return MethodType(cb, self.handler) if self._msg_function else cb

    def peer_closed(self, code: int | None) -> None:
        # Messages read before the close frame may still be in the hands of async callbacks:
        # the close is answered after them, so that their replies are not lost.
        self._enqueue_or_run(self._answer_close, code, False)

    def protocol_error(self, code: int, reason: str) -> None:
        log.info("WebSocket %s: %s; closing with %d", self.id, reason, code)
        self._enqueue_or_run(self._answer_close, code, False)

    def _answer_close(self, code: int | None) -> None:
        """The session's answer (echoing the peer's code, as RFC 6455 section 5.5.1 asks, or
        failing with a protocol error's), after what pub/sub published; then end."""
        pending = OUTBOX.pending
        if pending is not None:
            pending()
        self.answer_close(code, self.server.now)
        self._end()


def _frame_of(data: object) -> bytes:
    """The frame for anything but an exact ``str``: a ``str`` subclass is text, bytes-like is
    binary, anything else is a ``TypeError`` for the caller."""
    if isinstance(data, str):
        return text_frame(data)
    if isinstance(data, bytes | bytearray | memoryview):
        return binary_frame(data)
    raise TypeError(f"write() takes str or bytes-like data, not {type(data).__name__}")
