"""The Redis engine: pub/sub across processes and machines through a Redis server.

Theory of operation
-------------------
Every process (a single server, each ``--workers`` worker, or a plain script that only publishes)
talks to Redis itself. Channels on Redis are namespaced by ``plezi.app_name``
(``"<app_name>:<channel>"``), so apps sharing a Redis only see each other when they share a name.

*Receiving.* One SUBSCRIBE/PSUBSCRIBE connection per process, subscribed to exactly the channels
and patterns that have local subscribers (the registry announces first and last subscribers),
plus one pattern for the connections of this process (``write_to``) and the app's presence
channel (below). Each message therefore reaches each process once, and the hub fans it out
locally. Every message of one socket read is delivered at once and the batch flushed at the end
of the read (:mod:`.redis_link`), so a burst from Redis costs one write per subscriber and topic,
as a burst read from a WebSocket does.

*Publishing.* ``publish`` never blocks the loop: it packs the PUBLISH command and queues it; what
was queued in one loop iteration goes out in one write on a second connection, and each entry
leaves the queue when Redis has answered it (a refusal is logged, not retried). While Redis is
unreachable the queue keeps up to ``max_backlog`` messages, the unanswered ones included, sent
after recovery; past that, ``publish`` raises :class:`PubSubUnavailable`. A process with no
running server publishes synchronously. A message on a channel with history is an ``EVALSHA``
of :mod:`.redis_history`'s publish script instead; the consecutive ones of one channel queued in
one iteration after its first message share one (a batch: one queue entry and one reply, and
``max_backlog`` still counts messages).

*Faults.* A lost connection is logged, the state (``plezi.pubsub_status()``) says so, and the
engine reconnects with exponential backoff (0.1 s doubling to 5 s), resubscribes everything and
logs the recovery with the length of the whole outage. HTTP and WebSocket serving never wait on
Redis. A Redis that goes silent without closing the connection is found by the links' health
check (a PING after ``health_check_interval`` quiet seconds, 15 by default, unanswered for as
long again: see :mod:`.redis_link`), and the same path follows; that outage is counted from the
last answer Redis gave. The interval can be set in the URL (``?health_check_interval=5``; ``0``
disables it), as redis-py's option of that name is.

*During an outage* a message published here is delivered to this process's subscribers at once
(as the memory engine would) and queued with a mark: its tag carries this process's token, and
when Redis brings it back this process skips it. Messages written to Redis but unanswered when
the loss is noticed are delivered here then, and marked the same way before they are resent.

*A stall.* A silent Redis takes the health check one to two intervals to notice; local
subscribers do not wait that long. Twice a second (:data:`_STALL_TICK`) a timer looks at the
oldest unanswered PUBLISH: still the same one means Redis has stopped answering. The unanswered
messages are then delivered here, and what is published next is handled as in an outage. Those
were written unmarked, so if Redis answers again the copies it sends back (one per subscription
of this process that matches, counted) are skipped, by a variant of the message callback that
is swapped in only while copies are expected; what was kept is then published. No work is
added per message on the common path.

*After an outage: who is waited for.* Redis keeps nothing, so a queued message published before
another server has resubscribed never reaches that server. Every process subscribes to the app's
presence channel (the servers' own presence, here; the presence of connections in channels is
:mod:`.redis_presence`), and announces itself there (``hello``) once all its subscriptions are
confirmed (a PING after them on the same connection answers last); every process that hears a
``hello`` answers ``here``, every process repeats ``here`` every health check interval, and a
process that stops says ``bye``. So each process knows the other processes of its app (its
peers; one silent for three intervals is forgotten: it was killed without a word), and any word
from a peer proves the peer's subscriptions are live. After a reconnect, the queue (and whatever
is published meanwhile, delivered here at once as during the outage) is held until every peer
heard from in the three intervals before the outage has been heard from again, or ``peer_wait``
seconds have passed (``?peer_wait=``; by default two health check intervals, for a peer to
notice a silent Redis, plus the 5 s backoff cap and a 5 s connection attempt: 40 s); a peer
still silent then is forgotten and the queue goes out without it. Presence messages bypass the
hold (they are written at once, ahead of the held ones), and cost nothing on the message path:
their tag is tested only after the common ones.

*Payloads.* Redis carries bytes; plezi prefixes what it publishes with ``\\x00plz:t`` (text) or
``\\x00plz:b`` (binary), so binary messages stay binary (``\\x00plz:T``/``\\x00plz:B`` plus a
token: already delivered by that process; ``\\x00plz:p``: presence). Messages published by
other tools (no prefix) are text when they are valid UTF-8, else binary.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import hiredis

from ..errors import PleziError
from .engine import Engine, Sink
from .history import new_epoch
from .message import DIRECT_PREFIX, Message
from .patterns import compile_glob
from .presence import Presence
from .redis_history import (
    BATCH_BYTES,
    BATCH_MAX,
    POSITIONED_TAGS,
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    common_args,
    decode_positioned,
    history_keys,
    page_of,
)
from .redis_link import Link, open_link, pack_command, question_client

if TYPE_CHECKING:
    from .channels import ChannelOptions
    from .history import HistoryPage

__all__ = ["PubSubUnavailable", "RedisEngine", "RedisStartError", "check_redis"]

log = logging.getLogger("plezi")

_TEXT = b"\x00plz:t"
_BINARY = b"\x00plz:b"
#: Tags of a message that its publisher delivered to its own subscribers during an outage; the
#: publisher's token follows, and that process skips the message when Redis brings it back.
_TEXT_SEEN = b"\x00plz:T"
_BINARY_SEEN = b"\x00plz:B"
#: Tag of a presence message (``hello``, ``here`` or ``bye``, a space, the process token).
_PRESENCE_TAG = b"\x00plz:p"
#: The app's presence channel (under the app prefix), which every process subscribes to.
_PRESENCE = "\x00plz:servers"
#: The argument of the PING sent after the subscriptions: its answer comes after theirs.
_RESUBSCRIBED = b"plz:resubscribed"
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\^"})
#: Seconds a connection attempt (and the start check) may take.
_CONNECT_TIMEOUT = 5.0
#: Seconds between two looks at the oldest unanswered PUBLISH: one unanswered across two looks
#: (0.5 to 1 s) means Redis has stopped answering, long before the health check gives up.
_STALL_TICK = 0.5
#: Seconds before a stall is confirmed, after one more poll of the sockets.
_LAST_CHANCE = 0.01
#: The reconnection backoff: first delay and cap, in seconds.
_BACKOFF = (0.1, 5.0)
#: plezi's own URL options (not passed to redis-py), and what a valid value means.
_OPTIONS = {
    "health_check_interval": "a number of seconds >= 0 (0: no check)",
    "peer_wait": "a number of seconds >= 0 (0: do not wait for other servers)",
}
_URL_FORM = "redis://[[USER]:PASSWORD@]HOST:PORT/DB (rediss:// for TLS, unix:///PATH for a socket)"


class _Batch:
    """Messages of one recoverable channel published one after the other in one loop
    iteration, gathered for one run of the publish script (see ``publish_recoverable``)."""

    __slots__ = ("channel", "count", "options", "parts", "size")

    def __init__(self, channel: str, options: ChannelOptions, part: bytes, size: int) -> None:
        self.channel = channel
        self.options = options
        #: Each message's two arguments (kind, payload), packed.
        self.parts = [part]
        self.count = 1
        self.size = size


class _BatchEntry(bytes):
    """A queued ``EVALSHA`` that publishes ``messages`` messages (one entry, one reply)."""

    messages: int


class PubSubUnavailable(PleziError, ConnectionError):
    """Redis is unreachable and the outage buffer is full: the message was not published."""


class RedisStartError(PleziError, ConnectionError):
    """Redis could not be reached (or refused our credentials) when the server started."""


def _decode(data: bytes) -> tuple[bytes, bool]:
    """A message published by another tool: text when it is valid UTF-8."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return data, False
    return data, True


