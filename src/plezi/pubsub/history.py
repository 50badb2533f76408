"""Positions and history of recoverable channels (``plezi.channel(name, history=N)``).

Theory of operation
-------------------
Each message published on a channel with history gets a *position*: an ``epoch`` (a string that
names the stream of that channel; it changes whenever the history may have been lost) and an
``offset`` (1 for the first message of the stream, then one more per message). Whoever keeps the
history assigns the position, so it is the same everywhere: this process (memory engine), the
master (``--workers``) or Redis (a Lua script per message, or per batch of one channel's messages
published in one loop iteration: offsets, append and publish at once).

A positioned message is a :class:`Positioned`: the same :class:`~.message.Message` with the
position added to what clients receive. A JSON object gets one more member, ``"_pos"``, built
once per message and process like the frame itself::

    {"text": "hi", "_pos": {"channel": "chat", "epoch": "5f3a9c1e", "offset": 42}}

Anything else (a ``str`` that is not a JSON object, bytes, a JSON array) goes out unchanged: a
client cannot tell its position (see docs/delivery.md). Handlers on the server receive the value
as published; :attr:`Positioned.offset` and :attr:`Positioned.epoch` are on the message.

:class:`MemoryHistory` keeps the history of one process: per channel, at most ``history``
messages no older than ``history_ttl`` seconds (trimmed whenever the channel is written or read),
plus the channel's offset.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..protocol.sse import sse_event
from .message import Message

if TYPE_CHECKING:
    from .channels import ChannelOptions

__all__ = [
    "HistoryPage",
    "MemoryHistory",
    "Position",
    "Positioned",
    "new_epoch",
    "wire_payload",
]

#: The member a JSON object message gets on a recoverable channel.
POSITION_KEY = "_pos"


def new_epoch() -> str:
    """A fresh epoch: 8 random hex digits (a new stream, unrelated to any before it)."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a channel's stream: the last ``offset`` it has seen in ``epoch``."""

    epoch: str
    offset: int


def wire_payload(payload: bytes, is_text: bool, channel: str, epoch: str, offset: int) -> bytes:
    """``payload`` as clients receive it on a recoverable channel: a JSON object with the
    ``"_pos"`` member added (last, so that it wins over an app's own member of that name);
    anything else unchanged."""
    if not is_text:
        return payload
    body = payload.rstrip()
    if not body.startswith(b"{") or not body.endswith(b"}"):
        return payload
    try:
        if not isinstance(orjson.loads(body), dict):
            return payload
    except orjson.JSONDecodeError:
        return payload  # a str that looks like an object but is not one: never altered
    position = b'{"channel":%s,"epoch":%s,"offset":%d}' % (
        orjson.dumps(channel),
        orjson.dumps(epoch),
        offset,
    )
    inner = body[1:-1].strip()
    return b'{%s%s"%s":%s}' % (
        inner,
        b"," if inner else b"",
        POSITION_KEY.encode(),
        position,
    )


