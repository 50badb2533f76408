"""Presence: which connections are subscribed to a presence channel, with the info each gave.

Theory of operation
-------------------
``plezi.channel("room.*", presence=True)`` makes every concrete channel the glob matches a
presence channel. A connection that subscribes to one (``self.subscribe("room.1", info={...})``)
*joins* it: an entry ``connection id -> info`` is recorded; unsubscribing, or the connection
closing, *leaves* it. ``await plezi.presence("room.1")`` answers the entries of the whole
cluster, and every join and leave is announced on the notification channel
``"presence:" + channel`` (:func:`presence_channel`) as one JSON text message::

    {"event": "presence", "channel": "room.1", "join": {"<connection id>": <info>}}
    {"event": "presence", "channel": "room.1", "leave": {"<connection id>": <info>, ...}}

The ``event`` field makes it an ordinary auto-dispatch event for the browser client
(``client.presence = fn`` or ``client.on("presence", fn)``), so a connection that forwards the
notification channel (``self.subscribe(plezi.presence_channel("room.1"))``) needs nothing else.
A ``leave`` may name several connections at once (a server or worker that died). Subscribing
again with other info is announced as a ``join`` with the new info. Notifications are
published like any message: at most once, to those subscribed when they are published.

Every process keeps the entries of its own connections (:attr:`Presence.local`); where the
whole table lives depends on the engine:

- memory (one process): the local entries are the table;
- cluster (``--workers``): the master keeps it (:mod:`.cluster_presence`), and drops the
  entries of a worker whose relay connection ends (it died): leaves are announced at once;
- Redis: a hash per channel plus a heartbeat per server (:mod:`.redis_presence`).

Info is any JSON-serialisable value (``None``: ``{}``), at most :data:`MAX_INFO_BYTES` bytes of
JSON, encoded once at the join and kept as those bytes: notifications and answers splice them in
without decoding them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..errors import PleziError
from .channels import ChannelOptions, options_for
from .message import Message

__all__ = [
    "MAX_INFO_BYTES",
    "NOTIFY_PREFIX",
    "Presence",
    "PresenceError",
    "encode_info",
    "notice",
    "presence_channel",
    "presence_options",
]

log = logging.getLogger("plezi")

#: The notification channel of ``room`` is ``NOTIFY_PREFIX + "room"``; such channels are never
#: presence channels themselves, whatever glob matches them.
NOTIFY_PREFIX = "presence:"
#: The largest info, in bytes of JSON: presence entries travel with every answer and leave.
MAX_INFO_BYTES = 4096


class PresenceError(PleziError, ValueError):
    """Presence info that cannot be recorded (not JSON-serialisable, too large), or info given
    for a channel that is not a presence channel."""


def presence_channel(channel: str) -> str:
    """The channel on which the joins and leaves of the presence channel ``channel`` are
    published (``"presence:" + channel``)."""
    return NOTIFY_PREFIX + channel


def presence_options(channel: str) -> ChannelOptions | None:
    """The options of ``channel`` when it is a presence channel, else ``None``."""
    options = options_for(channel)
    if options is None or not options.presence or channel.startswith(NOTIFY_PREFIX):
        return None
    return options


def encode_info(info: Any) -> bytes:
    """``info`` as the JSON bytes that are stored (``None``: ``{}``); raises
    :class:`PresenceError` when it is not JSON-serialisable or larger than
    :data:`MAX_INFO_BYTES`."""
    if info is None:
        return b"{}"
    try:
        data = orjson.dumps(info)
    except TypeError as exc:
        raise PresenceError(f"presence info must be JSON-serialisable: {exc}") from None
    if len(data) > MAX_INFO_BYTES:
        raise PresenceError(
            f"presence info is {len(data)} bytes of JSON; the limit is {MAX_INFO_BYTES}"
        )
    return data


def notice(channel: str, kind: str, entries: Iterable[tuple[str, bytes]]) -> bytes:
    """The JSON text of a ``join`` or ``leave`` notification (see the module docstring); the
    infos are spliced in as stored."""
    body = b",".join(orjson.dumps(conn_id) + b":" + info for conn_id, info in entries)
    return b'{"event":"presence","channel":%s,"%s":{%s}}' % (
        orjson.dumps(channel),
        kind.encode(),
        body,
    )


def decode_entries(entries: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    """``{connection id: info}`` from stored entries."""
    return {conn_id: orjson.loads(info) for conn_id, info in entries}


class Presence:
    """The presence of one process: its own connections' entries, and (here, for the memory
    engine) the whole table. Engines that cross processes subclass it (see the module
    docstring); ``publish`` sends a notification as any published message."""

    def __init__(self, publish: Callable[[Message], None]) -> None:
        self.publish = publish
        #: channel -> connection id -> info (JSON bytes): this process's connections only.
        self.local: dict[str, dict[str, bytes]] = {}
        #: channel -> its ``presence_ttl``, for the channels in :attr:`local`.
        self.ttls: dict[str, float] = {}

    def join(self, channel: str, conn_id: str, info: bytes, ttl: float) -> None:
        """Record ``conn_id`` in ``channel`` with ``info`` (replacing its earlier info)."""
        entries = self.local.get(channel)
        if entries is None:
            entries = self.local[channel] = {}
        entries[conn_id] = info
        self.ttls[channel] = ttl
        self.joined(channel, conn_id, info, ttl)

    def leave(self, channel: str, conn_id: str) -> None:
        """Remove ``conn_id`` from ``channel`` (nothing if it is not there)."""
        entries = self.local.get(channel)
        if entries is None:
            return
        info = entries.pop(conn_id, None)
        if info is None:
            return
        last = not entries
        if last:
            del self.local[channel]
            del self.ttls[channel]
        self.left(channel, conn_id, info, last)

    # -- what an engine does with them (the memory engine's here) ---------------------------

    def joined(self, channel: str, conn_id: str, info: bytes, ttl: float) -> None:
        """``conn_id`` joined ``channel``: tell the table, announce it."""
        self.announce(channel, "join", [(conn_id, info)])

    def left(self, channel: str, conn_id: str, info: bytes, last: bool) -> None:
        """``conn_id`` left ``channel`` (``last``: no local entry is left there)."""
        self.announce(channel, "leave", [(conn_id, info)])

    def announce(self, channel: str, kind: str, entries: list[tuple[str, bytes]]) -> None:
        """Publish a notification on the channel's notification channel."""
        payload = notice(channel, kind, entries)
        try:
            self.publish(Message(presence_channel(channel), payload, True))
        except Exception:
            log.exception("could not publish a presence notification on %r", channel)

    async def members(self, channel: str, ttl: float) -> dict[str, Any]:
        """``{connection id: info}`` of ``channel`` in the whole cluster."""
        return decode_entries(self.local.get(channel, {}).items())

    async def stop(self) -> None:
        """The server stops (its connections have left): finish what is on its way."""
