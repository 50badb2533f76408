"""The Redis engine: pub/sub across processes and machines through a Redis server.

Theory of operation
-------------------
Every process (a single server, each ``--workers`` worker, or a plain script that only publishes)
talks to Redis itself. Channels on Redis are namespaced by ``plezi.app_name``
(``"<app_name>:<channel>"``), so apps sharing a Redis only see each other when they share a name.

*Receiving.* One SUBSCRIBE/PSUBSCRIBE connection per process, subscribed to exactly the channels
and patterns that have local subscribers (the registry announces first and last subscribers),
plus one pattern for the connections of this process (``write_to``). Each message therefore
reaches each process once, and the hub fans it out locally. Every message of one socket read is
delivered at once and the batch flushed at the end of the read (:mod:`.redis_link`), so a burst
from Redis costs one write per subscriber and topic, as a burst read from a WebSocket does.

*Publishing.* ``publish`` never blocks the loop: it packs the PUBLISH command and queues it; what
was queued in one loop iteration goes out in one write on a second connection, and each entry
leaves the queue when Redis has answered it (a refusal is logged, not retried). While Redis is
unreachable the queue keeps up to ``max_backlog`` messages, the unanswered ones included, sent
after recovery; past that, ``publish`` raises :class:`PubSubUnavailable`. A process with no
running server publishes synchronously.

*Faults.* A lost connection is logged, the state (``plezi.pubsub_status()``) says so, and the
engine reconnects with exponential backoff (0.1 s doubling to 5 s), resubscribes everything, logs
the recovery and flushes the queue. HTTP and WebSocket serving never wait on Redis. A Redis that
goes silent without closing the connection is found by the links' health check (a PING after
``health_check_interval`` quiet seconds, 15 by default, unanswered for as long again: see
:mod:`.redis_link`), and the same path follows. The interval can be set in the URL
(``?health_check_interval=5``; ``0`` disables it), as redis-py's option of that name is.

*Payloads.* Redis carries bytes; plezi prefixes what it publishes with ``\\x00plz:t`` (text) or
``\\x00plz:b`` (binary), so binary messages stay binary. Messages published by other tools (no
prefix) are text when they are valid UTF-8, else binary.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from ..errors import PleziError
from .engine import Engine, Sink
from .message import Message
from .redis_link import Link, open_link, pack_command

__all__ = ["PubSubUnavailable", "RedisEngine", "RedisStartError", "check_redis"]

log = logging.getLogger("plezi")

_TEXT = b"\x00plz:t"
_BINARY = b"\x00plz:b"
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\^"})


class PubSubUnavailable(PleziError, ConnectionError):
    """Redis is unreachable and the outage buffer is full: the message was not published."""


class RedisStartError(PleziError, ConnectionError):
    """Redis could not be reached (or refused our credentials) when the server started."""


def _decode(data: bytes) -> tuple[bytes, bool]:
    head = data[:6]
    if head == _TEXT:
        return data[6:], True
    if head == _BINARY:
        return data[6:], False
    try:
        data.decode()
    except UnicodeDecodeError:
        return data, False
    return data, True


def _redact(url: str) -> str:
    """The URL without its password, for log lines and errors."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


def _split_url(url: str) -> tuple[str, float | None]:
    """``url`` without its ``health_check_interval`` query option, and the option's value in
    seconds (``None`` when absent). The engine checks health itself (redis-py would also take
    the option, but only in whole seconds). Raises ``ValueError`` for a value that is not a
    number of seconds >= 0."""
    base, _, query = url.partition("?")
    if "health_check_interval" not in query:
        return url, None
    kept, found = [], []
    for part in query.split("&"):
        pairs = parse_qsl(part, keep_blank_values=True)
        if pairs and pairs[0][0] == "health_check_interval":
            found.append(pairs[0][1])
        else:
            kept.append(part)
    try:
        seconds = float(found[0]) if found else None
    except ValueError:
        seconds = -1.0
    if seconds is not None and not (0 <= seconds < math.inf):
        raise ValueError("health_check_interval must be a number of seconds >= 0 (0: no check)")
    return base + "?" + "&".join(kept) if kept else base, seconds


def check_redis(url: str) -> None:
    """Connect once and PING, or raise :class:`RedisStartError` saying why (a wrong URL, a
    refused password, nobody listening, a bad option): called before the server announces
    itself."""
    import redis

    try:
        url = _split_url(url)[0]
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise RedisStartError(f"cannot use Redis at {_redact(url)}: {exc}") from exc


