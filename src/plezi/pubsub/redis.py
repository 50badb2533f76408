"""The Redis engine: pub/sub across processes and machines through a Redis server.

Theory of operation
-------------------
Every process (a single server, each ``--workers`` worker, or a plain script that only publishes)
talks to Redis itself. Channels on Redis are namespaced by ``plezi.app_name``
(``"<app_name>:<channel>"``), so apps sharing a Redis only see each other when they share a name.

*Receiving.* One SUBSCRIBE/PSUBSCRIBE connection per process, subscribed to exactly the channels
and patterns that have local subscribers (the registry announces first and last subscribers),
plus one pattern for the connections of this process (``write_to``). Each message therefore
reaches each process once, and the hub fans it out locally.

*Publishing.* ``publish`` never blocks the loop: messages join a bounded queue that one writer
task sends in order, pipelined (many PUBLISH per round trip). While Redis is unreachable the
queue keeps up to ``max_backlog`` messages, sent after recovery; past that, ``publish`` raises
:class:`PubSubUnavailable`. A process with no running server publishes synchronously.

*Faults.* A lost connection is logged, the state (``plezi.pubsub_status()``) says so, and the
engine reconnects with exponential backoff (0.1 s doubling to 5 s), resubscribes everything, logs
the recovery and flushes the queue. HTTP and WebSocket serving never wait on Redis.

*Payloads.* Redis carries bytes; plezi prefixes what it publishes with ``\\x00plz:t`` (text) or
``\\x00plz:b`` (binary), so binary messages stay binary. Messages published by other tools (no
prefix) are text when they are valid UTF-8, else binary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from ..errors import PleziError
from .engine import Engine, Sink
from .message import Message

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


def check_redis(url: str) -> None:
    """Connect once and PING, or raise :class:`RedisStartError` saying why (a wrong URL, a
    refused password, nobody listening): called before the server announces itself."""
    import redis

    try:
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
        self, sink: Sink, url: str, app_name: str, process_token: str, *, max_backlog: int = 10_000
    ) -> None:
        super().__init__(sink)
        self.url = url
        self.prefix = f"{app_name}:"
        self.process_token = process_token
        self.max_backlog = max_backlog
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._wake: asyncio.Event | None = None
        self._client: Any = None
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._since = time.time()
        self._outages = 0
        self._sync_client: Any = None
        self._stopping = False

    # -- names on Redis ---------------------------------------------------------------------

    def _remote(self, name: str, pattern: bool) -> str:
        if pattern:
            return self.prefix.translate(_GLOB_SPECIAL) + name
        return self.prefix + name

    @property
    def _direct_pattern(self) -> str:
        from .hub import DIRECT_PREFIX

        return self.prefix.translate(_GLOB_SPECIAL) + DIRECT_PREFIX + self.process_token + "-*"

    # -- Engine -----------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        channel = self.prefix + message.channel
        payload = (_TEXT if message.is_text else _BINARY) + message.payload
        if self._wake is None:
            self._publish_sync(channel, payload)
            return
        if len(self._queue) >= self.max_backlog:
            raise PubSubUnavailable(
                f"Redis at {_redact(self.url)} is unreachable and {self.max_backlog} messages "
                "are already waiting: message not published"
            )
        self._queue.append((channel, payload))
        self._wake.set()

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

    def subscribed(self, name: str, pattern: bool) -> None:
        (self._patterns if pattern else self._channels).add(name)
        if self._connected and self._pubsub is not None:
            self._spawn_command(name, pattern, subscribe=True)

    def unsubscribed(self, name: str, pattern: bool) -> None:
        (self._patterns if pattern else self._channels).discard(name)
        if self._connected and self._pubsub is not None:
            self._spawn_command(name, pattern, subscribe=False)

    def _spawn_command(self, name: str, pattern: bool, *, subscribe: bool) -> None:
        pubsub, remote = self._pubsub, self._remote(name, pattern)
        if pattern:
            command = pubsub.psubscribe if subscribe else pubsub.punsubscribe
        else:
            command = pubsub.subscribe if subscribe else pubsub.unsubscribe

        async def run() -> None:
            try:
                await command(remote)
            except Exception as exc:  # noqa: BLE001 - the reader notices the outage, resubscribes
                log.warning("Redis %s for %r failed: %s", command.__name__, name, exc)

        self._tasks.append(asyncio.get_running_loop().create_task(run()))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def start(self) -> None:
        """Connect, or raise :class:`RedisStartError` with a clear reason."""
        self._wake = asyncio.Event()
        try:
            await self._connect()
        except Exception as exc:
            await self._close_connections()
            raise RedisStartError(f"cannot use Redis at {_redact(self.url)}: {exc}") from exc
        log.info("pub/sub through Redis at %s (app_name %r)", _redact(self.url), self.prefix[:-1])
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._reader()), loop.create_task(self._writer())]

    async def _connect(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=5, health_check_interval=0
        )
        self._client = client
        await client.ping()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        await pubsub.psubscribe(self._direct_pattern)
        if self._channels:
            await pubsub.subscribe(*(self._remote(c, False) for c in self._channels))
        if self._patterns:
            await pubsub.psubscribe(*(self._remote(p, True) for p in self._patterns))
        self._connected = True
        self._since = time.time()
        if self._wake is not None:
            self._wake.set()

    async def _close_connections(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        for closer in (getattr(pubsub, "aclose", None), getattr(client, "aclose", None)):
            if closer is not None:
                try:
                    await closer()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                    pass

    async def _reader(self) -> None:
        prefix_len = len(self.prefix)
        deliver = self.sink.deliver
        while not self._stopping:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    raise ConnectionError("not connected")
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure means an outage
                if self._stopping:
                    return
                await self._recover(exc)
                continue
            if message is None or message["type"] not in ("message", "pmessage"):
                continue
            channel = message["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode(errors="replace")
            payload, is_text = _decode(message["data"])
            try:
                deliver(Message(channel[prefix_len:], payload, is_text))
            except Exception:
                log.exception("error delivering a message from Redis")

    async def _recover(self, exc: BaseException) -> None:
        """Log the outage, reconnect with backoff, resubscribe, log the recovery."""
        if self._connected:
            self._connected = False
            self._since = time.time()
            self._outages += 1
            log.error(
                "lost the connection to Redis at %s (%s); reconnecting",
                _redact(self.url),
                exc or type(exc).__name__,
            )
        await self._close_connections()
        down_since = self._since
        delay = 0.1
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

    async def _writer(self) -> None:
        assert self._wake is not None
        queue = self._queue
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while queue and self._connected and self._client is not None:
                batch = [queue[i] for i in range(min(len(queue), 1000))]
                try:
                    # PERF: one round trip for a whole batch; order is kept.
                    async with self._client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    # Kept in the queue; the reader reconnects, which wakes us again.
                    log.debug("publishing to Redis failed (%s); will retry", exc)
                    await asyncio.sleep(0.05)
                    break
                for _ in batch:
                    queue.popleft()

    async def stop(self) -> None:
        self._stopping = True
        if self._queue and self._connected and self._wake is not None:
            self._wake.set()
            deadline = time.monotonic() + 2.0
            while self._queue and self._connected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled on purpose
                pass
        self._tasks = []
        await self._close_connections()
        self._connected = False
        self._wake = None

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