class Positioned(Message):
    """A message of a recoverable channel, with its position (see the module docstring).

    Frames and SSE events carry the position (built once, cached like any message's frames);
    :attr:`value` is what was published."""

    __slots__ = ("_wire", "epoch", "offset")

    def __init__(
        self, channel: str, payload: bytes, is_text: bool, epoch: str, offset: int
    ) -> None:
        super().__init__(channel, payload, is_text)
        self.epoch = epoch
        self.offset = offset
        self._wire: bytes | None = None

    @classmethod
    def at(cls, message: Message, epoch: str, offset: int) -> Positioned:
        """``message`` at position ``(epoch, offset)``."""
        return cls(message.channel, message.payload, message.is_text, epoch, offset)

    @property
    def position(self) -> Position:
        """The message's position."""
        return Position(self.epoch, self.offset)

    @property
    def wire(self) -> bytes:
        """The payload clients receive (with ``"_pos"`` for a JSON object)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = wire_payload(
                self.payload, self.is_text, self.channel, self.epoch, self.offset
            )
        return wire

    def sse_frame(self) -> bytes | None:
        if self._sse is None or self._sse.__class__ is bytes:
            return self._sse
        wire = self.wire
        try:
            event: bytes | None = sse_event(wire.decode())
        except UnicodeDecodeError:
            event = super().sse_frame()  # logs, and remembers that there is no event
        self._sse = event
        return event

    def __repr__(self) -> str:
        return f"<Positioned {self.channel!r} {self.epoch}:{self.offset} {len(self.payload)} bytes>"


@dataclass(slots=True)
class HistoryPage:
    """What a history read found for one channel.

    ``epoch`` and ``offset`` are the stream's current position (``offset`` 0: nothing was ever
    published in this epoch); ``messages`` the messages asked for, oldest first; ``complete``
    whether they are every message after the ``since`` offset asked for (``False``: some are
    gone, too old or past the history's size, and ``messages`` is then empty)."""

    epoch: str
    offset: int
    messages: list[Positioned] = field(default_factory=list)
    complete: bool = True

    def recovers(self, since: Position) -> bool:
        """Whether this page (read with ``since.offset``) brings a client at ``since`` up to
        date with nothing missing: same epoch, and complete."""
        return self.complete and since.epoch == self.epoch and since.offset <= self.offset


def select(
    epoch: str,
    top: int,
    newest: list[Positioned],
    since: int | None,
    limit: int | None,
) -> HistoryPage:
    """The page for a read of ``since``/``limit`` from the messages still kept (``newest``:
    oldest first, the last one at offset ``top``)."""
    if since is None:
        kept = newest if limit is None else newest[len(newest) - limit :] if limit else []
        return HistoryPage(epoch, top, kept)
    if since >= top:
        return HistoryPage(epoch, top, [], complete=since == top)
    first = newest[0].offset if newest else top + 1
    if first > since + 1:
        return HistoryPage(epoch, top, [], complete=False)
    start = since + 1 - first
    end = len(newest) if limit is None else min(len(newest), start + limit)
    return HistoryPage(epoch, top, newest[start:end])


class _Stream:
    """One channel's history in this process: its offset and its last messages."""

    __slots__ = ("entries", "offset")

    def __init__(self, size: int) -> None:
        self.offset = 0
        #: ``(time.monotonic(), message)``, oldest first; at most ``history`` of them.
        self.entries: deque[tuple[float, Positioned]] = deque(maxlen=size)

    def trim(self, ttl: float, now: float) -> None:
        entries = self.entries
        cutoff = now - ttl
        while entries and entries[0][0] < cutoff:
            entries.popleft()


class MemoryHistory:
    """The histories kept by this process (memory engine; the master under ``--workers``).

    The epoch is drawn when the process starts, so that positions from an earlier run are never
    taken for positions of this one. Memory: at most ``history`` messages per channel, none older
    than ``history_ttl``, plus one small record per channel that had a message."""

    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or new_epoch()
        self._streams: dict[str, _Stream] = {}

    def add(self, message: Message, options: ChannelOptions) -> Positioned:
        """Give ``message`` the next position of its channel and keep it."""
        stream = self._streams.get(message.channel)
        if stream is None or stream.entries.maxlen != options.history:
            old = stream
            stream = self._streams[message.channel] = _Stream(options.history)
            if old is not None:  # the size changed: keep the offset and what fits
                stream.offset = old.offset
                stream.entries.extend(old.entries)
        offset = stream.offset = stream.offset + 1
        if isinstance(message, Positioned) and not message.offset:
            positioned = message  # made unpositioned by the hub: one object, not two
            positioned.epoch = self.epoch
            positioned.offset = offset
        else:
            positioned = Positioned.at(message, self.epoch, offset)
        now = time.monotonic()
        entries = stream.entries
        if entries and entries[0][0] < now - options.history_ttl:
            stream.trim(options.history_ttl, now)
        entries.append((now, positioned))
        return positioned

    def read(
        self,
        channel: str,
        options: ChannelOptions,
        since: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """The messages after offset ``since`` (all kept ones when ``None``), at most ``limit``
        (the newest ``limit`` ones when ``since`` is ``None``), oldest first."""
        stream = self._streams.get(channel)
        if stream is None:
            return select(self.epoch, 0, [], since, limit)
        stream.trim(options.history_ttl, time.monotonic())
        return select(self.epoch, stream.offset, [m for _, m in stream.entries], since, limit)

    def stats(self) -> dict[str, Any]:
        """Channels and messages kept (for tests and ``pubsub_status``)."""
        return {
            "channels": len(self._streams),
            "messages": sum(len(s.entries) for s in self._streams.values()),
        }
