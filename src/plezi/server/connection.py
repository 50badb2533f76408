"""What a WebSocket and an event stream share: a long-lived connection that pushes to its client.

Theory of operation
-------------------
:class:`StreamConnection` is the part of a connection that is the same whether its frames are
WebSocket frames (:class:`~.websocket.WebSocketConnection`) or Server-Sent Events
(:class:`~.sse.SseConnection`): the controller's ordered callbacks, the corked outgoing queue,
flow control, the slow-consumer cap, pub/sub delivery (``queue_frame``, ``queue_message``,
``run_handler``), the cleanups run when the connection is lost, graceful shutdown. A subclass
brings the framing (``send``, ``queue_message``), what happens to bytes from the client
(``data_received``), how it closes (``close``) and its timers (``check_timeout``).

*Ordering.* Sync callbacks run inline: no task, no coroutine. When an ``async`` callback runs, a
single task is started for it and every later event of this connection waits in ``_queue`` until
the task has drained it; so callbacks never overlap and keep their order. ``_queue`` is ``None``
whenever no async callback is in flight (the fast path). A callback is async when it is declared
``async def`` or when it returns an awaitable (a sync wrapper, such as a decorator, around an
``async def``).

*Corking.* Frames written while bytes from the client are being parsed (``_in_feed``) are
collected and written in one ``transport.write`` when ``data_received`` returns; frames written
from anywhere else (another connection's callback, a timer, a thread via the loop) are collected
and written once per loop iteration by the server's flush. Either way: one system call per
connection per iteration.

*Flow control.* Past ``write_high_water`` queued bytes the transport calls ``pause_writing``:
reading from the client pauses (back-pressure) and ``on_drained`` is armed. Past
``max_outgoing_buffer`` the client is a slow consumer and is disconnected (or its messages are
dropped until it catches up: ``Limits.slow_consumer``), with a log line: when a flush leaves more
than that in the transport, or when a frame is queued while more than that is already queued (our
list plus the transport's buffer), so a connection never holds more than the cap plus one
message, even when one callback writes a flood without yielding. The full count is only taken
when it can exceed the cap (the transport is paused, or our own list alone is within
``write_high_water`` of the cap); the usual write costs one comparison.

*Pub/sub.* :data:`OUTBOX` is the one door through which pub/sub reaches connections (see
:class:`Outbox`): it queues one frame on many connections, and it holds the flush of a batch of
published frames that waits, which a connection calls before it queues anything else, so that
order is kept. Pub/sub calls it; nothing of this layer is written from above.

*State.* ``state`` (``OPEN``, ``CLOSING``, ``CLOSED``), the queue ``_out`` and its size
``_out_size`` are this class's, so the hot paths (the fan-out, a write) read them at fixed
offsets. A WebSocket connection is also a :class:`~plezi.protocol.connection.SessionLogic` (the
sans-I/O session, a trait: compiled, a class has one real base), whose methods work on these
same attributes.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from ..compiled import optional_attr
from ..errors import report_error
from ..protocol.close import CloseCode
from ..protocol.connection import CLOSED, CLOSING, OPEN, queued
from .state import SEND_ALL, Corked, SendBatch

if TYPE_CHECKING:
    from .state import ServerState
    from .types import Prepared, RouteInfo

__all__ = [
    "CLOSED",
    "CLOSING",
    "OPEN",
    "OUTBOX",
    "PROCESS_TOKEN",
    "Outbox",
    "StreamConnection",
]

log: Final = logging.getLogger("plezi")

#: Events queued behind a running async callback before reading from the client pauses.
_QUEUE_PAUSE: Final = 64

# Why reading from a connection is paused (bits of ``_paused_for``): reading resumes only when
# no reason is left. One helper pair (``_pause_reading``/``_resume_reading``) keeps the rule in
# one place, whichever reason comes and goes first.
#: The client does not read what we send (back-pressure, ``pause_writing``).
WRITES: Final = 1
#: Async callbacks are queued past ``_QUEUE_PAUSE``.
BACKLOG: Final = 2
#: The reader used up its turn; the rest of the read is parsed in a later iteration.
TURN: Final = 4
_NO_ARG: Final[Any] = object()

#: A per-process prefix that makes connection ids unique across processes and machines.
PROCESS_TOKEN: Final = os.urandom(6).hex()
_counter: Final = itertools.count(1)

#: The slots of :class:`StreamConnection`'s attributes.
_SLOTS: Final = (
    "_backlog",
    "_check_above",
    "_closing_at",
    "_cleanup",
    "_drained",
    "_dropping",
    "_fd",
    "_flushed",
    "_in_feed",
    "_last",
    "_out",
    "_out_size",
    "_queue",
    "_paused_for",
    "_received",
    "_sent",
    "_serial",
    "_write_paused",
    "handler",
    "route",
    "server",
    "state",
    "transport",
)


#: The transport classes whose socket a flush may write to directly (:class:`~.state.SendBatch`):
#: uvloop's plain TCP transport, whose buffer ``get_write_buffer_size`` tells in full. Not TLS
#: (its socket carries records, not our bytes), not asyncio's own loop.
_DIRECT_TRANSPORTS: Final = {"uvloop.loop.TCPTransport"}


#: A connection's bytes of one iteration past this size go through its transport, not the
#: batch. PERF: the batch saves a system call per connection, which a large write does not
#: notice; and a burst of publishes (2,000 back to back to 1,000 subscribers, tens of KiB per
#: connection per flush) measured 26-45M deliveries/s batched against 40-56M through the
#: transports. With this bound, checked before the join (bench/README), 54M against the
#: base's 40M in one interleaved A/B.
_BATCH_BYTES: Final = 16384

#: ``StreamConnection._fd`` before the first batched flush asks the transport for its socket.
_FD_UNKNOWN: Final = -2


def _direct_fd(transport: asyncio.BaseTransport) -> int:
    """The socket a batched flush may send to for this transport, or -1 (see ``SendBatch``)."""
    kind = type(transport)
    if f"{kind.__module__}.{kind.__qualname__}" not in _DIRECT_TRANSPORTS:
        return -1
    sock = transport.get_extra_info("socket")
    fileno: int = sock.fileno() if sock is not None else -1
    return fileno


class Outbox:
    """How pub/sub reaches this process's connections: the server layer's whole interface to it.

    * :meth:`fan_out` queues one frame (bytes built once) on many connections;
    * :meth:`set_pending` tells connections that a batch of published frames waits (``flush``,
      a function that queues it) or no longer does (``None``). Every connection calls
      ``pending`` before it queues anything else (its own writes, a reply, a close), at the end
      of each read, and before it ends, so that frames leave in the order they were written.

    There is one, :data:`OUTBOX`; pub/sub (``pubsub/hub.py``) hands it to its registry.
    PERF: ``pending`` is a slot read on every read of every connection: one global and one
    attribute load, as cheap as the list it replaces.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        #: The flush of the waiting batch, or ``None`` (nearly always).
        self.pending: Callable[[], object] | None = None

    def set_pending(self, flush: Callable[[], object] | None) -> None:
        """A batch waits (``flush`` queues it) or not (``None``)."""
        self.pending = flush

    @staticmethod
    def fan_out(conns: Iterable[StreamConnection], frame: bytes) -> None:
        """Queue one frame on many connections: :meth:`StreamConnection.queue_frame` for each.

        PERF: the pub/sub fan-out loop. A connection that is open, not paused and well under
        its cap (nearly always) takes the inlined fast path: no method call per subscriber,
        and in a burst, once a connection is dirty, one ``append`` per message. Anything else
        goes through ``queue_frame`` and its checks, so behaviour is the same.
        """
        size = len(frame)
        for conn in conns:
            if (
                conn.state == OPEN
                and not conn._write_paused
                and conn._out_size <= conn._check_above
            ):
                out = conn._out
                if out is None and not conn._in_feed:
                    conn.server.flusher.mark(conn)
                conn._out = queued(out, frame)
                conn._out_size += size
            else:
                conn.queue_frame(frame)


