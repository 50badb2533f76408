"""Presence through Redis: every server on one Redis sees the same table.

Theory of operation
-------------------
On Redis (``P`` is the app's prefix, ``"<app_name>:"``):

- ``P presence:<channel>``: a hash, connection id -> info (JSON), for every server. A
  connection id starts with its process's token, so each entry names the server that owns it.
- ``P presence-servers``: a sorted set, server token -> when it last said it is alive (Redis's
  own clock, ``TIME``, so the servers' clocks never matter).
- ``P presence-server:<token>``: a hash, channel -> ``presence_ttl``, of the channels where
  that server has entries: what to clean up when it dies.

*Costs.* A join is ``HSET`` entry, ``HSET`` channel of this server, ``PUBLISH`` notification; a
leave the same with ``HDEL``: written together, one round trip, and the joins and leaves of one
loop iteration share it (1,000 connections joining at once cost a few round trips). Each server
refreshes its score once every ``presence_ttl / 3`` seconds (at most 20 s), whatever its number
of connections: one script, one round trip.

*Reading* (``plezi.presence``) is one script: the channel's entries whose server refreshed
within the channel's ``presence_ttl``. So the entries of a server killed without a goodbye
vanish from every answer ``presence_ttl`` seconds after its last refresh.

*Sweeping.* The refresh script also looks for servers silent for longer than the smallest
``presence_ttl`` this process knows; for each of their channels whose own ``presence_ttl`` has
passed, it deletes their entries and publishes one ``leave`` naming all of them. It runs
atomically, so exactly one server announces each dead server's leaves (within one refresh
interval after the entries stopped counting).

*Redis lost our entries* (a restart without persistence, a flush, or we were swept after a
stall longer than ``presence_ttl``): the refresh's ``ZADD`` then adds our token instead of
updating it, and the server rewrites its entries from its own table (:attr:`Presence.local`) in
one script, without notifications. A write that failed (Redis down) marks the table the same
way, so the first refresh that succeeds rewrites it: nothing a failed ``HDEL`` left stays.

The scripts touch keys they compute from the prefix (a dead server's channels), so this needs
a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..throttle import LogThrottle
from .message import Message
from .presence import Presence, decode_entries, notice

__all__ = ["RedisPresence"]

log = logging.getLogger("plezi")

#: Refresh at least this often (s), whatever the TTLs; and never more often than the floor.
_MAX_INTERVAL = 20.0
_MIN_INTERVAL = 0.05
_DEFAULT_TTL = 60.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

#: KEYS: servers, this server's channels; ARGV: prefix, token, "1" (register) or "0"
#: (unregister), then per channel: name, ttl, n, n x (id, info). Drops every entry of this
#: server, then writes the ones given.
_REWRITE = (
    _NOW
    + """