def _message_key(reply: Any) -> tuple[bytes, bytes] | None:
    """``(channel, data)`` of a ``message`` or ``pmessage`` reply, else ``None``."""
    if isinstance(reply, list):
        if len(reply) == 3 and reply[0] == b"message":
            return reply[1], reply[2]
        if len(reply) == 4 and reply[0] == b"pmessage":
            return reply[2], reply[3]
    return None


def _credentials(url: str) -> tuple[str, str]:
    """The user name and password in ``url`` (empty when absent)."""
    parts = urlsplit(url)
    return parts.username or "", parts.password or ""


def _redact(url: str) -> str:
    """The URL without its password, for log lines and errors."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"


def _split_url(url: str) -> tuple[str, dict[str, float]]:
    """``url`` without plezi's own query options (:data:`_OPTIONS`), and their values in
    seconds. The engine checks health itself (redis-py would also take
    ``health_check_interval``, but only in whole seconds). Raises ``ValueError`` for a value
    that is not a number of seconds >= 0."""
    base, _, query = url.partition("?")
    if not any(name in query for name in _OPTIONS):
        return url, {}
    kept, found = [], {}
    for part in query.split("&"):
        pairs = parse_qsl(part, keep_blank_values=True)
        if pairs and pairs[0][0] in _OPTIONS:
            name, value = pairs[0]
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < math.inf:
                raise ValueError(f"{name} must be {_OPTIONS[name]}")
            found[name] = seconds
        else:
            kept.append(part)
    return (base + "?" + "&".join(kept) if kept else base), found


def _what_to_do(url: str, exc: BaseException) -> str:
    """What went wrong with ``url`` and what to do about it, in one line (no password)."""
    import redis

    reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if isinstance(exc, redis.AuthenticationError):  # before ConnectionError: a subclass
        user, password = _credentials(url)
        if not user and not password:
            return "Redis wants a password; put it in the URL (redis://:PASSWORD@host:port/db)"
        what = "the user name and password" if user else "the password"
        return f"Redis refused the credentials in the URL ({reason}); check {what}"
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return (
            f"no answer within {_CONNECT_TIMEOUT:g}s ({reason}); check that the URL points to a "
            "running Redis (rediss:// only where it speaks TLS)"
        )
    if isinstance(exc, redis.ConnectionError | OSError):
        where = "socket path" if url.startswith("unix:") else "host and port"
        return f"{reason}; start redis-server there or fix the {where} in the URL"
    if isinstance(exc, redis.ResponseError) and "DB index" in reason:
        return (
            f"{reason}; choose a database the server has (the number after the last / in the URL)"
        )
    if isinstance(exc, TypeError):  # redis-py passes unknown query options on as arguments
        name = re.search(r"argument '([^']*)'", reason)
        option = name.group(1) if name else reason
        return (
            f"unknown option {option!r} in the URL; remove it (plezi reads "
            f"{' and '.join(_OPTIONS)}, redis-py the options of redis.from_url)"
        )
    if isinstance(exc, ValueError):
        return f"{reason}; fix the URL: {_URL_FORM}"
    return f"{reason}; check the URL and the Redis server's log"


def _start_error(url: str, exc: BaseException) -> RedisStartError:
    text = _what_to_do(url, exc)
    password = _credentials(url)[1]
    if password:  # never printed, even if a library quoted it
        text = text.replace(password, "***")
    return RedisStartError(f"cannot use Redis at {_redact(url)}: {text}")


def check_redis(url: str) -> None:
    """Connect once and PING, or raise :class:`RedisStartError` saying why and what to do (a
    wrong URL, a refused password, nobody listening, a bad option): called before the server
    announces itself, by the master before it starts workers."""
    import redis

    try:
        url = _split_url(url)[0]
        # RESP2 unless the URL says otherwise, as the engine connects.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_CONNECT_TIMEOUT,
            protocol=2,
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError, TypeError, OSError) as exc:
        raise _start_error(url, exc) from exc


class RedisEngine(Engine):
    """Pub/sub through Redis (see the module docstring)."""

    name = "redis"
    history_in_order = False

    def __init__(
        self,
        sink: Sink,
        url: str,
        app_name: str,
        process_token: str,
        *,
        max_backlog: int = 10_000,
        health_check_interval: float = 15.0,
        peer_wait: float | None = None,
    ) -> None:
        super().__init__(sink)
        self.url, from_url = _split_url(url)
        #: Seconds of silence before a link PINGs Redis, and then waits for an answer (0: never);
        #: ``?health_check_interval=`` in the URL wins.
        self.health_check_interval = from_url.get("health_check_interval", health_check_interval)
        #: Seconds the queue is held after a reconnect for the other processes of the app to
        #: resubscribe (``?peer_wait=`` in the URL wins). By default, as long as a peer may
        #: need to notice a silent Redis (two health check intervals) and then reconnect (the
        #: backoff cap plus one connection attempt).
        if peer_wait is None:
            peer_wait = 2 * self.health_check_interval + _BACKOFF[1] + _CONNECT_TIMEOUT
        self.peer_wait = from_url.get("peer_wait", peer_wait)
        self.prefix = f"{app_name}:"
        self._prefix_bytes = self.prefix.encode()
        self.process_token = process_token
        self._token = process_token.encode()
        self.max_backlog = max_backlog
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        #: The channels and patterns (Redis names) Redis confirmed on the current subscribing
        #: connection: exactly the subscriptions a PUBLISH is matched against there, so exactly
        #: the copies of it that arrive (see ``_wanted_copy``).
        self._live_channels: set[bytes] = set()
        self._live_patterns: set[bytes] = set()
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
        #: Connected and not holding the queue for peers: messages go to Redis as published.
        #: Otherwise they are delivered here at once and queued marked (see the module doc).
        self._live = False
        #: When the current state began: connected since, or the outage since (wall clock).
        self._since = time.time()
        #: When the current outage was noticed (wall clock).
        self._noticed = self._since
        self._outages = 0
        self._reconnects = 0
        self._sync_client: Any = None
        self._stopping = False
        #: The other processes of this app (their tokens), known through the presence channel,
        #: and when each was last heard from (``time.monotonic()``).
        self._peers: dict[str, float] = {}
        #: ``time.monotonic()`` when the current outage began.
        self._down_at = 0.0
        self._beat_timer: asyncio.TimerHandle | None = None
        #: The peers not heard from since the reconnect, while the queue is held for them.
        self._waiting: set[str] = set()
        self._hold_timer: asyncio.TimerHandle | None = None
        #: Redis has not answered a PUBLISH for a while (a stall, maybe an outage not noticed
        #: yet): what is published is delivered here at once, as during an outage.
        self._stalled = False
        #: How many of the unanswered messages at the head of the queue were delivered here
        #: during a stall; and how many copies of each ((channel, data) on Redis) Redis may still
        #: bring back, to be skipped (unmarked: they were written before the stall was seen).
        self._early = 0
        self._expected: dict[tuple[bytes, bytes], int] = {}
        self._stall_head: bytes | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._idle_ticks = 0
        #: The presence channel's subscription is confirmed on the current connection, and so
        #: were all the others since (this process announced itself): presence messages go out.
        self._presence = False
        self._announced = False
        self._presence_remote = self._remote(_PRESENCE, False)
        #: Recoverable channels (see :mod:`.redis_history`): the publish script's SHA1, an
        #: epoch for the streams this process creates, packed ``EVALSHA`` heads by channel,
        #: recoveries waiting for a subscription's confirmation, and the client that reads.
        self._script_sha = hashlib.sha1(PUBLISH_SCRIPT).hexdigest().encode()
        self._epoch = new_epoch().encode()
        self._script_heads: dict[str, tuple[ChannelOptions, bytes]] = {}
        #: The batch of recoverable messages being gathered in this loop iteration, and how
        #: many messages the queue and that batch hold beyond the queue's entries (a batch is
        #: one entry), so that ``max_backlog`` counts messages.
        self._batch: _Batch | None = None
        self._extra = 0
        self._sub_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._reader: Any = None

    def make_presence(self) -> Presence:
        """Presence entries on Redis, shared by every server of the app (:mod:`.redis_presence`)."""
        from .redis_presence import RedisPresence

        return RedisPresence(
            self.url, self.prefix, self.process_token, _TEXT, lambda: self._loop is not None
        )

    # -- names on Redis ---------------------------------------------------------------------

    def _remote(self, name: str, pattern: bool) -> bytes:
        if pattern:
            return (self.prefix.translate(_GLOB_SPECIAL) + name).encode()
        return (self.prefix + name).encode()

    @property
    def _direct_pattern(self) -> bytes:

        prefix = self.prefix.translate(_GLOB_SPECIAL)
        return (prefix + DIRECT_PREFIX + self.process_token + "-*").encode()

    # -- publishing -------------------------------------------------------------------------

    def publish(self, message: Message) -> None:
        # PERF: one test sends every case but the common one (connected, not holding) away:
        # ``_live`` is false with no running loop too.
        if not self._live:
            self._publish_not_live(message)
            return
        if len(self._queue) + self._extra >= self.max_backlog:
            self._backlog_full()
        if self._batch is not None:  # queued before this message: it was published before
            self._close_batch()
        tag = _TEXT if message.is_text else _BINARY
        head = self._heads.get(message.channel)
        if head is None:
            head = self._head(message.channel)
        payload = message.payload
        self._queue.append(b"%s$%d\r\n%s%s\r\n" % (head, len(tag) + len(payload), tag, payload))
        if not self._flush_pending:
            # PERF: the first message of a loop iteration leaves at once: at the end of the
            # iteration it could wait behind a fan-out of milliseconds (measured: +8 ms at the
            # median under a steady load). Those published after it in the same iteration
            # leave together, in one write (cork).
            self._write_unsent()
            self._flush_pending = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]  # live: a loop runs

    def _publish_not_live(self, message: Message) -> None:
        """No running server here (a script, a job): publish synchronously. Else Redis is down,
        or the queue is held for the other servers: deliver here at once and queue marked."""
        if self._loop is None:
            tag = _TEXT if message.is_text else _BINARY
            self._publish_sync(self.prefix + message.channel, tag + message.payload)
            return
        if len(self._queue) + self._extra >= self.max_backlog:
            self._backlog_full()
        self._keep(message)

    def publish_recoverable(self, message: Message, options: ChannelOptions) -> None:
        """A message on a channel with history: published by the publish script (see
        :mod:`.redis_history`), queued like a PUBLISH. It is never delivered here first, not
        even during an outage: only Redis knows its position, and it comes back with it.

        PERF: the first message of a loop iteration leaves at once, in an ``EVALSHA`` of its
        own (as a PUBLISH would); the messages published after it in the same iteration wait
        for the iteration's end anyway, so the consecutive ones of one channel are gathered
        into one ``EVALSHA`` (at most :data:`BATCH_MAX` messages, about :data:`BATCH_BYTES`):
        Redis then runs the script once per batch instead of once per message. A message of
        another channel, or any other publish, ends the batch, so the order is kept."""
        if self._loop is None:
            self._publish_script_sync(message, options)
            return
        if len(self._queue) + self._extra >= self.max_backlog:
            self._backlog_full()
        payload = message.payload
        kind = b"$1\r\nr\r\n" if message.is_text else b"$1\r\ns\r\n"
        part = b"%s$%d\r\n%s\r\n" % (kind, len(payload), payload)
        if self._flush_pending:  # not the first of this iteration (and live when it was)
            batch = self._batch
            if (
                batch is not None
                and batch.channel == message.channel
                and batch.options is options
                and batch.count < BATCH_MAX
                and batch.size < BATCH_BYTES
            ):
                batch.parts.append(part)
                batch.count += 1
                batch.size += len(payload)
            else:
                if batch is not None:
                    self._close_batch()
                self._batch = _Batch(message.channel, options, part, len(payload))
            self._extra += 1
            return
        self._queue.append(b"*12\r\n%s%s" % (self._script_head(message.channel, options), part))
        if self._live:
            self._write_unsent()
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _close_batch(self) -> None:
        """Queue the batch being gathered as one ``EVALSHA``."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        head = self._script_head(batch.channel, batch.options)
        data = b"*%d\r\n%s%s" % (10 + 2 * batch.count, head, b"".join(batch.parts))
        if batch.count == 1:
            self._queue.append(data)
        else:
            entry = _BatchEntry(data)
            entry.messages = batch.count
            self._queue.append(entry)
        self._extra -= 1  # the entry itself is counted by the queue's length

    def _script_head(self, channel: str, options: ChannelOptions) -> bytes:
        """``EVALSHA``, the script, the keys and the channel's arguments (all but the array's
        length, which depends on the number of messages), packed once per channel (and again if
        its options change)."""
        known = self._script_heads.get(channel)
        if known is not None and known[0] is options:
            return known[1]
        if len(self._script_heads) >= 1024:
            self._script_heads.clear()
        stream, meta = history_keys(self.prefix, channel)
        remote = self._prefix_bytes + channel.encode()
        parts = [stream, meta, remote, *common_args(options, self._epoch)]
        head = b"$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n3\r\n" % self._script_sha
        head += b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
        self._script_heads[channel] = (options, head)
        return head

    def _publish_script_sync(self, message: Message, options: ChannelOptions) -> None:
        """No running server here (a script, a job): run the publish script with a blocking
        client (redis-py loads it when Redis does not know it)."""
        import redis

        if self._sync_client is None:
            self._sync_client = redis.Redis.from_url(self.url)
        stream, meta = history_keys(self.prefix, message.channel)
        try:
            self._sync_client.register_script(PUBLISH_SCRIPT)(
                keys=[stream, meta, self._prefix_bytes + message.channel.encode()],
                args=[
                    *common_args(options, self._epoch),
                    b"r" if message.is_text else b"s",
                    message.payload,
                ],
            )
        except redis.RedisError as exc:
            where = _redact(self.url)
            raise PubSubUnavailable(f"cannot publish to Redis at {where}: {exc}") from exc

    async def history(
        self,
        channel: str,
        options: ChannelOptions,
        since: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        import redis.asyncio as aioredis

        stream, meta = history_keys(self.prefix, channel)
        args = common_args(options, self._epoch)
        args += (b"%d" % (-1 if since is None else since), b"%d" % (-1 if limit is None else limit))
        if self._loop is not None and self._loop is asyncio.get_running_loop():
            if self._reader is None:
                self._reader = question_client(self.url, socket_connect_timeout=_CONNECT_TIMEOUT)
            client, own = self._reader, False
        else:  # no server here (a script), or another loop: a client for this read only
            client, own = aioredis.Redis.from_url(self.url, protocol=2), True
        try:
            reply = await client.register_script(READ_SCRIPT)(keys=[stream, meta], args=args)
        finally:
            if own:
                await client.aclose()
        return page_of(channel, reply, since, limit)

    async def subscription_live(self, name: str) -> None:
        """Wait (up to the connection timeout) for Redis to confirm this process's
        subscription to ``name``: from then on every message published there reaches us."""
        remote = self._remote(name, False)
        if remote in self._live_channels:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sub_waiters.setdefault(remote, []).append(future)
        try:
            await asyncio.wait_for(future, _CONNECT_TIMEOUT)
        finally:
            waiters = self._sub_waiters.get(remote)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._sub_waiters[remote]

    def _backlog_full(self) -> None:
        raise PubSubUnavailable(
            f"Redis at {_redact(self.url)} {self._state()} and {self.max_backlog} messages "
            "are already waiting: message not published"
        )

    def _state(self) -> str:
        if not self._connected:
            return "is unreachable"
        if self._waiting:
            return "is back but other servers have not resubscribed yet"
        return "is not keeping up"

    def _keep(self, message: Message) -> None:
        """Deliver ``message`` here at once, in publish order, and queue it marked, so that this
        process skips it when Redis brings it back."""
        if self._batch is not None:  # queued before this message: it was published before
            self._close_batch()
        tag = (_TEXT_SEEN if message.is_text else _BINARY_SEEN) + self._token
        head = self._heads.get(message.channel) or self._head(message.channel)
        payload = message.payload
        self._queue.append(b"%s$%d\r\n%s%s\r\n" % (head, len(tag) + len(payload), tag, payload))
        self._deliver_here(message)

    def _deliver_here(self, message: Message) -> None:
        try:
            self.sink.deliver(message)
        except Exception:
            log.exception("error delivering a message published during a Redis outage")

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
        if self._batch is not None:
            self._close_batch()
        pub, queue, sent = self._pub, self._queue, self._sent
        if pub is None or pub.paused or not self._live or sent >= len(queue):
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
        entry = self._queue.popleft()
        if type(entry) is _BatchEntry:
            self._extra -= entry.messages - 1
        self._sent -= 1
        if isinstance(reply, Exception):
            self._refused(entry, reply)

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

    def _take_back_unanswered(self) -> None:
        """The connection is lost: the messages written but unanswered are delivered here now
        (they were published before anything queued since, so the order holds) and marked for
        the resend; presence messages belonged to the lost connection and are dropped."""
        queue, sent = self._queue, self._sent
        if not sent:
            return
        reader = hiredis.Reader()
        kept = []
        for i in range(sent):
            entry = queue.popleft()
            reader.feed(entry)
            command = reader.gets()
            if command[0] != b"PUBLISH":  # a recoverable message: Redis delivers it, resent
                kept.append(entry)
                continue
            _, channel, data = command
            head = data[:6]
            if head == _PRESENCE_TAG:
                continue
            if head in (_TEXT, _BINARY):
                is_text = head == _TEXT
                payload = data[6:]
                if i >= self._early:  # not delivered here during a stall already
                    self._deliver_here(Message(self._name(channel), payload, is_text))
                tag = (_TEXT_SEEN if is_text else _BINARY_SEEN) + self._token
                entry = pack_command(b"PUBLISH", channel, tag + payload)
            kept.append(entry)
        queue.extendleft(reversed(kept))
        self._sent = 0

    def _name(self, channel: bytes) -> str:
        return channel[len(self._prefix_bytes) :].decode(errors="replace")

    # -- a stall: Redis has stopped answering, before the health check says so ---------------

    def _tick(self) -> None:
        """Every :data:`_STALL_TICK`: a stall begins when the same PUBLISH is still unanswered;
        copies still expected a while after the stall ended will not come."""
        assert self._loop is not None
        self._stall_timer = self._loop.call_later(_STALL_TICK, self._tick)
        head = self._queue[0] if self._sent else None
        if head is not None and head is self._stall_head and self._live:
            # One more poll first: a loop that was blocked (timers run before it polls) may
            # hold the answer unread.
            self._loop.call_later(_LAST_CHANCE, self._confirm_stall, head)
        self._stall_head = head
        if self._expected and not self._stalled and not self._early:
            self._idle_ticks += 1
            if self._idle_ticks >= 2:  # every early one answered a tick ago and more
                self._forget_expected()

    def _confirm_stall(self, head: bytes) -> None:
        if self._live and self._sent and self._queue[0] is head:
            self._stall()

    def _stall(self) -> None:
        """Deliver here the messages Redis has not answered, as an outage would (they are
        remembered: Redis may still bring them back, unmarked), and keep what is published
        until Redis answers again."""
        assert self._pub is not None and self._sub is not None
        self._stalled = True
        self._live = False
        reader = hiredis.Reader()
        expected = self._expected
        for entry in itertools.islice(self._queue, self._early, self._sent):
            reader.feed(entry)
            command = reader.gets()
            if command[0] != b"PUBLISH":
                continue  # a recoverable message: only Redis can deliver it (with a position)
            _, channel, data = command
            head = data[:6]
            if head not in (_TEXT, _BINARY):
                continue  # presence, or marked: delivered here when it was published
            name = self._name(channel)
            self._deliver_here(Message(name, data[6:], head == _TEXT))
            copies = self._copies(name)
            if copies:
                expected[channel, data] = expected.get((channel, data), 0) + copies
        self._early = self._sent
        self._idle_ticks = 0
        if expected:
            self._sub.on_reply = self._on_message_expecting
        self._pub.on_reply = self._on_publish_reply_stalled
        log.warning(
            "Redis at %s has not answered for %.1fs: delivering what is published here at once "
            "until it does",
            _redact(self.url),
            _STALL_TICK,
        )

    def _copies(self, name: str) -> int:
        """How many copies of a message on ``name`` Redis sends this process (one per
        subscription of this process that matches it)."""
        copies = 1 if name in self._channels else 0
        return copies + sum(1 for p in self._patterns if compile_glob(p)(name))

    def _on_publish_reply_stalled(self, reply: Any) -> None:
        """The publishing link's replies while some were delivered here early: Redis answers
        again (the stall ends), and a refused one will not come back."""
        if reply.__class__ is not int and not isinstance(reply, Exception):
            return
        if self._sent == 0:
            log.warning("unexpected reply from Redis on the publishing connection: %r", reply)
            return
        entry = self._queue.popleft()
        if type(entry) is _BatchEntry:
            self._extra -= entry.messages - 1
        self._sent -= 1
        if self._early:
            self._early -= 1
            if isinstance(reply, Exception):
                self._forget_one(entry)
        if isinstance(reply, Exception):
            self._refused(entry, reply)
        if self._stalled:
            self._stalled = False
            log.warning("Redis at %s answers again", _redact(self.url))
            self._release("Redis answers again")
        if not self._early and self._pub is not None:
            self._pub.on_reply = self._on_publish_reply

    def _refused(self, entry: bytes, reply: Exception) -> None:
        """Redis refused ``entry``: a PUBLISH, or a run of the publish script for one message or
        a batch of a channel's messages. Not retried: Redis refused it (an ACL, a full
        memory...) and would refuse it again; the ones behind it must not wait forever. Rare:
        the entry is read back for the log line, not remembered for it."""
        reader = hiredis.Reader()
        reader.feed(entry)
        command = reader.gets()
        # PUBLISH channel data; EVALSHA sha 3 stream meta channel ... (``_script_head``).
        remote = command[1] if command[0] == b"PUBLISH" else command[5]
        count = entry.messages if type(entry) is _BatchEntry else 1
        log.error(
            "Redis refused to publish %d message%s on channel %r: %s",
            count,
            "" if count == 1 else "s",
            self._name(remote),
            reply,
        )

    def _forget_one(self, entry: bytes) -> None:
        reader = hiredis.Reader()
        reader.feed(entry)
        command = reader.gets()
        if command[0] != b"PUBLISH":
            return
        _, channel, data = command
        key = (channel, data)
        left = self._expected.get(key, 0) - self._copies(self._name(channel))
        if left > 0:
            self._expected[key] = left
        else:
            self._expected.pop(key, None)

    def _on_message_expecting(self, reply: Any) -> None:
        """The subscribing link's replies while copies of messages delivered here during a
        stall may still come: those are skipped, the rest handled as usual."""
        key = _message_key(reply)
        left = self._expected.get(key, 0) if key is not None else 0
        if not left:
            self._on_message(reply)
            return
        assert key is not None
        if left > 1:
            self._expected[key] = left - 1
            return
        del self._expected[key]
        if not self._expected:
            self._forget_expected()

    def _forget_expected(self) -> None:
        self._expected.clear()
        self._idle_ticks = 0
        if self._sub is not None:
            self._sub.on_reply = self._on_message

    def _end_stall(self) -> None:
        """The connection is lost (its replacement starts clean)."""
        self._stalled = False
        self._early = 0
        self._stall_head = None
        self._forget_expected()

    # -- presence: who else is there, and holding the queue for them -------------------------

    def _publish_presence(self, verb: bytes) -> None:
        """Publish ``verb`` on the presence channel now, ahead of anything held or unsent."""
        pub = self._pub
        if pub is None or not self._connected or not self._announced:
            return
        data = _PRESENCE_TAG + verb + b" " + self._token
        entry = pack_command(b"PUBLISH", self._presence_remote, data)
        # The replies come in the order of the writes: the entry goes where it is written.
        self._queue.insert(self._sent, entry)
        pub.write(entry)
        self._sent += 1

    def _on_presence(self, body: bytes) -> None:
        verb, _, raw = body.partition(b" ")
        if raw == self._token or not raw:
            return
        token = raw.decode(errors="replace")
        if verb == b"bye":
            self._peers.pop(token, None)
        elif verb == b"hello" or verb == b"here":
            self._peers[token] = time.monotonic()
            if verb == b"hello":  # a newcomer, or a peer back from an outage: we are here
                self._publish_presence(b"here")
        else:
            return
        # Any word from a peer proves its subscriptions are live (or, "bye", not needed).
        waiting = self._waiting
        if token in waiting:
            waiting.discard(token)
            if not waiting:
                self._release("every server seen before the outage has resubscribed")

    def _hold(self) -> None:
        """Just reconnected after an outage: hold the queue until every peer heard from in the
        three intervals before it has been heard from again, ``peer_wait`` seconds at most."""
        if self.health_check_interval > 0:
            # Peers repeat ``here`` every interval: one silent for three before the outage
            # was gone already (killed without a ``bye``), and is not waited for.
            cutoff = self._down_at - 3 * self.health_check_interval
            self._peers = {t: seen for t, seen in self._peers.items() if seen >= cutoff}
        if not self._peers or self.peer_wait <= 0:
            self._release("no other server of the app was known")
            return
        assert self._loop is not None
        self._waiting = set(self._peers)
        self._hold_timer = self._loop.call_later(self.peer_wait, self._stop_waiting)
        log.info(
            "waiting up to %.1fs for %d other server(s) of the app to resubscribe before "
            "publishing through Redis (%d message(s) queued)",
            self.peer_wait,
            len(self._waiting),
            len(self._queue) - self._sent,
        )

    def _stop_waiting(self) -> None:
        self._hold_timer = None
        missing = self._waiting
        log.warning(
            "%d server(s) of the app did not resubscribe within %.1fs of the reconnect: forgotten",
            len(missing),
            self.peer_wait,
        )
        for token in missing:
            self._peers.pop(token, None)
        self._release(f"without {len(missing)} server(s)")

    def _cancel_hold(self) -> None:
        self._waiting = set()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _release(self, why: str) -> None:
        """Go live: what was held leaves now, what is published next goes through Redis."""
        self._cancel_hold()
        self._live = self._connected
        held = len(self._queue) - self._sent
        self._write_unsent()
        if held and self._live:
            log.info("published %d queued message(s) to Redis (%s)", held, why)

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
        # (RESP2, or RESP3 push notifications, a list subclass) tagged by plezi are the common
        # case, tested first; the rest goes to ``_on_other``.
        if not isinstance(reply, list):
            self._on_other(reply)
            return
        kind = reply[0]
        if kind == b"message":
            channel, data = reply[1], reply[2]
        elif kind == b"pmessage":
            channel, data = reply[2], reply[3]
            if not self._wanted_copy(reply[1], channel):
                return
        else:
            self._on_other(reply)
            return
        head = data[:6]
        if head == _TEXT:
            payload, is_text = data[6:], True
        elif head == _BINARY:
            payload, is_text = data[6:], False
        else:
            if head in POSITIONED_TAGS:  # a recoverable channel's message, with its position
                self._deliver_positioned(channel, data)
                return
            decoded = self._decode_other(data, channel if kind == b"message" else None)
            if decoded is None:
                return
            payload, is_text = decoded
        name = channel[len(self._prefix_bytes) :].decode(errors="replace")
        try:
            self.sink.deliver(Message(name, payload, is_text))
        except Exception:
            log.exception("error delivering a message from Redis")

    def _deliver_positioned(self, channel: bytes, data: bytes) -> None:
        message = decode_positioned(self._name(channel), data)
        if message is None:
            log.error("a malformed message with a position on %r from Redis: dropped", channel)
            return
        try:
            self.sink.deliver(message)
        except Exception:
            log.exception("error delivering a message from Redis")

    def _wanted_copy(self, pattern: bytes, channel: bytes) -> bool:
        """Whether this ``pmessage`` copy of a PUBLISH is the one to deliver.

        Redis sends one copy per subscription of this connection that matches the channel (the
        channel's own, then each matching pattern's), while the registry delivers each message
        to every matching local subscription itself: so exactly one copy may pass, or a
        connection subscribed to ``room`` and ``ro*`` would get each message twice per
        subscription. The copy that passes is the channel's when the channel is subscribed,
        else the one of the smallest matching pattern. Both sets are the subscriptions Redis
        confirmed on this connection, so the chosen copy is one that Redis sends."""
        if channel in self._live_channels:
            return False
        name = channel.decode(errors="replace")
        first = min(
            (p for p in self._live_patterns if compile_glob(p.decode(errors="replace"))(name)),
            default=pattern,
        )
        return pattern == first

    def _decode_other(self, data: bytes, channel: bytes | None) -> tuple[bytes, bool] | None:
        """A message without the common tags: marked by the process that already delivered it
        (``None`` here when that is this process), presence (``None``: handled here when it came
        on the presence channel itself, ``channel``), or published by another tool."""
        head = data[:6]
        if head in (_TEXT_SEEN, _BINARY_SEEN):
            end = 6 + len(self._token)
            if data[6:end] == self._token:
                return None
            return data[end:], head == _TEXT_SEEN
        if head == _PRESENCE_TAG:
            if channel == self._presence_remote:  # not through a user's pattern
                self._on_presence(data[6:])
            return None
        return _decode(data)

    def _on_other(self, reply: Any) -> None:
        """A reply on the subscribing connection that is not a message: a (un)subscription
        confirmation, the answer to a PING, or an error."""
        if isinstance(reply, Exception):
            log.error("Redis refused a subscription: %s", reply)
            return
        if isinstance(reply, list) and len(reply) >= 2:
            kind, name = reply[0], reply[1]
            if kind == b"psubscribe":
                self._live_patterns.add(name)
                return
            if kind == b"punsubscribe":
                self._live_patterns.discard(name)
                return
            if kind == b"unsubscribe":
                self._live_channels.discard(name)
                return
            if kind == b"subscribe":
                self._live_channels.add(name)
                for waiter in self._sub_waiters.pop(name, ()):
                    if not waiter.done():
                        waiter.set_result(None)
                if name == self._presence_remote:
                    self._presence = True
                return
            if kind != b"pong":
                return
            reply = name  # RESP2 answers a PING on a subscribed connection with an array
        if reply == _RESUBSCRIBED and self._connected and self._presence:
            # Every subscription sent before the PING is confirmed: announce ourselves.
            self._announced = True
            self._publish_presence(b"hello")

    def _beat(self) -> None:
        """Every health check interval: say ``here`` (so that a peer killed without a ``bye``
        is forgotten by the others), and forget the peers silent for three intervals."""
        assert self._loop is not None
        interval = self.health_check_interval
        self._beat_timer = self._loop.call_later(interval, self._beat)
        if self._live:
            self._publish_presence(b"here")
            cutoff = time.monotonic() - 3 * interval
            for token in [t for t, seen in self._peers.items() if seen < cutoff]:
                del self._peers[token]

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
            raise _start_error(self.url, exc) from exc
        self._release("connected")
        if self.health_check_interval > 0:
            self._beat_timer = self._loop.call_later(self.health_check_interval, self._beat)
        self._stall_timer = self._loop.call_later(_STALL_TICK, self._tick)
        log.info("pub/sub through Redis at %s (app_name %r)", _redact(self.url), self.prefix[:-1])

    async def _connect(self) -> None:
        """Open both links and subscribe; the caller then goes live or holds the queue."""
        import redis.asyncio as aioredis

        if self._pool is None:
            # RESP2 by default: no push notification can come between two PUBLISH replies
            # (a URL asking for RESP3 works too: pushes are told apart).
            # ``socket_timeout`` bounds the handshake only (redis-py reads nothing afterwards):
            # a Redis that accepts but never answers makes this attempt fail, not hang.
            self._pool = aioredis.ConnectionPool.from_url(
                self.url,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_CONNECT_TIMEOUT,
                protocol=2,
            )
        pub = await open_link(
            self._pool, self._link(self._on_publish_reply, on_drained=self._write_unsent)
        )
        self._pub = pub
        # Before anything queued: the recoverable messages' EVALSHA need the script (a Redis
        # restarted has forgotten it). Its reply (the SHA1) is not an integer: not counted.
        pub.write(pack_command(b"SCRIPT", b"LOAD", PUBLISH_SCRIPT))
        sub = await open_link(
            self._pool, self._link(self._on_message, on_read_end=self._on_read_end)
        )
        self._sub = sub
        self._presence = self._announced = False
        self._live_channels.clear()
        self._live_patterns.clear()
        commands = [pack_command(b"SUBSCRIBE", self._presence_remote)]
        commands.append(pack_command(b"PSUBSCRIBE", self._direct_pattern))
        commands += [pack_command(b"SUBSCRIBE", self._remote(c, False)) for c in self._channels]
        commands += [pack_command(b"PSUBSCRIBE", self._remote(p, True)) for p in self._patterns]
        commands.append(pack_command(b"PING", _RESUBSCRIBED))  # answered after all of them
        sub.write(b"".join(commands))
        if pub.closed or sub.closed:  # lost while we were connecting the other one
            raise ConnectionError("the connection to Redis closed during the handshake")
        self._connected = True
        self._since = time.time()
        self._sent = 0

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
        self._connected = self._live = False
        self._cancel_hold()
        now = time.time()
        self._noticed = self._since = now
        if isinstance(exc, TimeoutError):
            # Silent, not closed: the outage began when Redis last answered, on either link.
            last = max(other.last_read for other in (self._pub, self._sub) if other is not None)
            self._since = now - max(0.0, time.monotonic() - last)
        self._down_at = time.monotonic() - (now - self._since)
        self._outages += 1
        log.error("lost the connection to Redis at %s (%s); reconnecting", _redact(self.url), exc)
        self._take_back_unanswered()
        self._end_stall()
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
        down_since, noticed = self._since, self._noticed
        delay = _BACKOFF[0]
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
                    delay = min(delay * 2, _BACKOFF[1])
                    continue
                log.warning(
                    "reconnected to Redis at %s after %.1fs (the outage was noticed %.1fs in); "
                    "%d channel(s) and %d pattern(s) resubscribed",
                    _redact(self.url),
                    time.time() - down_since,
                    noticed - down_since,
                    len(self._channels),
                    len(self._patterns),
                )
                self._reconnects += 1
                self._hold()
                return
        finally:
            self._recovery = None

    async def stop(self) -> None:
        self._stopping = True
        if self._connected:
            self._publish_presence(b"bye")
            if not self._live:
                self._release("stopping")
            self._write_unsent()
            deadline = time.monotonic() + 2.0
            while self._queue and self._connected and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self._cancel_hold()
        for timer in (self._beat_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._beat_timer = self._stall_timer = None
        recovery = self._recovery
        if recovery is not None:
            recovery.cancel()
            try:
                await recovery
            except BaseException:  # noqa: BLE001 - cancelled on purpose
                pass
        await self._close_connections()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
        self._connected = self._live = False
        self._loop = None

    def status(self) -> dict[str, object]:
        return {
            "engine": self.name,
            "url": _redact(self.url),
            "app_name": self.prefix[:-1],
            "connected": self._connected,
            "since": self._since,
            "outages": self._outages,
            "reconnects": self._reconnects,
            "queued": len(self._queue) + self._extra,
            "peers": len(self._peers),
            "waiting_for": len(self._waiting),
        }