class RedisEngine(Engine):
    """Pub/sub through Redis (see the module docstring)."""

    name = "redis"

    def __init__(
        self,
        sink: Sink,
        url: str,
        app_name: str,
        process_token: str,
        *,
        max_backlog: int = 10_000,
        health_check_interval: float = 15.0,
    ) -> None:
        super().__init__(sink)
        self.url, from_url = _split_url(url)
        #: Seconds of silence before a link PINGs Redis, and then waits for an answer (0: never);
        #: ``?health_check_interval=`` in the URL wins.
        self.health_check_interval = health_check_interval if from_url is None else from_url
        self.prefix = f"{app_name}:"
        self._prefix_bytes = self.prefix.encode()
        self.process_token = process_token
        self.max_backlog = max_backlog
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        #: Packed PUBLISH commands, oldest first; the first ``_sent`` are written to Redis and
        #: wait for their reply (they are sent again if the connection is lost before it).
        self._queue: deque[bytes] = deque()
        self._sent = 0
        #: Packed ``PUBLISH <channel>`` heads, by channel: most messages go to a few channels.
        self._heads: dict[str, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_pending = False
        self._pool: Any = None
        self._pub: Link | None = None
        self._sub: Link | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._connected = False
        self._since = time.time()
        self._outages = 0
        self._sync_client: Any = None
        self._stopping = False

    # -- names on Redis ---------------------------------------------------------------------

    def _remote(self, name: str, pattern: bool) -> bytes:
        if pattern:
            return (self.prefix.translate(_GLOB_SPECIAL) + name).encode()
        return (self.prefix + name).encode()

    @property
    def _direct_pattern(self) -> bytes:
        from .hub import DIRECT_PREFIX

        prefix = self.prefix.translate(_GLOB_SPECIAL)
        return (prefix + DIRECT_PREFIX + self.process_token + "-*").encode()

    # -- publishing -------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        tag = _TEXT if message.is_text else _BINARY
        if self._loop is None:
            self._publish_sync(self.prefix + message.channel, tag + message.payload)
            return
        if len(self._queue) >= self.max_backlog:
            state = "is not keeping up" if self._connected else "is unreachable"
            raise PubSubUnavailable(
                f"Redis at {_redact(self.url)} {state} and {self.max_backlog} messages "
                "are already waiting: message not published"
            )
        head = self._heads.get(message.channel)
        if head is None:
            head = self._head(message.channel)
        payload = message.payload
        self._queue.append(b"%s$%d\r\n%s%s\r\n" % (head, len(tag) + len(payload), tag, payload))
        if not self._flush_pending and self._connected:
            # PERF: the first message of a loop iteration leaves at once: at the end of the
            # iteration it could wait behind a fan-out of milliseconds (measured: +8 ms at the
            # median under a steady load). Those published after it in the same iteration
            # leave together, in one write (cork).
            self._write_unsent()
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _head(self, channel: str) -> bytes:
        if len(self._heads) >= 1024:  # bounded: channel names may be unique (direct writes)
            self._heads.clear()
        remote = self._prefix_bytes + channel.encode()
        head = self._heads[channel] = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (
            len(remote),
            remote,
        )
        return head

    def _flush(self) -> None:
        """The end of an iteration in which messages were published: send the rest."""
        self._flush_pending = False
        self._write_unsent()

    def _write_unsent(self) -> None:
        """Write every queued message not yet written (one write)."""
        pub, queue, sent = self._pub, self._queue, self._sent
        if pub is None or pub.paused or not self._connected or sent >= len(queue):
            return
        if sent == 0 and len(queue) == 1:
            pub.write(queue[0])
        else:
            pub.write(b"".join(itertools.islice(queue, sent, None)))
        self._sent = len(queue)

    def _on_publish_reply(self, reply: Any) -> None:
        # PERF: PUBLISH answers with an integer (or an error): one type check for the common case.
        if reply.__class__ is not int and not isinstance(reply, Exception):
            return  # a health check's PONG or a RESP3 push notification: not for a PUBLISH
        if self._sent == 0:
            log.warning("unexpected reply from Redis on the publishing connection: %r", reply)
            return
        self._queue.popleft()
        self._sent -= 1
        if isinstance(reply, Exception):
            # Not retried: Redis refused this message (an ACL, a full memory...) and would
            # refuse it again; the ones behind it must not wait forever.
            log.error("Redis refused to publish a message: %s", reply)

    def _publish_sync(self, channel: str, payload: bytes) -> None:
        """No running server here (a script, a job): publish with a blocking client."""
        import redis

        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(self.url)
        try:
            self._sync_client.publish(channel, payload)
        except redis.RedisError as exc:
            where = _redact(self.url)
            raise PubSubUnavailable(f"cannot publish to Redis at {where}: {exc}") from exc

    # -- receiving --------------------------------------------------------------------------

    def subscribed(self, name: str, pattern: bool) -> None:
        (self._patterns if pattern else self._channels).add(name)
        if self._connected and self._sub is not None:
            verb = b"PSUBSCRIBE" if pattern else b"SUBSCRIBE"
            self._sub.write(pack_command(verb, self._remote(name, pattern)))

    def unsubscribed(self, name: str, pattern: bool) -> None:
        (self._patterns if pattern else self._channels).discard(name)
        if self._connected and self._sub is not None:
            verb = b"PUNSUBSCRIBE" if pattern else b"UNSUBSCRIBE"
            self._sub.write(pack_command(verb, self._remote(name, pattern)))

    def _on_message(self, reply: Any) -> None:
        # PERF: called for every message from Redis; ``message`` and ``pmessage`` arrays
        # (RESP2, or RESP3 push notifications, a list subclass) are all that matter here.
        if not isinstance(reply, list):
            if isinstance(reply, Exception):
                log.error("Redis refused a subscription: %s", reply)
            return
        kind = reply[0]
        if kind == b"message":
            channel, data = reply[1], reply[2]
        elif kind == b"pmessage":
            channel, data = reply[2], reply[3]
        else:
            return  # (un)subscribe confirmations
        payload, is_text = _decode(data)
        name = channel[len(self._prefix_bytes) :].decode(errors="replace")
        try:
            self.sink.deliver(Message(name, payload, is_text))
        except Exception:
            log.exception("error delivering a message from Redis")

    def _on_read_end(self) -> None:
        # The messages of one read went out as one batch per topic: fan it out now.
        self.sink.flush()

    # -- connections ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, or raise :class:`RedisStartError` with a clear reason."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._connect()
        except Exception as exc:
            await self._close_connections()
            self._loop = None
            raise RedisStartError(f"cannot use Redis at {_redact(self.url)}: {exc}") from exc
        log.info("pub/sub through Redis at %s (app_name %r)", _redact(self.url), self.prefix[:-1])

    async def _connect(self) -> None:
        import redis.asyncio as aioredis

        if self._pool is None:
            # RESP2 by default: no push notification can come between two PUBLISH replies
            # (a URL asking for RESP3 works too: pushes are told apart).
            # ``socket_timeout`` bounds the handshake only (redis-py reads nothing afterwards):
            # a Redis that accepts but never answers makes this attempt fail, not hang.
            self._pool = aioredis.ConnectionPool.from_url(
                self.url, socket_connect_timeout=5, socket_timeout=5, protocol=2
            )
        pub = await open_link(
            self._pool, self._link(self._on_publish_reply, on_drained=self._write_unsent)
        )
        self._pub = pub
        sub = await open_link(
            self._pool, self._link(self._on_message, on_read_end=self._on_read_end)
        )
        self._sub = sub
        commands = [pack_command(b"PSUBSCRIBE", self._direct_pattern)]
        commands += [pack_command(b"SUBSCRIBE", self._remote(c, False)) for c in self._channels]
        commands += [pack_command(b"PSUBSCRIBE", self._remote(p, True)) for p in self._patterns]
        sub.write(b"".join(commands))
        if pub.closed or sub.closed:  # lost while we were connecting the other one
            raise ConnectionError("the connection to Redis closed during the handshake")
        self._connected = True
        self._since = time.time()
        self._sent = 0
        self._write_unsent()

    def _link(self, on_reply: Callable[[Any], None], **events: Callable[[], None]) -> Link:
        return Link(
            on_reply, self._lost, health_check_interval=self.health_check_interval, **events
        )

    def _lost(self, link: Link, exc: Exception | None) -> None:
        """A link ended by itself: mark the outage at once (both links may end in one
        iteration), then close the other link and reconnect in a task."""
        if (
            self._stopping
            or not self._connected
            or (link is not self._pub and link is not self._sub)
        ):
            return  # connecting (``_connect`` checks its links), stopping, or an old link
        self._connected = False
        self._since = time.time()
        self._outages += 1
        log.error("lost the connection to Redis at %s (%s); reconnecting", _redact(self.url), exc)
        assert self._loop is not None
        self._recovery = self._loop.create_task(self._recover())

    async def _close_connections(self) -> None:
        pub, sub = self._pub, self._sub
        self._pub = self._sub = None
        for link in (pub, sub):
            if link is not None:
                await link.release()

    async def _recover(self) -> None:
        """Reconnect with backoff, resubscribe, log the recovery."""
        down_since = self._since
        delay = 0.1
        try:
            await self._close_connections()
            while not self._stopping:
                try:
                    await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - still down: try again later
                    await self._close_connections()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                log.warning(
                    "reconnected to Redis at %s after %.1fs; %d channel(s) and %d "
                    "pattern(s) resubscribed",
                    _redact(self.url),
                    time.time() - down_since,
                    len(self._channels),
                    len(self._patterns),
                )
                return
        finally:
            self._recovery = None

    async def stop(self) -> None:
        self._stopping = True
        if self._queue and self._connected:
            self._write_unsent()
            deadline = time.monotonic() + 2.0
            while self._queue and self._connected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        recovery = self._recovery
        if recovery is not None:
            recovery.cancel()
            try:
                await recovery
            except BaseException:  # noqa: BLE001 - cancelled on purpose
                pass
        await self._close_connections()
        self._connected = False
        self._loop = None

    def status(self) -> dict[str, object]:
        return {
            "engine": self.name,
            "url": _redact(self.url),
            "app_name": self.prefix[:-1],
            "connected": self._connected,
            "since": self._since,
            "outages": self._outages,
            "queued": len(self._queue),
        }