local prefix, mark = ARGV[1], ARGV[2] .. '-'
for _, ch in ipairs(redis.call('HKEYS', KEYS[2])) do
  local key = prefix .. 'presence:' .. ch
  for _, id in ipairs(redis.call('HKEYS', key)) do
    if string.sub(id, 1, #mark) == mark then redis.call('HDEL', key, id) end
  end
end
redis.call('DEL', KEYS[2])
local i = 4
while i <= #ARGV do
  local ch, ttl, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = prefix .. 'presence:' .. ch
  for j = 1, n do redis.call('HSET', key, ARGV[i + 1 + 2 * j], ARGV[i + 2 + 2 * j]) end
  redis.call('HSET', KEYS[2], ch, ttl)
  i = i + 3 + 2 * n
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return 1
"""
)

#: KEYS: servers; ARGV: prefix, token, the smallest ttl known, the text tag of a message.
#: Returns 1 when this server was not registered (Redis lost it), else 0.
_REFRESH = (
    _NOW
    + """
local prefix, tag = ARGV[1], ARGV[4]
local added = redis.call('ZADD', KEYS[1], now, ARGV[2])
for _, tok in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))) do
  local seen = tonumber(redis.call('ZSCORE', KEYS[1], tok))
  local theirs = prefix .. 'presence-server:' .. tok
  local chans = redis.call('HGETALL', theirs)
  local mark, kept = tok .. '-', 0
  for i = 1, #chans, 2 do
    local ch = chans[i]
    if seen < now - tonumber(chans[i + 1]) then
      local key = prefix .. 'presence:' .. ch
      local entries = redis.call('HGETALL', key)
      local gone = {}
      for j = 1, #entries, 2 do
        local id = entries[j]
        if string.sub(id, 1, #mark) == mark then
          redis.call('HDEL', key, id)
          gone[#gone + 1] = cjson.encode(id) .. ':' .. entries[j + 1]
        end
      end
      redis.call('HDEL', theirs, ch)
      if #gone > 0 then
        redis.call('PUBLISH', key, tag .. '{"event":"presence","channel":' .. cjson.encode(ch)
          .. ',"leave":{' .. table.concat(gone, ',') .. '}}')
      end
    else
      kept = kept + 1
    end
  end
  if kept == 0 then
    redis.call('DEL', theirs)
    redis.call('ZREM', KEYS[1], tok)
  end
end
return added
"""
)

#: KEYS: servers, the channel's hash; ARGV: the channel's ttl. The entries of live servers,
#: flat (id, info, id, info...).
_READ = (
    _NOW
    + """
local cutoff = now - tonumber(ARGV[1])
local entries = redis.call('HGETALL', KEYS[2])
local alive, out = {}, {}
for i = 1, #entries, 2 do
  local id = entries[i]
  local tok = string.match(id, '^([^-]*)-')
  if tok then
    local ok = alive[tok]
    if ok == nil then
      local seen = redis.call('ZSCORE', KEYS[1], tok)
      ok = seen ~= false and tonumber(seen) >= cutoff
      alive[tok] = ok
    end
    if ok then
      out[#out + 1] = id
      out[#out + 1] = entries[i + 1]
    end
  end
end
return out
"""
)


class RedisPresence(Presence):
    """Presence for a :class:`~.redis.RedisEngine` (see the module docstring)."""

    def __init__(
        self, url: str, prefix: str, token: str, tag: bytes, serving: Callable[[], bool]
    ) -> None:
        super().__init__(self._no_publish)
        #: Whether a server runs in this process (its engine started): then the Redis client
        #: lives until :meth:`stop`; else a question gets a client of its own (a script).
        self.serving = serving
        self.url = url
        self.prefix = prefix
        self.token = token
        #: The tag of a plezi text message on Redis (the engine's).
        self.tag = tag
        self._servers = f"{prefix}presence-servers"
        self._mine = f"{prefix}presence-server:{token}"
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        #: Commands not yet written (joins and leaves of this iteration).
        self._ops: list[tuple[Any, ...]] = []
        #: The entries on Redis may differ from :attr:`local`: rewrite them (also the first
        #: registration of this server).
        self._dirty = True
        self._writer: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        #: The smallest ``presence_ttl`` of a channel this process joined or read.
        self._min_ttl = _DEFAULT_TTL
        self._stopping = False
        self._failures = LogThrottle(10.0)
        #: Round trips to Redis made so far (the bench reads it).
        self.round_trips = 0

    @staticmethod
    def _no_publish(message: Message) -> None:  # notifications go with the writes
        raise AssertionError("RedisPresence publishes in its own pipeline")

    def _key(self, channel: str) -> str:
        return f"{self.prefix}presence:{channel}"

    # -- joins and leaves ---------------------------------------------------------------------

    def joined(self, channel: str, conn_id: str, info: bytes, ttl: float) -> None:
        key = self._key(channel)
        self._ops += (
            ("HSET", key, conn_id, info),
            ("HSET", self._mine, channel, repr(ttl)),
            ("PUBLISH", key, self.tag + notice(channel, "join", [(conn_id, info)])),
        )
        self._known_ttl(ttl)
        self._kick()

    def left(self, channel: str, conn_id: str, info: bytes, last: bool) -> None:
        key = self._key(channel)
        self._ops.append(("HDEL", key, conn_id))
        if last:
            self._ops.append(("HDEL", self._mine, channel))
        self._ops.append(("PUBLISH", key, self.tag + notice(channel, "leave", [(conn_id, info)])))
        self._kick()

    def _known_ttl(self, ttl: float) -> None:
        if ttl < self._min_ttl:
            self._min_ttl = ttl

    def _kick(self) -> None:
        """Write what waits, from a task (one at a time, so the order holds)."""
        if self._stopping:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no server running here: written when one starts
            return
        if self._beat is None:
            self._beat = loop.create_task(self._heartbeat())
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())

    async def _write(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._write_locked()

    async def _write_locked(self) -> None:
        import redis

        while self._ops or self._dirty:
            ops, self._ops = self._ops, []
            rewrite = self._dirty
            try:
                pipe = self._redis().pipeline(transaction=False)
                if rewrite:
                    self._rewrite(pipe, register=True)
                for op in ops:
                    pipe.execute_command(*op)
                self.round_trips += 1
                await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                # The notifications are lost (at most once); the table is rewritten by the
                # first refresh that reaches Redis.
                self._dirty = True
                self._failures.log(
                    log, logging.ERROR, "presence: cannot write to Redis (%s); rewritten later", exc
                )
                return
            if rewrite:
                self._dirty = False

    def _rewrite(self, pipe: Any, *, register: bool) -> None:
        args: list[Any] = [self.prefix, self.token, "1" if register else "0"]
        for channel, entries in self.local.items():
            args += (channel, repr(self.ttls[channel]), len(entries))
            for item in entries.items():
                args += item
        # EVAL, not EVALSHA: rare, and a pipeline cannot load a script Redis forgot.
        pipe.execute_command("EVAL", _REWRITE, 2, self._servers, self._mine, *args)

    # -- the heartbeat --------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between two refreshes of this server's score."""
        return min(_MAX_INTERVAL, max(_MIN_INTERVAL, self._min_ttl / 3))

    async def _heartbeat(self) -> None:
        import redis

        while not self._stopping:
            await asyncio.sleep(self.interval)
            try:
                self.round_trips += 1
                added = await self._script("refresh", _REFRESH)(
                    keys=[self._servers],
                    args=[self.prefix, self.token, repr(self._min_ttl), self.tag],
                )
            except (redis.RedisError, OSError) as exc:
                self._dirty = True
                self._failures.log(
                    log, logging.ERROR, "presence: cannot refresh this server on Redis (%s)", exc
                )
                continue
            if added and not self._dirty:
                log.warning(
                    "presence: Redis had lost this server's entries (restarted, flushed, or "
                    "this server was silent too long); writing them again"
                )
                self._dirty = True
            if self._dirty:
                self._kick()

    # -- reading --------------------------------------------------------------------------------

    async def members(self, channel: str, ttl: float) -> dict[str, Any]:
        self._known_ttl(ttl)
        if self._ops:
            self._kick()
        if self._writer is not None:  # our own joins and leaves first
            await asyncio.shield(self._writer)
        self.round_trips += 1
        keys, args = [self._servers, self._key(channel)], [repr(ttl)]
        if self._client is None and not self.serving():
            # No server here (a script that only asks): a client for this question only, on
            # whatever loop asks it.
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.url, protocol=2, socket_connect_timeout=5.0)
            try:
                flat = await client.eval(_READ, len(keys), *keys, *args)
            finally:
                await client.aclose()
        else:
            flat = await self._script("read", _READ)(keys=keys, args=args)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return decode_entries((conn_id.decode(), info) for conn_id, info in pairs)

    # -- Redis --------------------------------------------------------------------------------

    def _redis(self) -> Any:
        if self._client is None:
            from .redis_link import question_client

            self._client = question_client(self.url, socket_connect_timeout=5.0, socket_timeout=5.0)
        return self._client

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._redis().register_script(source)
        return script

    async def stop(self) -> None:
        """Write the last leaves, take this server's entries and score off Redis."""
        import redis

        self._stopping = True
        beat, self._beat = self._beat, None
        if beat is not None:
            beat.cancel()
        if self._writer is not None:
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
        if self._client is None:
            return
        try:
            if self._ops:
                await self._write()
            pipe = self._redis().pipeline(transaction=False)
            self.local.clear()
            self._rewrite(pipe, register=False)
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.error("presence: could not remove this server's entries from Redis (%s)", exc)
        finally:
            client, self._client = self._client, None
            await client.aclose()