#: The outbox of this process.
OUTBOX: Final = Outbox()


@mypyc_attr(allow_interpreted_subclasses=True)
class StreamConnection(asyncio.Protocol, Corked):
    """A WebSocket or an event stream, less its framing (see the module docstring)."""

    __slots__ = _SLOTS

    #: An event stream (:mod:`.sse`) rather than a WebSocket; and what log lines call it.
    is_sse = False
    kind = "connection"

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
        #: ``OPEN``; ``CLOSING`` once a close frame was queued or the connection is ending
        #: (stamped: ``_closing_at``); ``CLOSED`` once the transport is gone.
        self.state = OPEN
        self._closing_at = 0.0
        #: What waits to be written (frames, or events: ``None``, one, or a list, see
        #: :func:`~plezi.protocol.connection.queued`), and its size in bytes.
        self._out: Any = None
        self._out_size = 0
        limits = server.limits
        #: Past this many bytes in ``_out`` the total may exceed the cap (see the docstring).
        self._check_above = limits.max_outgoing_buffer - limits.write_high_water
        self._in_feed = False
        self._queue: deque[tuple[Callable[..., Any], Any, bool]] | None = None
        self._last = server.now
        #: Bytes handed to the transport so far, and how many of them it had passed on to the
        #: kernel at the last reaper tick (progress of a client we stopped reading from).
        self._flushed = 0
        self._drained = 0
        #: Messages from the client and messages the application wrote (``plezi.stats()``).
        self._received = 0
        self._sent = 0
        self._paused_for = 0
        self._write_paused = False
        self._serial = next(_counter)
        #: What to call once the connection is lost (``add_cleanup``: pub/sub unsubscribes):
        #: ``None``, one callable, or a list of them.
        self._cleanup: Callable[[], object] | list[Callable[[], object]] | None = None
        #: The slow-consumer policy is "drop" and messages are being dropped right now.
        self._dropping = False
        #: The socket a batched flush sends to: -1, none (always through the transport); -2,
        #: not asked yet. MEMORY: asked at the first batched flush, not here, since asking
        #: makes uvloop keep a socket object (88 bytes) with the transport for its whole life,
        #: which a connection that is never written to need not pay.
        self._fd = -1 if SEND_ALL is None else _FD_UNKNOWN
        #: Whether the transport may hold bytes of ours, which a direct send would overtake.
        self._backlog = True

    # -- what a subclass provides ------------------------------------------------------------

    def send(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Queue one message, framed as the subclass frames; ``False`` once closing."""
        raise NotImplementedError

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the connection as the subclass does (a close frame, the end of the stream)."""
        raise NotImplementedError

    def check_timeout(self, now: float) -> None:
        """The subclass's timers (keep-alive, liveness, the closing deadline): the reaper's."""
        raise NotImplementedError

    def _closing(self, now: float) -> None:
        self.state = CLOSING
        self._closing_at = now
        # Its deadline is now ``close_timeout`` away: checked on every reaper tick.
        self.server.quick.add(self)

    def close_expired(self, now: float, timeout: float) -> bool:
        """Whether closing began more than ``timeout`` before ``now`` (the reaper then drops
        the connection: the client did not answer, or did not take our last bytes)."""
        return self.state == CLOSING and now - self._closing_at > timeout

    def connection_closed(self) -> None:
        """The transport is gone: ``CLOSED``; what was not sent is dropped."""
        self.state = CLOSED
        self._out = None
        self._out_size = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, initial: bytes) -> None:
        """Begin after the handshake: ``on_open``, then any bytes that came with it."""
        self.server.connections.add(self)
        self.server.streams[self._serial] = self
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

    def connection_lost(self, exc: Exception | None) -> None:
        first = self.state != CLOSED
        self.connection_closed()
        self.server.connections.discard(self)
        self.server.quick.discard(self)
        if self.server.streams.pop(self._serial, None) is not None:
            self.server.stats.fold(self)
        cleanup, self._cleanup = self._cleanup, None
        for func in () if cleanup is None else cleanup if isinstance(cleanup, list) else (cleanup,):
            try:
                func()
            except Exception:
                log.exception("error while releasing a closed connection")
        if first:
            self._callback("on_close")
        if self._queue is None:  # else ``_drain`` releases once on_close has run
            self._release()

    def _release(self) -> None:
        """Break the reference cycles of a closed connection (controller callbacks point back
        at it), so that it is freed by reference counting as soon as nothing else holds it; the
        cyclic garbage collector may not run for a long time. A controller the application
        keeps still answers ``write`` with ``False``."""
        self.handler = _RELEASED

    def add_cleanup(self, func: Callable[[], object]) -> None:
        """Call ``func`` once the connection is lost (before ``on_close``)."""
        # MEMORY: one callable (a controller's subscriptions) needs no list of its own.
        cleanup = self._cleanup
        if cleanup is None:
            self._cleanup = func
        elif isinstance(cleanup, list):
            cleanup.append(func)
        else:
            self._cleanup = [cleanup, func]

    def run_handler(self, handler: Any, message: Any) -> None:
        """Run a pub/sub ``handler`` bound to this connection, in its callback order."""
        if self.state != CLOSED:
            self._enqueue_or_run(handler.call, message, handler.is_async)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading(WRITES)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._dropping:
            self._dropping = False
            log.info("%s %s: the client caught up; messages flow again", self.kind, self.id)
        self._resume_reading(WRITES)
        self._callback("on_drained")

    # -- writing ----------------------------------------------------------------------------

    def queue_frame(self, frame: Any, size: int | None = None) -> None:
        """Queue an already framed message (the pub/sub path: framed once, written to many);
        ``size`` is its length when ``frame`` is not bytes (an ASGI message).

        Dropped when the connection is past its outgoing buffer cap (it is then disconnected)
        or no longer open: nothing may follow our close frame."""
        if self.state != OPEN:
            return
        pending = OUTBOX.pending
        if pending is not None:  # frames published earlier go first
            pending()
        # PERF: the exact count (a transport call) only when the total may be over the cap:
        # unpaused, the transport holds at most ``write_high_water``.
        if (self._write_paused or self._out_size > self._check_above) and self._over_limit(
            self._out_size, queuing=True
        ):
            return
        out = self._out
        if out is None and not self._in_feed:
            self.server.flusher.mark(self)
        self._out = queued(out, frame)
        self._out_size += len(frame) if size is None else size

    def queue_message(self, message: Prepared) -> None:
        """Queue a message sent to this connection alone (``write_to``), framed as the
        subclass frames."""
        raise NotImplementedError

    def flush(self) -> None:
        """Hand everything queued to the transport in one write."""
        out = self._out
        if out is None:
            return
        data = b"".join(out) if isinstance(out, list) else out
        self._out = None
        self._out_size = 0
        transport = self.transport
        if self.state == CLOSED or transport.is_closing():
            return
        transport.write(data)
        self._backlog = True
        self._flushed += len(data)
        if self._write_paused:
            self._over_limit(0, queuing=False)

    def flush_into(self, batch: SendBatch) -> None:
        """Add what is queued to the end-of-iteration ``batch`` (sent straight to the socket),
        or :meth:`flush` it through the transport when the batch cannot take it: no socket of
        ours, writing paused or the transport closing or holding older bytes, or more than
        :data:`_BATCH_BYTES` to write."""
        out = self._out
        if out is None:
            return
        fd = self._fd
        transport = self.transport
        # A closing transport's socket may be closed already, its number another connection's.
        if fd == -1 or self._write_paused or self.state == CLOSED or transport.is_closing():
            self.flush()
            return
        if fd == _FD_UNKNOWN:
            fd = self._fd = _direct_fd(transport)
            if fd < 0:
                self.flush()
                return
        if self._backlog:
            if transport.get_write_buffer_size():
                self.flush()
                return
            self._backlog = False
        # PERF: the size before the join: a burst's flush joins tens of KiB per connection,
        # and ``flush`` would join them again.
        if self._out_size > _BATCH_BYTES:
            self.flush()
            return
        data = b"".join(out) if isinstance(out, list) else out
        if type(data) is not bytes:
            self.flush()
            return
        self._out = None
        self._out_size = 0
        self._flushed += len(data)
        batch.add(fd, data, self)

    def sent_partly(self, payload: bytes, sent: int) -> None:
        """The rest of a batched send goes through the transport: after a full socket buffer
        it waits there; after an error (``sent`` < 0) the transport's own write meets the error
        and closes the connection as any failed write does."""
        self._backlog = True
        if self.state == CLOSED or self.transport.is_closing():
            return
        self.transport.write(memoryview(payload)[sent:] if sent > 0 else payload)
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
            if queuing:
                self.server.stats.slow_dropped += 1
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
            self.server.stats.slow_disconnected += 1
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

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake)."""
        self._out = None
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

    def _end(self) -> None:
        """Flush what is queued (a close frame last) and close the transport once it is sent;
        the reaper aborts it if that takes longer than ``close_timeout``."""
        if self.state != CLOSED:
            self._closing(self.server.now)
        self.flush()
        self.transport.close()

    # -- ordered callbacks ------------------------------------------------------------------

    def _callback(self, name: str) -> None:
        func = optional_attr(self.handler, name, None)
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
        if len(queue) > _QUEUE_PAUSE:
            self._pause_reading(BACKLOG)

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
        self._resume_reading(BACKLOG)

    def _pause_reading(self, reason: int) -> None:
        """Stop reading from the client for ``reason`` (see :data:`WRITES`...)."""
        if not self._paused_for and self.state != CLOSED and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused_for |= reason

    def _resume_reading(self, reason: int) -> None:
        """``reason`` is gone; read again if it was the last one."""
        paused = self._paused_for
        if paused & reason:
            self._paused_for = paused = paused & ~reason
            if not paused and self.state != CLOSED and not self.transport.is_closing():
                self.transport.resume_reading()


class _Released:
    """What a closed connection holds instead of its controller, once released: no callbacks."""


_RELEASED: Final[Any] = _Released()


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", "callback")
