"""The cluster engine: pub/sub between the worker processes of one machine, no Redis.

Theory of operation
-------------------
The master process runs a :class:`Relay` on a Unix socket; every worker connects to it with a
:class:`ClusterEngine`. A worker that publishes delivers the message to its own subscribers at once
and sends one frame to the master; the master forwards the frame's bytes, unparsed, to every other
worker, which delivers it locally. So each process receives each message once, and messages from
one publisher keep their order everywhere.

Wire format, one frame per message: ``!I`` length of the rest, ``!B`` flags (bit 0: text),
``!H`` channel length, the UTF-8 channel, the payload. A frame whose channel starts with
:data:`~.cluster_presence.CONTROL` is for the master (presence: joins, leaves, questions) or
from it (answers), never forwarded nor delivered (:mod:`.cluster_presence`).

*Channels with history* (:mod:`.history`): the master assigns positions and keeps the history.
A worker sends such a message to the master only (flag :data:`ASSIGN`; the payload starts with
the channel's ``!Id`` history size and TTL); the master gives it the next position, keeps it,
and sends it to every worker, the publisher included (flag :data:`POSITIONED`; the payload
starts with ``!B`` epoch length, the epoch, ``!Q`` offset). A history read is a request
(:data:`QUERY`: ``!Iqq`` request id, since, limit, then ``!Id``) answered on the same socket
(:data:`REPLY`: ``!I`` request id, the epoch, ``!QB`` last offset and completeness, then the
messages as :data:`POSITIONED` records): after every message positioned before it, so the read
never overtakes the live flow. Other records cost the master one head read each; it drops
a record whose head or channel does not fit in its length.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cluster_presence import CONTROL, ClusterPresence, MasterPresence
from .engine import Engine, Sink
from .history import HistoryPage, MemoryHistory, Positioned
from .message import Message
from .presence import Presence

if TYPE_CHECKING:
    from .channels import ChannelOptions

__all__ = ["ClusterEngine", "Relay", "decode_relay_records", "encode_relay_record"]

log = logging.getLogger("plezi")

_HEAD = struct.Struct("!IBH")
_CONTROL = CONTROL.encode()
_CONTROL_SIZE = len(_CONTROL)
_LEN = struct.Struct("!I")
_OPTIONS = struct.Struct("!Id")
_OFFSET = struct.Struct("!Q")
_QUERY = struct.Struct("!Iqq")
_PAGE = struct.Struct("!QB")
#: Flags beyond bit 0 (text): see the module docstring.
ASSIGN, POSITIONED, QUERY, REPLY = 2, 4, 8, 16
_SPECIAL = ASSIGN | QUERY
#: Frames a worker holds while it is not connected to the master, before dropping new ones.
MAX_BACKLOG = 10_000
#: Bytes the master queues for one worker that is not reading before it drops its messages.
MAX_RELAY_BUFFER = 64 * 1024 * 1024


def encode_relay_record(message: Message) -> bytes:
    """One relay record for ``message`` (its own wire format: length, kind, channel, payload;
    not a WebSocket frame)."""
    channel = message.channel.encode()
    rest = 3 + len(channel) + len(message.payload)
    return _HEAD.pack(rest, 1 if message.is_text else 0, len(channel)) + channel + message.payload


def _record(flags: int, channel: str, payload: bytes) -> bytes:
    name = channel.encode()
    return _HEAD.pack(3 + len(name) + len(payload), flags, len(name)) + name + payload


def encode_positioned(message: Positioned) -> bytes:
    """The :data:`POSITIONED` record of ``message`` (master to workers)."""
    epoch = message.epoch.encode()
    head = bytes((len(epoch),)) + epoch + _OFFSET.pack(message.offset)
    return _record(POSITIONED | message.is_text, message.channel, head + message.payload)


def _positioned(channel: str, flags: int, payload: bytes) -> Positioned:
    size = payload[0]
    epoch = payload[1 : 1 + size].decode()
    (offset,) = _OFFSET.unpack_from(payload, 1 + size)
    return Positioned(channel, payload[9 + size :], bool(flags & 1), epoch, offset)


def decode_relay_records(
    buffer: bytearray, on_reply: Callable[[str, bytes], None] | None = None
) -> list[Message]:
    """Take every complete relay record off the front of ``buffer`` (a :data:`REPLY` goes to
    ``on_reply(channel, payload)``)."""
    messages: list[Message] = []
    offset, size = 0, len(buffer)
    while size - offset >= 4:
        (length,) = _LEN.unpack_from(buffer, offset)
        end = offset + 4 + length
        if end > size:
            break
        _, flags, clen = _HEAD.unpack_from(buffer, offset)
        start = offset + 7
        channel = bytes(buffer[start : start + clen]).decode()
        if flags > 1:  # a channel with history (rare: one test for the common records)
            payload = bytes(buffer[start + clen : end])
            if flags & POSITIONED:
                messages.append(_positioned(channel, flags, payload))
            elif flags & REPLY and on_reply is not None:
                on_reply(channel, payload)
        else:
            messages.append(Message(channel, bytes(buffer[start + clen : end]), bool(flags & 1)))
        offset = end
    del buffer[:offset]
    return messages


class _WorkerLink(asyncio.Protocol):
    """A worker's end of the relay connection."""

    def __init__(self, engine: ClusterEngine) -> None:
        self.engine = engine
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        deliver = self.engine.sink.deliver
        for message in decode_relay_records(self.buffer, self.engine.answered):
            try:
                if message.channel.startswith(CONTROL):
                    self.engine.on_control(message)
                else:
                    deliver(message)
            except Exception:
                log.exception("error delivering a message from the cluster")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.engine.lost()


