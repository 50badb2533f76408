"""A Redis connection that plezi reads and writes itself: the fast path of the Redis engine.

Theory of operation
-------------------
redis-py opens the connection and does the whole handshake (host, Unix socket or TLS, AUTH,
HELLO, SELECT: whatever the URL says), and a PING proves that the server accepts us. Then the
link takes the socket over (the transport gets this :class:`Link` as its protocol): commands go
out already packed, in one write per loop iteration, and replies come back through a hiredis
reader of our own, every reply of one socket read handed over in one go.

PERF: redis-py hands pub/sub replies over one ``await`` at a time, each through several
coroutines, a timeout context and push-notification handling: about 26 us per message on the
benchmark machine, more than fanning the message out to 1,000 WebSockets. Draining hiredis after
each read costs under 1 us per message, and the messages of one read reach the registry within
one batch window, so a burst from Redis costs one write per subscriber, as a burst read from a
WebSocket does. Publishing the same way (packed once, written with everything else queued in the
same iteration, the replies counted as they come) replaces redis-py's pipeline, which costs more
per command than Redis takes to run it.

*Health check.* A Redis that vanishes without a FIN or RST (host gone, network partition, a
firewall dropping packets, a frozen process) leaves a socket that looks open forever. So each link
has one timer, not one per message: when nothing was read for ``health_check_interval`` seconds it
writes a PING (answered ``+PONG``, or ``["pong", ""]`` on a RESP2 subscribed connection; either way
nothing the link's user acts on), and when nothing at all arrives within another interval the link
aborts the socket and reports the loss (``on_lost``) with a :class:`TimeoutError`. Any read counts
as a sign of life, so a busy connection is never pinged; the only cost on the read path is one
clock read per socket read. TCP keepalive (idle 30 s, then 3 probes 5 s apart) is a second line
of defence, for when the check is disabled (``0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import hiredis

__all__ = ["Link", "open_link", "pack_command"]

log = logging.getLogger("plezi")

_PING = b"*1\r\n$4\r\nPING\r\n"
#: TCP keepalive on every TCP link: idle seconds before the first probe, seconds between probes,
#: probes unanswered before the kernel reports the connection dead.
_KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
#: After the PING deadline, the socket gets one more poll: a loop that was blocked (uvloop runs
#: timers before it polls) may hold the reply unread.
_LAST_CHANCE = 0.01
_now = time.monotonic


def pack_command(*args: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class Link(asyncio.Protocol):
    """One taken-over Redis connection.

    ``on_reply(reply)`` is called for each reply, in order: ``bytes``, ``int``, a list (pub/sub
    messages, in RESP2 or RESP3 alike) or a :class:`hiredis.ReplyError` instance for an error
    reply; the attribute is read once per socket read, so the user may swap it for a slower
    variant while it needs one. ``on_read_end()`` follows the replies of one socket read.
    ``on_lost(link, exc)`` is called once if the connection ends by itself (never after
    :meth:`close`), or when the health check gives up on it (``health_check_interval`` seconds,
    ``0`` disables; see the module docstring). ``on_drained()`` is called when the transport,
    paused by flow control, wants data again.
    """

    def __init__(
        self,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[Link, Exception | None], None],
        *,
        on_read_end: Callable[[], None] | None = None,
        on_drained: Callable[[], None] | None = None,
        health_check_interval: float = 0.0,
    ) -> None:
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.on_read_end = on_read_end
        self.on_drained = on_drained
        self.transport: asyncio.Transport | None = None
        #: The transport asked us to stop writing (its buffer is above the high-water mark).
        self.paused = False
        self.closed = False
        self.health_check_interval = health_check_interval
        self._reader = hiredis.Reader()
        self._conn: Any = None
        #: ``time.monotonic()`` of the last read, and of the unanswered PING (0.0: none).
        self._last_read = 0.0
        self._pinged = 0.0
        self._last_chance = False
        self._health: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._last_read = _now()
        if self.health_check_interval > 0:
            self._arm(self.health_check_interval)

    def data_received(self, data: bytes) -> None:
        # PERF: every complete reply of this read, without a coroutine or a call per byte. The
        # health check needs only the time of the last read: no timer is touched here.
        self._last_read = _now()
        reader = self._reader
        reader.feed(data)
        on_reply = self.on_reply
        try:
            # hiredis returns False when no complete reply is buffered; no reply to the
            # commands we send (PUBLISH, SUBSCRIBE and friends) can be the boolean false.
            while (reply := reader.gets()) is not False:
                on_reply(reply)
        except hiredis.ProtocolError as exc:
            log.error("Redis sent something that is not RESP (%s); reconnecting", exc)
            if self.transport is not None:
                self.transport.abort()
        finally:
            if self.on_read_end is not None:
                self.on_read_end()

    def eof_received(self) -> bool | None:
        return False  # close our end too: Redis never half-closes on purpose

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self.on_lost(self, exc or ConnectionError("Redis closed the connection"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_drained is not None:
            self.on_drained()

    # -- ours -------------------------------------------------------------------------------

    @property
    def last_read(self) -> float:
        """``time.monotonic()`` of the last read from Redis (of the connect if none since): the
        last sign of life, where an outage that the health check found began at the latest."""
        return self._last_read

    def write(self, data: bytes) -> None:
        """Send ``data`` (packed commands), unless the link is closed."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection; ``on_lost`` is not called."""
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    async def release(self) -> None:
        """Close, and let redis-py forget the connection (no "unclosed" warning later)."""
        self.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception:  # noqa: BLE001 - the socket is gone either way
                pass

    # -- health check -----------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._health = asyncio.get_running_loop().call_later(delay, self._check_health)

    def _disarm(self) -> None:
        if self._health is not None:
            self._health.cancel()
            self._health = None

    def _check_health(self) -> None:
        """The link's one timer: PING after a quiet interval, give up an interval later."""
        now, interval = _now(), self.health_check_interval
        if not self._pinged or self._last_read >= self._pinged:  # no PING pending
            self._pinged, self._last_chance = 0.0, False
            quiet = now - self._last_read
            if quiet < interval:
                self._arm(interval - quiet)
            else:
                self.write(_PING)
                self._pinged = now
                self._arm(interval)
        elif now - self._pinged < interval:
            self._arm(self._pinged + interval - now)
        elif not self._last_chance:
            self._last_chance = True
            self._arm(_LAST_CHANCE)
        else:
            self._give_up(now - self._pinged)

    def _give_up(self, waited: float) -> None:
        """Redis did not answer the PING: abort the socket and report the loss."""
        self.closed = True
        self._health = None
        if self.transport is not None:
            self.transport.abort()
        self.on_lost(self, TimeoutError(f"no reply to a PING in {waited:.1f}s"))


