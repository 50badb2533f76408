"""History on Redis: one stream per recoverable channel, positions assigned by Lua scripts.

Theory of operation
-------------------
Per channel, two keys under the app's prefix (the NUL keeps them apart from anything an app
names): ``<app>:\\x00plz:meta:<channel>``, a hash with the epoch (``e``) and the last offset
(``o``); and ``<app>:\\x00plz:stream:<channel>``, a stream whose entries are the messages
(``o`` offset, ``k`` kind, ``d`` payload), with Redis's time-based ids.

:data:`PUBLISH_SCRIPT` runs for a batch of messages of one channel (one message, or the
consecutive messages of that channel published in one loop iteration: see :mod:`.redis`),
atomically and in one round trip (``EVALSHA`` on the engine's publishing connection; the script
is loaded there whenever it connects): it reads the epoch (creating it when the meta key is
missing: a new stream, whose old entries are dropped), moves the offset past the batch, appends
each message (``MAXLEN ~ history``: Redis trims whole nodes, so a stream holds at most about
100 entries more; the stream expires ``history_ttl`` after its last message), and publishes
each one on the channel with its position: one pub/sub message per message, as one call per
message would, so a subscriber cannot tell a batch from single calls. Entries older than
``history_ttl`` in a busy stream are left to ``MAXLEN`` (no ``MINID`` trim on every publish: less
work per message); reads skip them. So every server and every script
on the Redis sees the same positions, and a Redis that lost its data (a flush, a restart without
persistence) gives a new epoch: a client's old position is never trusted.

:data:`READ_SCRIPT` returns the epoch (created when missing, for the same reason), the last
offset and the newest entries a read needs, no older than ``history_ttl``.

The published message is ``\\x00plz:r`` (text) or ``\\x00plz:s`` (binary), then
``<epoch>:<offset>\\n``, then the payload.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .history import HistoryPage, Positioned, select

if TYPE_CHECKING:
    from .channels import ChannelOptions

__all__ = [
    "BATCH_BYTES",
    "BATCH_MAX",
    "META_TTL",
    "POSITIONED_TAGS",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "common_args",
    "decode_positioned",
    "history_keys",
    "page_of",
]

#: Seconds the meta key (epoch, offset) outlives the last message of its channel, at least:
#: past it the channel starts a new epoch, and clients that were away that long recover nothing.
META_TTL = 7 * 24 * 3600
#: Tags of a positioned message on Redis pub/sub: text, binary.
POSITIONED_TAGS = (b"\x00plz:r", b"\x00plz:s")
#: At most this many messages, and about this many bytes of payload, in one run of
#: :data:`PUBLISH_SCRIPT`: a script blocks Redis while it runs (512 messages: about 1.5 ms).
BATCH_MAX = 512
BATCH_BYTES = 512 * 1024

# Both scripts start the same way. KEYS[1], KEYS[2]: the stream, the meta key. ARGV[1] to [4]:
# history, history_ttl in ms, this process's epoch prefix, the meta key's TTL in seconds (see
# :func:`common_args`). A new stream's epoch is that prefix and Redis's clock: a Redis that lost
# the meta key never gives an old epoch again; the old entries of the stream are dropped.
_PREAMBLE = b"""
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  local now = redis.call('TIME')
  epoch = ARGV[3] .. string.format('%x%05x', tonumber(now[1]), tonumber(now[2]))
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
"""

# KEYS[3]: the pub/sub channel. ARGV[5], ARGV[6], then ARGV[7], ARGV[8]...: kind (r: text,
# s: binary) and payload of each message, oldest first (a batch: see :data:`BATCH_MAX`).
# Returns the last offset. PERF: the offset moves once and the TTLs are refreshed once per
# batch; each message costs one XADD and one PUBLISH (measured with a subscriber, Redis's CPU
# per message: 7.4 us one per call, about 3 us in batches of 10 or more, a plain PUBLISH 0.5 us).
PUBLISH_SCRIPT = (
    _PREAMBLE
    + b"""
local n = (#ARGV - 4) / 2
local last = redis.call('HINCRBY', KEYS[2], 'o', n)
redis.call('EXPIRE', KEYS[2], ARGV[4])
local head = '\\0plz:'
local tail = epoch .. ':'
for i = 1, n do
  local kind, data = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local offset = last - n + i
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'o', offset, 'k', kind, 'd', data)
  redis.call('PUBLISH', KEYS[3], head .. kind .. tail .. offset .. '\\n' .. data)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return last
"""
)

# ARGV[5]: since (-1: none), ARGV[6]: limit (-1: none). Returns {epoch, last offset, the
# entries a read needs, newest first}.
READ_SCRIPT = (
    _PREAMBLE
    + b"""
local top = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
local size, since, limit = tonumber(ARGV[1]), tonumber(ARGV[5]), tonumber(ARGV[6])
local want = size
if since >= 0 then
  want = top - since
  if want > size then want = 0 end
elseif limit >= 0 and limit < size then
  want = limit
end
local entries = {}
if want > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local oldest = tostring(ms - tonumber(ARGV[2]))
  entries = redis.call('XREVRANGE', KEYS[1], '+', oldest, 'COUNT', want)
end
return {epoch, top, entries}
"""
)


def common_args(options: ChannelOptions, epoch: bytes) -> list[bytes]:
    """ARGV[1] to ARGV[4] of both scripts for a channel with ``options``."""
    return [
        b"%d" % options.history,
        b"%d" % max(1, round(options.history_ttl * 1000)),
        epoch,
        b"%d" % max(META_TTL, math.ceil(2 * options.history_ttl)),
    ]


def history_keys(prefix: str, channel: str) -> tuple[bytes, bytes]:
    """The stream and meta keys of ``channel`` under the app's ``prefix`` (``"<app>:"``)."""
    return (
        f"{prefix}\x00plz:stream:{channel}".encode(),
        f"{prefix}\x00plz:meta:{channel}".encode(),
    )


def decode_positioned(channel: str, data: bytes) -> Positioned | None:
    """The message :data:`PUBLISH_SCRIPT` published (``data`` starts with one of
    :data:`POSITIONED_TAGS`); ``None`` when it is malformed."""
    end = data.find(b"\n", 6)
    epoch, _, offset = data[6:end].partition(b":")
    if end < 0 or not offset.isdigit():
        return None
    return Positioned(channel, data[end + 1 :], data[5:6] == b"r", epoch.decode(), int(offset))


def page_of(channel: str, reply: list[Any], since: int | None, limit: int | None) -> HistoryPage:
    """The :class:`HistoryPage` for :data:`READ_SCRIPT`'s ``reply``."""
    raw_epoch, top, entries = reply
    epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else str(raw_epoch)
    newest: list[Positioned] = []
    for _id, fields in reversed(entries):
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        newest.append(
            Positioned(channel, values[b"d"], values[b"k"] == b"r", epoch, int(values[b"o"]))
        )
    return select(epoch, int(top), newest, since, limit)