class ClusterEngine(Engine):
    """A worker's engine: local delivery plus the master relay (see the module docstring)."""

    name = "cluster"

    def __init__(
        self,
        sink: Sink,
        relay_path: str,
        *,
        on_lost: Callable[[], Any] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(sink)
        self.relay_path = relay_path
        self.on_lost = on_lost
        self.connect_timeout = connect_timeout
        self._link: _WorkerLink | None = None
        self._backlog: deque[bytes] = deque()
        self._dropped = 0
        self._stopping = False
        #: History reads waiting for the master's answer, by request id.
        self._reads: dict[int, asyncio.Future[bytes]] = {}
        self._next_read = 0

    def publish(self, message: Message) -> None:
        self.sink.deliver(message)
        self._send(encode_relay_record(message))

    def publish_recoverable(self, message: Message, options: ChannelOptions) -> None:
        """To the master only: it positions the message and sends it to every worker."""
        head = _OPTIONS.pack(options.history, options.history_ttl)
        self._send(_record(ASSIGN | message.is_text, message.channel, head + message.payload))

    async def history(
        self,
        channel: str,
        options: ChannelOptions,
        since: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        link = self._link
        if link is None or link.transport is None:
            raise ConnectionError("not connected to the cluster master")
        self._next_read += 1
        ident = self._next_read
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._reads[ident] = future
        query = _QUERY.pack(ident, -1 if since is None else since, -1 if limit is None else limit)
        options_head = _OPTIONS.pack(options.history, options.history_ttl)
        link.transport.write(_record(QUERY, channel, query + options_head))
        try:
            payload = await asyncio.wait_for(future, 10.0)
        finally:
            self._reads.pop(ident, None)
        size = payload[4]
        epoch = payload[5 : 5 + size].decode()
        top, complete = _PAGE.unpack_from(payload, 5 + size)
        rest = bytearray(payload[5 + size + _PAGE.size :])
        found = [m for m in decode_relay_records(rest) if isinstance(m, Positioned)]
        return HistoryPage(epoch, top, found, bool(complete))

    def answered(self, channel: str, payload: bytes) -> None:
        """The master's answer to a history read."""
        (ident,) = _LEN.unpack_from(payload)
        future = self._reads.get(ident)
        if future is not None and not future.done():
            future.set_result(payload)

    def make_presence(self) -> Presence:
        """Presence kept by the master (:mod:`.cluster_presence`)."""
        return ClusterPresence(self._send_control)

    def _send_control(self, verb: str, payload: bytes) -> None:
        self._send(encode_relay_record(Message(CONTROL + verb, payload, False)))

    def on_control(self, message: Message) -> None:
        """A control record from the master."""
        tracker = self._tracker
        if isinstance(tracker, ClusterPresence):
            tracker.on_control(message.channel[len(CONTROL) :], message.payload)

    def _send(self, frame: bytes) -> None:
        link = self._link
        if link is not None and link.transport is not None:
            link.transport.write(frame)
        elif len(self._backlog) < MAX_BACKLOG:
            self._backlog.append(frame)
        else:
            self._dropped += 1
            if self._dropped == 1:
                log.error("cluster relay unreachable: dropping messages for other workers")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        while True:
            try:
                _, link = await loop.create_unix_connection(
                    lambda: _WorkerLink(self), self.relay_path
                )
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self._link = link
        while self._backlog and link.transport is not None:
            link.transport.write(self._backlog.popleft())

    async def stop(self) -> None:
        self._stopping = True
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            link.transport.close()

    def lost(self) -> None:
        """The master went away."""
        self._link = None
        if not self._stopping:
            log.error("lost the connection to the cluster master; shutting down")
            if self.on_lost is not None:
                self.on_lost()

    def status(self) -> dict[str, object]:
        link = self._link
        return {
            "engine": self.name,
            "connected": link is not None and link.transport is not None,
            "dropped": self._dropped,
        }


class _MasterLink(asyncio.Protocol):
    """The master's end of one worker's relay connection: forwards frames, never parses them."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = bytearray()
        self.history = relay.history
        self.transport: asyncio.Transport | None = None
        self.dropping = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.relay.links.add(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        # PERF: only frame heads (length, flags, channel length) and the first byte of the
        # channel (a NUL may start a control record) are read; runs of whole frames are
        # forwarded as one slice each. Every read stays inside its own frame: a record shorter
        # than its head, or whose channel runs past its end, would put the master and the
        # workers out of step with the stream, so it is dropped here. Such a record may wait
        # for the next bytes to be dropped (a whole head is read first); a valid record never
        # waits, since its head is part of it.
        start = offset = 0
        size = len(buffer)
        while size - offset >= _HEAD.size:
            length, flags, clen = _HEAD.unpack_from(buffer, offset)
            end = offset + 4 + length
            if end > size:
                break
            if clen > length - 3:  # also a length under 3: its "head" is the next frame's
                if offset > start:
                    self.relay.forward(self, bytes(buffer[start:offset]))
                log.error("a malformed cluster record from a worker (length %d): dropped", length)
                start = end
            elif flags & _SPECIAL:
                if offset > start:
                    self.relay.forward(self, bytes(buffer[start:offset]))
                self._special(bytes(buffer[offset:end]))
                start = end
            elif (
                clen >= _CONTROL_SIZE
                and buffer[offset + 7] == 0
                and buffer[offset + 7 : offset + 7 + _CONTROL_SIZE] == _CONTROL
            ):
                if offset > start:
                    self.relay.forward(self, bytes(buffer[start:offset]))
                self.relay.control(self, bytes(buffer[offset:end]))
                start = end
            offset = end
        if offset > start:
            self.relay.forward(self, bytes(buffer[start:offset]))
        if offset:
            del buffer[:offset]

    def _special(self, record: bytes) -> None:
        """A message to position (sent to every worker) or a history read (answered here)."""
        try:
            self._answer_special(record)
        except (struct.error, UnicodeDecodeError, ValueError):  # a body too short for its kind
            log.exception("a malformed cluster record from a worker (flags %d): dropped", record[4])

    def _answer_special(self, record: bytes) -> None:
        _, flags, clen = _HEAD.unpack_from(record)
        channel = record[7 : 7 + clen].decode()
        body = record[7 + clen :]
        if flags & ASSIGN:
            count, ttl = _OPTIONS.unpack_from(body)
            options = _options(channel, count, ttl)
            message = Message(channel, body[_OPTIONS.size :], bool(flags & 1))
            frame = encode_positioned(self.history.add(message, options))
            for link in self.relay.links:
                link.write(frame)
            return
        ident, since, limit = _QUERY.unpack_from(body)
        count, ttl = _OPTIONS.unpack_from(body, _QUERY.size)
        page = self.history.read(
            channel,
            _options(channel, count, ttl),
            None if since < 0 else since,
            None if limit < 0 else limit,
        )
        epoch = page.epoch.encode()
        answer = [_LEN.pack(ident), bytes((len(epoch),)), epoch]
        answer.append(_PAGE.pack(page.offset, page.complete))
        answer += [encode_positioned(m) for m in page.messages]
        self.write(_record(REPLY, channel, b"".join(answer)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.links.discard(self)
        self.transport = None
        self.relay.presence.drop(self)

    def write(self, chunk: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size() > MAX_RELAY_BUFFER:
            if not self.dropping:
                self.dropping = True
                log.error("a worker is not reading cluster messages; dropping its messages")
            return
        self.dropping = False
        transport.write(chunk)


class Relay:
    """The master's relay server (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.links: set[_MasterLink] = set()
        #: The histories of the channels with one: positions are assigned here.
        self.history = MemoryHistory()
        self._server: asyncio.AbstractServer | None = None
        #: The cluster's presence table (:mod:`.cluster_presence`).
        self.presence = MasterPresence(self._broadcast, self._answer)

    async def start(self) -> None:
        """Listen on the Unix socket ``path``."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _MasterLink(self), self.path)

    def forward(self, origin: _MasterLink, chunk: bytes) -> None:
        """Send ``chunk`` (whole frames) to every worker but ``origin``."""
        for link in self.links:
            if link is not origin:
                link.write(chunk)

    def control(self, origin: _MasterLink, record: bytes) -> None:
        """A control record from a worker (one whole frame)."""
        try:
            messages = decode_relay_records(bytearray(record))
        except UnicodeDecodeError:
            log.exception("a control record from a worker with a malformed channel: dropped")
            return
        for message in messages:
            verb = message.channel[len(CONTROL) :]
            try:
                self.presence.on_control(origin, verb, message.payload)
            except (ValueError, UnicodeDecodeError):
                log.exception("a malformed control record from a worker: %r", verb)

    def _broadcast(self, message: Message) -> None:
        frame = encode_relay_record(message)
        for link in self.links:
            link.write(frame)

    def _answer(self, link: Any, verb: str, payload: bytes) -> None:
        link.write(encode_relay_record(Message(CONTROL + verb, payload, False)))

    async def stop(self) -> None:
        """Stop listening and close every link."""
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            if link.transport is not None:
                link.transport.close()
        if self._server is not None:
            await self._server.wait_closed()


def _options(channel: str, history: int, ttl: float) -> ChannelOptions:
    """The options a worker sent with a message or a read (the master may not know them)."""
    from .channels import ChannelOptions

    return ChannelOptions(channel, history=history, history_ttl=ttl)