def _keep_alive(transport: asyncio.BaseTransport) -> None:
    """Turn TCP keepalive on (with the probe timing of :data:`_KEEPALIVE` where the platform
    has the options); a Unix socket has none. Best effort: a refused option is skipped."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def open_link(pool: Any, link: Link) -> Link:
    """Connect with redis-py (``pool``: a ``redis.asyncio.ConnectionPool``), check the server
    answers, and hand the socket to ``link``. Raises what redis-py raises when it cannot."""
    conn = pool.make_connection()
    link._conn = conn
    try:
        await conn.connect()
        # A server that wants a password we did not give answers NOAUTH here, not at connect.
        await conn.send_command("PING")
        await conn.read_response()
        # redis-py keeps the transport in its StreamWriter; asyncio lets a transport change
        # protocol. Nothing is buffered on redis-py's side: every handshake reply was read.
        writer = getattr(conn, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None:
            raise RuntimeError("this redis-py version does not expose its transport")
        if pool.connection_kwargs.get("socket_keepalive", True):
            _keep_alive(transport)
        transport.set_protocol(link)
        link.connection_made(transport)
    except BaseException:
        await link.release()
        raise
    return link


#: Connections a process opens for its questions to Redis (history reads, presence): more
#: questions at once wait for one of them instead of failing.
QUESTION_CONNECTIONS = 8


def question_client(url: str, **options: Any) -> Any:
    """A ``redis.asyncio.Redis`` for a server's questions (history reads, presence), on a
    blocking pool of :data:`QUESTION_CONNECTIONS` connections.

    redis-py's default pool refuses the 101st concurrent command ("Too many connections"): a
    thousand browsers reconnecting at once, each reading the history it missed, would be told
    that recovery failed. Queued on a few connections they all get their answer, and Redis is
    not handed a thousand sockets. A question that waits 20 s for a free connection fails
    (a Redis that stopped answering): for a recovery, ``recovered`` false.
    """
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=QUESTION_CONNECTIONS, timeout=20, protocol=2, **options
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool
