"""Per-server state that connections share (uvicorn's ``ServerState``): see :class:`ServerState`.

The listening :class:`~.server.Server` extends it; the connection classes (:mod:`.http`,
:mod:`.connection`, :mod:`.websocket`, :mod:`.sse`) are typed against this narrower class, so they
never import the module that creates them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Protocol

from mypy_extensions import mypyc_attr, trait

from ..compiled import native_helper
from ..config import ServerConfig
from ..http.request import Request
from ..protocol.handshake import OriginPolicy
from ..throttle import LogThrottle
from .stats import ServerStats

if TYPE_CHECKING:
    from .types import Application

__all__ = ["SEND_ALL", "Corked", "Flusher", "SendBatch", "ServerState"]

log: Final = logging.getLogger("plezi")

#: The batched sender (``_sendmany.c``: io_uring, or ``send()``), or ``None`` where plezi runs
#: as pure Python: connections then write through their transports, one call each.
SEND_ALL: Final[Callable[[list[int], list[bytes]], list[int] | None] | None] = getattr(
    native_helper("plezi.server._sendmany"), "send_all", None
)


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class Corked:
    """A connection whose writes wait for the end of the loop iteration (``Flusher.mark``).

    PERF: a mypyc trait rather than a protocol, so that marking and flushing a connection are C
    calls when compiled (a publish marks every subscriber); the stream connections are one."""

    __slots__ = ()

    def flush(self) -> None:
        """Write what is queued."""
        raise NotImplementedError

    def flush_into(self, batch: SendBatch) -> None:
        """Add what is queued to ``batch``, or write it now when it cannot go there."""
        raise NotImplementedError

    def sent_partly(self, payload: bytes, sent: int) -> None:
        """The batch sent only ``sent`` bytes of ``payload`` (a negative errno: none): the rest
        goes through the transport."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once, and what it has queued."""
        raise NotImplementedError


def _drop_failed(conn: Corked) -> None:
    """A connection whose write raised: logged and dropped. Each connection's write is guarded
    on its own, so one failure neither keeps the others' bytes from leaving nor leaves this one
    with a queue that no flush would take (a queue that is not empty is never marked again)."""
    log.exception("error while writing to a connection; dropping it")
    try:
        conn.abort()
    except Exception:
        log.exception("error while dropping a connection whose write failed")


class SendBatch:
    """What one end-of-iteration flush sends straight to the sockets: a payload for each of
    many connections, in one :data:`SEND_ALL` call (one ``io_uring_enter`` for a publish to a
    thousand subscribers, where each ``transport.write`` would be a ``write`` system call).

    A connection joins only when its transport holds nothing (``Corked.flush_into``), so its
    bytes cannot overtake older ones; what the socket does not take at once goes back through
    the transport (``Corked.sent_partly``), which owns the order from then on.
    """

    __slots__ = ("conns", "fds", "payloads")

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.payloads: list[bytes] = []
        self.conns: list[Corked] = []

    def add(self, fd: int, payload: bytes, conn: Corked) -> None:
        self.fds.append(fd)
        self.payloads.append(payload)
        self.conns.append(conn)

    def send(self, send_all: Callable[[list[int], list[bytes]], list[int] | None]) -> None:
        """Send the batch, hand each remainder to its connection, and empty the batch."""
        payloads = self.payloads
        conns = self.conns
        try:
            results = send_all(self.fds, payloads)
            if results is not None:
                for i, sent in enumerate(results):
                    payload = payloads[i]
                    if sent != len(payload):
                        try:
                            conns[i].sent_partly(payload, sent)
                        except Exception:  # noqa: BLE001 - logged by _drop_failed
                            _drop_failed(conns[i])
        finally:
            self.fds.clear()
            payloads.clear()
            conns.clear()


#: While replies do not wait for a batch (``Flusher.defer_reply``), one in this many does.
_PROBE_EVERY: Final = 32


class Flusher:
    """The end-of-iteration flush: the connections with corked writes (``mark``), written once
    per loop iteration, together when there are several (:class:`SendBatch`).

    PERF: its own class, which interpreted code cannot subclass, rather than methods of
    :class:`ServerState` (whose subclass, the listening ``Server``, is interpreted): compiled
    connections then call ``mark`` as a C function; on the server, each call went through
    Python's method lookup (about 800 instructions, once per subscriber of a publish and once
    per reply)."""

    __slots__ = ("_batch", "_dirty", "_probe", "_run", "batching", "loop")

    def __init__(self) -> None:
        self._dirty: list[Corked] = []
        self._batch = SendBatch()
        #: The loop that runs the flush (set when the server starts).
        self.loop: asyncio.AbstractEventLoop | None = None
        # One bound method for every iteration's ``call_soon``.
        self._run: Callable[[], None] = self.flush
        #: Whether the last flush wrote to several connections: replies then wait for the end
        #: of the iteration, to leave in its batch (see ``defer_reply``).
        self.batching = False
        self._probe = _PROBE_EVERY

    def defer_reply(self) -> bool:
        """Whether the replies of a read should wait for the end of the loop iteration, to
        leave in one batch with the other connections' (``True``), or leave now.

        PERF: waiting costs a ``call_soon`` and a second pass, about 3,500 instructions when
        the connection is alone (callgrind's one-connection echo: 8,200 -> 11,700 a message);
        a batch saves a system call per connection when it is not (50 connections: +42%
        messages a second). So replies wait while the last flush had company, and otherwise
        one in :data:`_PROBE_EVERY` waits, to find out whether others would join it."""
        if self.batching:
            return True
        self._probe -= 1
        if self._probe > 0:
            return False
        self._probe = _PROBE_EVERY
        return True

    def mark(self, conn: Corked) -> None:
        """Flush ``conn`` at the end of this loop iteration (one write per iteration)."""
        dirty = self._dirty
        if not dirty:
            assert self.loop is not None
            self.loop.call_soon(self._run)
        dirty.append(conn)

    @property
    def waiting(self) -> int:
        """How many connections wait for this iteration's flush."""
        return len(self._dirty)

    def flush(self) -> None:
        """Write what every marked connection queued: by one :data:`SEND_ALL` call for those
        that can take it, through their transports for the others."""
        dirty = self._dirty
        self._dirty = []
        send_all = SEND_ALL
        self.batching = len(dirty) > 1
        # One connection alone writes through its transport: a batch would save nothing.
        batch = self._batch if send_all is not None and self.batching else None
        try:
            for conn in dirty:
                try:
                    if batch is None:
                        conn.flush()
                    else:
                        conn.flush_into(batch)
                except Exception:  # noqa: BLE001 - logged by _drop_failed
                    _drop_failed(conn)
        finally:
            # Whatever happens: what the batch holds was taken from the connections' queues,
            # and it must not wait for a later flush (their sockets' numbers could belong to
            # other connections by then).
            if batch is not None and batch.fds:
                assert send_all is not None
                batch.send(send_all)


class _Timed(Protocol):
    def check_timeout(self, now: float) -> None: ...
    def shutdown(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class ServerState:
    """What every connection of one server shares: the application, the limits, the coarse
    clock, the open connections, the end-of-iteration flush, the tasks it spawned, and whether
    it is shutting down. Connections hold this, never the listening :class:`Server`."""

    def __init__(self, app: Application, config: ServerConfig) -> None:
        config.limits.validate()
        self.app = app
        self.config = config
        self.limits = config.limits
        #: Coarse clock (``loop.time()``), refreshed by the reaper. PERF: connections stamp
        #: activity with this attribute instead of calling a clock per read.
        self.now = time.monotonic()
        self.connections: set[_Timed] = set()
        #: Those of ``connections`` whose deadlines are seconds away: HTTP connections (a head,
        #: a body, keep-alive) and streams once closing. The reaper checks them on every tick,
        #: the open streams (whose deadlines are the ping's, tens of seconds) less often: see
        #: ``Server._tick``. PERF: a million held connections cost the reaper a fifth.
        self.quick: set[_Timed] = set()
        #: Open WebSocket connections and event streams (:class:`~.connection.StreamConnection`,
        #: which imports this module) by serial number: ``write_to`` looks them up here.
        self.streams: dict[int, Any] = {}
        self.shutting_down = False
        #: ``Request.scheme``: ``"https"`` when the server speaks TLS.
        self.scheme = "https" if config.tls else "http"
        #: Bytes of request bodies held in memory, all connections together (bounded by
        #: ``Limits.max_body_buffer``; see :mod:`.http`).
        self.body_buffered = 0
        #: Refusal lines a client can trigger at will, by kind: at most one a second each.
        self.log_throttles: dict[str, LogThrottle] = {}
        #: What the server counts (``plezi.stats()``): plain ints, see :mod:`.stats`.
        self.stats = ServerStats()
        #: A cluster worker's master: when it is gone (we were re-parented), shut down.
        self.master_pid: int | None = None
        #: The end-of-iteration flush of connections' corked writes.
        self.flusher = Flusher()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- shared services for connections ----------------------------------------------------

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve on ``loop`` (called once it runs): its tasks, and its end-of-iteration flush."""
        self._loop = loop
        self.flusher.loop = loop

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the server keeps a reference to until it ends."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def request_shutdown(self) -> None:
        """Ask :meth:`serve` to shut down gracefully; asked again during the shutdown, cut every
        connection at once (a second Ctrl+C)."""
        if self.shutting_down:
            log.warning("second stop request: closing all connections now")
            self._abort_all()
        elif self._stop is not None:
            self._stop.set()

    def _abort_all(self) -> None:
        for conn in list(self.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()

    def throttle(self, kind: str) -> LogThrottle:
        """The server's throttle for one kind of refusal line a client can trigger at will
        (see :mod:`plezi.throttle`): at most one line a second each."""
        throttles = self.log_throttles
        found = throttles.get(kind)
        if found is None:
            found = throttles[kind] = LogThrottle()
        return found

    def refuses_origin(self, request: Request, peer: str) -> bool:
        """Whether a WebSocket upgrade comes from an ``Origin`` that ``allowed_origins`` does
        not admit; if so, one warning line (throttled). The native server and the ASGI adapter
        both ask here, so the rule and the line are the same."""
        allowed = self.config.allowed_origins
        if not allowed:
            return False
        origin = request.headers.get("origin")
        if _origin_policy(tuple(allowed)).allows(origin):
            return False
        self.stats.refuse("origin")
        self.throttle("origin").log(
            log,
            logging.WARNING,
            "%s: 403 WebSocket upgrade to %r from Origin %r refused (not in allowed_origins)",
            peer,
            request.path[:200],
            (origin or "")[:200],
        )
        return True


@functools.lru_cache(maxsize=16)
def _origin_policy(allowed: tuple[str, ...]) -> OriginPolicy:
    """The compiled ``allowed_origins`` (built once per distinct setting)."""
    return OriginPolicy(allowed)
