"""One WebSocket connection: frames in, controller callbacks, corked frames out.

Theory of operation
-------------------
After the upgrade the transport's protocol becomes a :class:`WebSocketConnection`: the I/O shell
of the sans-I/O :class:`~plezi.protocol.connection.WebSocketSession`, which owns the frame reader,
the state, the close handshake and close codes, pongs and the control frame rate. Incoming bytes
go to the session's reader, which calls ``on_ws_message`` here; this module adds the transport,
the controller's ordered callbacks, corking, flow control and the timers.

*Ordering.* Sync callbacks run inline, in the ``data_received`` call: no task, no coroutine.
When an ``async`` callback runs, a single task is started for it and every later event of this
connection waits in ``_queue`` until the task has drained it; so callbacks never overlap and keep
their order. ``_queue`` is ``None`` whenever no async callback is in flight (the fast path).
A callback is async when it is declared ``async def`` or when it returns an awaitable (a sync
wrapper, such as a decorator, around an ``async def``).

*Corking.* Frames written while bytes are being parsed are collected and written in one
``transport.write`` when ``data_received`` returns; frames written from anywhere else (another
connection's callback, a timer, a thread via the loop) are collected and written once per loop
iteration by the server's flush. Either way: one system call per connection per iteration.

*Flow control.* Past ``write_high_water`` queued bytes the transport calls ``pause_writing``:
reading from the client pauses (back-pressure) and ``on_drained`` is armed. Past
``max_outgoing_buffer`` the client is a slow consumer and is disconnected, with a log line: when a
flush leaves more than that in the transport, or when a frame is queued while more than that is
already queued (our list plus the transport's buffer), so a connection never holds more than the
cap plus one message, even when one callback writes a flood without yielding. The full count is
only taken when it can exceed the cap (the transport is paused, or our own list alone is within
``write_high_water`` of the cap); the usual write costs one comparison.

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
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import report_error
from ..protocol.close import CloseCode
from ..protocol.connection import CLOSED, CLOSING, MAX_CONTROL_FRAMES, OPEN, WebSocketSession
from ..protocol.frames import binary_frame, ping_frame, text_frame
from ..protocol.reader import TURN_SECONDS

if TYPE_CHECKING:
    from .state import ServerState
    from .types import Prepared, RouteInfo

__all__ = [
    "CLOSED",
    "CLOSING",
    "MAX_CONTROL_FRAMES",
    "OPEN",
    "PENDING",
    "PROCESS_TOKEN",
    "WebSocketConnection",
    "queue_frame_many",
]

log = logging.getLogger("plezi")

#: Events queued behind a running async callback before reading from the client pauses.
_QUEUE_PAUSE = 64
_NO_ARG: Any = object()

#: Pub/sub sets ``PENDING[0]`` while published frames wait in a batch (one topic, one read):
#: it is called before anything else is queued on any connection, so order is kept.
PENDING: list[Callable[[], object] | None] = [None]

#: A per-process prefix that makes connection ids unique across processes and machines.
PROCESS_TOKEN = os.urandom(6).hex()
_counter = itertools.count(1)


class WebSocketConnection(WebSocketSession, asyncio.Protocol):
    """The server side of one WebSocket connection (see the module docstring).

    :class:`plezi.server.sse.SseConnection` shares all of it but the framing."""

    __slots__ = (
        "_check_above",
        "_cleanup",
        "_drained",
        "_dropping",
        "_flushed",
        "_in_feed",
        "_last",
        "_msg_async",
        "_on_message",
        "_ping_at",
        "_queue",
        "_read_paused",
        "_serial",
        "_write_paused",
        "handler",
        "route",
        "server",
        "transport",
    )

    #: An event stream (:mod:`.sse`) rather than a WebSocket; and what log lines call it.
    is_sse = False
    kind = "WebSocket"

    def __init__(
        self,
        server: ServerState,
        transport: asyncio.Transport,
        handler: Any,
        route: RouteInfo,
    ) -> None:
        self.server = server
        self.transport = transport
        self.handler = handler
        self.route = route
        WebSocketSession.__init__(
            self, max_message_size=server.limits.max_message_size, turn_seconds=TURN_SECONDS
        )
        limits = server.limits
        #: Past this many bytes in ``_out`` the total may exceed the cap (see the docstring).
        self._check_above = limits.max_outgoing_buffer - limits.write_high_water
        self._in_feed = False
        self._queue: deque[tuple[Callable[..., Any], Any, bool]] | None = None
        self._last = server.now
        self._ping_at = 0.0
        #: Bytes handed to the transport so far, and how many of them it had passed on to the
        #: kernel at the last reaper tick (progress of a client we stopped reading from).
        self._flushed = 0
        self._drained = 0
        self._read_paused = False
        self._write_paused = False
        self._serial = next(_counter)
        #: Functions to call when the connection is lost (pub/sub unsubscribes), or ``None``.
        self._cleanup: list[Callable[[], object]] | None = None
        #: The slow-consumer policy is "drop" and messages are being dropped right now.
        self._dropping = False
        # PERF: bound once; a message costs one Python call into the user's method.
        self._on_message: Callable[[Any], Any] | None = getattr(handler, "on_message", None)
        self._msg_async = "on_message" in route.async_names

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, initial: bytes) -> None:
        """Begin after the handshake: ``on_open``, then any bytes that came with the upgrade."""
        self.server.connections.add(self)
        self.server.websockets[self._serial] = self
        limits = self.server.limits
        self.transport.set_write_buffer_limits(high=limits.write_high_water, low=0)
        self.handler._pl_conn = self
        self._callback("on_open")
        if initial:
            self.data_received(initial)

    @property
    def id(self) -> str:
        """This connection's id, unique across processes and machines."""
        return f"{PROCESS_TOKEN}-{self._serial:x}"

    @property
    def is_open(self) -> bool:
        """Whether messages can still be sent."""
        return self.state == OPEN

    @property
    def pending(self) -> int:
        """Bytes queued for the client and not yet handed to the kernel."""
        if self.state == CLOSED:
            return self._out_size
        return self._out_size + self.transport.get_write_buffer_size()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last = self.server.now
        self._in_feed = True
        try:
            more = self.reader.feed(data)
        finally:
            self._in_feed = False
        pending = PENDING[0]
        if pending is not None:  # what this read published goes out with this read's replies
            pending()
        if self._out:
            self.flush()
        if more:
            self._yield_turn()

    def _yield_turn(self) -> None:
        """The reader used up its turn: pause reading and parse the rest in a later loop
        iteration, after the other connections' events (see "Fair turns")."""
        if self.state == CLOSED:
            return
        if not self.transport.is_closing():
            self.transport.pause_reading()
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
        pending = PENDING[0]
        if pending is not None:
            pending()
        if self._out:
            self.flush()
        if more:
            self._yield_turn()
        elif not self._read_paused and self.state != CLOSED and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        first = self.state != CLOSED
        self.connection_closed()
        self.server.connections.discard(self)
        self.server.websockets.pop(self._serial, None)
        cleanup, self._cleanup = self._cleanup, None
        for func in cleanup or ():
            try:
                func()
            except Exception:
                log.exception("error while releasing a closed connection")
        if first:
            self._callback("on_close")
        if self._queue is None:  # else ``_drain`` releases once on_close has run
            self._release()

    def _release(self) -> None:
        """Break the reference cycles of a closed connection (reader and controller callbacks
        point back at it), so that it is freed by reference counting as soon as nothing else
        holds it; the cyclic garbage collector may not run for a long time."""
        self.reader.release()
        self._on_message = None
        self.handler = _RELEASED

    def add_cleanup(self, func: Callable[[], object]) -> None:
        """Call ``func`` once the connection is lost (before ``on_close``)."""
        if self._cleanup is None:
            self._cleanup = []
        self._cleanup.append(func)

    def run_handler(self, handler: Any, message: Any) -> None:
        """Run a pub/sub ``handler`` bound to this connection, in its callback order."""
        if self.state != CLOSED:
            self._enqueue_or_run(handler.call, message, handler.is_async)

    def pause_writing(self) -> None:
        self._write_paused = True
        if not self._read_paused and self.state != CLOSED:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._dropping:
            self._dropping = False
            log.info("%s %s: the client caught up; messages flow again", self.kind, self.id)
        if self._read_paused and self._queue is None and self.state != CLOSED:
            self._read_paused = False
            self.transport.resume_reading()
        self._callback("on_drained")

    # -- writing ----------------------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Queue one message: ``str`` as text, bytes-like as binary. ``False`` once closing.

        Any other type raises ``TypeError`` (nothing is sent, the connection stays open)."""
        if self.state != OPEN:
            return False
        # PERF: exact type checks first; str is by far the most common payload, then bytes.
        if type(data) is str:
            frame = text_frame(data)
        elif type(data) is bytes:
            frame = binary_frame(data)
        else:
            frame = _frame_of(data)
        self.queue_frame(frame)
        return True

    def queue_frame(self, frame: Any, size: int | None = None) -> None:
        """Queue an already framed message (the pub/sub path: framed once, written to many);
        ``size`` is its length when ``frame`` is not bytes (an ASGI message).

        Dropped when the connection is past its outgoing buffer cap (it is then disconnected)
        or no longer open: nothing may follow our close frame."""
        if self.state != OPEN:
            return
        pending = PENDING[0]
        if pending is not None:  # frames published earlier go first
            pending()
        # PERF: the exact count (a transport call) only when the total may be over the cap:
        # unpaused, the transport holds at most ``write_high_water``.
        if (self._write_paused or self._out_size > self._check_above) and self._over_limit(
            self._out_size, queuing=True
        ):
            return
        out = self._out
        if not out and not self._in_feed:
            self.server.mark_dirty(self)
        out.append(frame)
        self._out_size += len(frame) if size is None else size

    def queue_message(self, message: Prepared) -> None:
        """Queue a message sent to this connection alone (``write_to``)."""
        self.queue_frame(message.frame())

    def flush(self) -> None:
        """Hand everything queued to the transport in one write."""
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_size = 0
        transport = self.transport
        if self.state == CLOSED or transport.is_closing():
            return
        transport.write(data)
        self._flushed += len(data)
        if self._write_paused:
            self._over_limit(0, queuing=False)

    def _over_limit(self, extra: int, *, queuing: bool) -> bool:
        """Handle a slow consumer: ``True`` when ``extra`` bytes plus the transport's buffer
        exceed ``max_outgoing_buffer`` and the frame being queued must not be. The policy
        (``Limits.slow_consumer``) disconnects the client, or drops frames until it catches up;
        either way with a log line."""
        if self.state == CLOSED:
            return True
        size = extra + self.transport.get_write_buffer_size()
        limit = self.server.limits.max_outgoing_buffer
        if size <= limit:
            return False
        if self.server.limits.slow_consumer == "drop":
            if queuing and not self._dropping:
                self._dropping = True
                log.warning(
                    "%s %s: %d bytes queued (limit %d): the client is not reading; "
                    "dropping messages until it catches up",
                    self.kind,
                    self.id,
                    size,
                    limit,
                )
            return queuing
        if not self.transport.is_closing():
            log.warning(
                "%s %s: %d bytes queued (limit %d): the client is not reading; dropping it",
                self.kind,
                self.id,
                size,
                limit,
            )
        self.abort()
        return True

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (the connection closes when the client answers or after
        ``close_timeout``)."""
        self.send_close(code, reason, self.server.now)

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake)."""
        self._out.clear()
        self._out_size = 0
        if self.state != CLOSED:
            self.state = CLOSING
            self.transport.abort()

    def shutdown(self) -> None:
        """Server shutdown: ``on_shutdown`` (its writes are delivered), then close 1001."""
        if self.state != OPEN:
            return
        self._callback("on_shutdown")
        self._enqueue_or_run(self._close_going_away, _NO_ARG, False)

    def _close_going_away(self) -> None:
        self.close(CloseCode.GOING_AWAY, "server shutting down")

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
        if self._read_paused:
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
        cb = self._on_message
        if cb is None or self.state == CLOSED:
            return
        if self._queue is not None:
            self._enqueue(cb, data, self._msg_async)
        elif self._msg_async:
            self._start_async(cb(data), "on_message")
        else:
            try:
                result = cb(data)
            except Exception as exc:  # user code must not take the server down
                log.exception("error in %s.on_message", type(self.handler).__name__)
                report_error(exc)
                return
            # PERF: one comparison for a plain ``def``; a sync wrapper around an ``async def``
            # (a decorator) returns an awaitable, which is awaited like a declared one.
            if result is not None and inspect.isawaitable(result):
                self._start_async(result, "on_message")

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
        pending = PENDING[0]
        if pending is not None:
            pending()
        self.answer_close(code, self.server.now)
        self._end()

    def _end(self) -> None:
        """Flush what is queued (the close frame last) and close the transport once it is sent;
        the reaper aborts it if that takes longer than ``close_timeout``."""
        if self.state != CLOSED:
            self._closing(self.server.now)
        self.flush()
        self.transport.close()

    # -- ordered callbacks ------------------------------------------------------------------

    def _callback(self, name: str) -> None:
        func = getattr(self.handler, name, None)
        if func is not None:
            self._enqueue_or_run(func, _NO_ARG, name in self.route.async_names)

    def _enqueue_or_run(self, func: Callable[..., Any], arg: Any, is_async: bool) -> None:
        if self._queue is not None:
            self._enqueue(func, arg, is_async)
            return
        awaitable = self._invoke(func, arg, is_async)
        if awaitable is not None:
            self._start_async(awaitable, _name(func))

    def _invoke(self, func: Callable[..., Any], arg: Any, is_async: bool) -> Any:
        """Call a callback (logging its exception); its awaitable when it is async or returned
        one (a sync wrapper around an ``async def``), else ``None``."""
        try:
            result = func() if arg is _NO_ARG else func(arg)
        except Exception as exc:
            log.exception("error in %s.%s", type(self.handler).__name__, _name(func))
            report_error(exc)
            return None
        if is_async or (result is not None and inspect.isawaitable(result)):
            return result
        return None

    def _enqueue(self, func: Callable[..., Any], arg: Any, is_async: bool) -> None:
        queue = self._queue
        assert queue is not None
        queue.append((func, arg, is_async))
        if len(queue) > _QUEUE_PAUSE and not self._read_paused and self.state != CLOSED:
            self._read_paused = True
            self.transport.pause_reading()

    def _start_async(self, awaitable: Any, name: str) -> None:
        self._queue = deque()
        self.server.spawn(self._drain(awaitable, name))

    async def _drain(self, awaitable: Any, name: str) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            try:
                await awaitable
            except asyncio.CancelledError:
                # Only the server cancels this task: a shutdown whose time is up. The callback
                # is abandoned; those queued behind it (``on_close``) still run.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                log.warning(
                    "%s.%s was still running at the end of the shutdown; cancelled",
                    type(self.handler).__name__,
                    name,
                )
            except Exception as exc:
                log.exception("error in %s.%s", type(self.handler).__name__, name)
                report_error(exc)
            self.flush()
            while queue:
                func, arg, is_async = queue.popleft()
                result = self._invoke(func, arg, is_async)
                if result is not None:
                    awaitable, name = result, _name(func)
                    break
            else:
                break
        self._queue = None
        if self.state == CLOSED:  # on_close has run
            self._release()
            return
        self.flush()
        if self._read_paused and not self._write_paused:
            self._read_paused = False
            self.transport.resume_reading()


class _Released:
    """What a closed connection holds instead of its controller, once released: no callbacks."""


_RELEASED: Any = _Released()


def queue_frame_many(conns: Iterable[WebSocketConnection], frame: bytes) -> None:
    """Queue one frame on many connections: :meth:`WebSocketConnection.queue_frame` for each.

    PERF: the pub/sub fan-out loop. A connection that is open, not paused and well under its
    cap (nearly always) takes the inlined fast path: no method call per subscriber, and in a
    burst, once a connection is dirty, one ``append`` per message. Anything else goes through
    ``queue_frame`` and its checks, so behaviour is the same.
    """
    size = len(frame)
    for conn in conns:
        if conn.state == OPEN and not conn._write_paused and conn._out_size <= conn._check_above:
            out = conn._out
            if not out and not conn._in_feed:
                conn.server.mark_dirty(conn)
            out.append(frame)
            conn._out_size += size
        else:
            conn.queue_frame(frame)


def _frame_of(data: object) -> bytes:
    """The frame for anything but an exact ``str``: a ``str`` subclass is text, bytes-like is
    binary, anything else is a ``TypeError`` for the caller."""
    if isinstance(data, str):
        return text_frame(data)
    if isinstance(data, bytes | bytearray | memoryview):
        return binary_frame(data)
    raise TypeError(f"write() takes str or bytes-like data, not {type(data).__name__}")


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "callback")
