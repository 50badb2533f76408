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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import hiredis

__all__ = ["Link", "open_link", "pack_command"]

log = logging.getLogger("plezi")


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
    reply. ``on_read_end()`` follows the replies of one socket read. ``on_lost(link, exc)`` is
    called once if the connection ends by itself (never after :meth:`close`). ``on_drained()``
    is called when the transport, paused by flow control, wants data again.
    """

    def __init__(
        self,
        on_reply: Callable[[Any], None],
        on_lost: Callable[[Link, Exception | None], None],
        *,
        on_read_end: Callable[[], None] | None = None,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self.on_reply = on_reply
        self.on_lost = on_lost
        self.on_read_end = on_read_end
        self.on_drained = on_drained
        self.transport: asyncio.Transport | None = None
        #: The transport asked us to stop writing (its buffer is above the high-water mark).
        self.paused = False
        self.closed = False
        self._reader = hiredis.Reader()
        self._conn: Any = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # PERF: every complete reply of this read, without a coroutine or a call per byte.
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
        self.on_lost(self, exc or ConnectionError("Redis closed the connection"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_drained is not None:
            self.on_drained()

    # -- ours -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send ``data`` (packed commands), unless the link is closed."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection; ``on_lost`` is not called."""
        self.closed = True
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
        transport.set_protocol(link)
        link.connection_made(transport)
    except BaseException:
        await link.release()
        raise
    return link
