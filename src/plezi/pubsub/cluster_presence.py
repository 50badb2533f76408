"""Presence under ``--workers`` (no Redis): the master keeps the table.

Theory of operation
-------------------
A worker tells the master of each join and leave of its connections with a *control record* on
its relay connection (the relay's record format, on a channel that starts with
:data:`CONTROL`, which no user channel can: names starting with ``\\x00`` are refused). The
master keeps ``channel -> connection id -> info`` and which worker's link each entry came from,
and publishes every ``join`` and ``leave`` notification to every worker, the one that joined
included. A question (``plezi.presence``) is a control record too, answered to the worker that
asked; it travels behind that worker's own joins and leaves on the same socket, so the answer
includes them.

When a worker's link ends (the worker died, or stopped), the master drops all its entries and
publishes their leaves at once: nothing waits for a TTL. The master itself dying ends every
worker (they shut down), so its table never outlives them.

Control payloads (``\\x00`` separates fields; an info is JSON, which never holds a raw NUL, and a
channel goes last, so it may hold anything): ``join``: id, info, channel; ``leave``: id,
channel; ``who``: request number, channel; the master's ``members``: request number, a JSON
object of the entries.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import PleziError
from .message import Message
from .presence import Presence, notice, presence_channel

__all__ = ["CONTROL", "ClusterPresence", "MasterPresence"]

#: The channel prefix of a control record (master <-> worker, never delivered to subscribers).
CONTROL = "\x00ctl:"
#: Seconds a worker waits for the master's answer to a presence question.
_ANSWER_TIMEOUT = 10.0


class ClusterPresence(Presence):
    """A worker's side: joins, leaves and questions go to the master."""

    def __init__(self, send: Callable[[str, bytes], None]) -> None:
        super().__init__(self._no_publish)
        #: ``send(verb, payload)`` writes a control record to the master (or its backlog).
        self.send = send
        self._asked: dict[int, asyncio.Future[bytes]] = {}
        self._numbers = itertools.count(1)

    @staticmethod
    def _no_publish(message: Message) -> None:  # the master announces joins and leaves
        raise AssertionError("the master publishes presence notifications")

    def joined(self, channel: str, conn_id: str, info: bytes, ttl: float) -> None:
        self.send("join", b"%s\x00%s\x00%s" % (conn_id.encode(), info, channel.encode()))

    def left(self, channel: str, conn_id: str, info: bytes, last: bool) -> None:
        self.send("leave", b"%s\x00%s" % (conn_id.encode(), channel.encode()))

    async def members(self, channel: str, ttl: float) -> dict[str, Any]:
        number = next(self._numbers)
        answer = self._asked[number] = asyncio.get_running_loop().create_future()
        try:
            self.send("who", b"%d\x00%s" % (number, channel.encode()))
            data = await asyncio.wait_for(answer, _ANSWER_TIMEOUT)
        except TimeoutError:
            raise PleziError(
                f"the cluster master did not answer a presence question in {_ANSWER_TIMEOUT:g}s"
            ) from None
        finally:
            self._asked.pop(number, None)
        result: dict[str, Any] = orjson.loads(data)
        return result

    def on_control(self, verb: str, payload: bytes) -> None:
        """A control record from the master."""
        if verb == "members":
            number, _, data = payload.partition(b"\x00")
            answer = self._asked.get(int(number))
            if answer is not None and not answer.done():
                answer.set_result(data)


class MasterPresence:
    """The master's table (see the module docstring). ``broadcast(message)`` sends a
    notification to every worker; ``answer(link, verb, payload)`` one control record to one."""

    def __init__(
        self,
        broadcast: Callable[[Message], None],
        answer: Callable[[Any, str, bytes], None],
    ) -> None:
        self.broadcast = broadcast
        self.answer = answer
        #: channel -> connection id -> info (JSON bytes).
        self.table: dict[str, dict[str, bytes]] = {}
        #: worker link -> the (channel, id) entries it added.
        self.by_link: dict[Any, set[tuple[str, str]]] = {}

    def on_control(self, link: Any, verb: str, payload: bytes) -> None:
        """A control record from the worker at ``link``."""
        if verb == "join":
            conn_id, info, channel = payload.split(b"\x00", 2)
            self._join(link, channel.decode(), conn_id.decode(), info)
        elif verb == "leave":
            conn_id, channel = payload.split(b"\x00", 1)
            self._leave(link, channel.decode(), conn_id.decode())
        elif verb == "who":
            number, channel = payload.split(b"\x00", 1)
            entries = self.table.get(channel.decode(), {})
            body = b",".join(orjson.dumps(i) + b":" + info for i, info in entries.items())
            self.answer(link, "members", number + b"\x00{" + body + b"}")

    def _join(self, link: Any, channel: str, conn_id: str, info: bytes) -> None:
        self.table.setdefault(channel, {})[conn_id] = info
        self.by_link.setdefault(link, set()).add((channel, conn_id))
        self._announce(channel, "join", [(conn_id, info)])

    def _leave(self, link: Any, channel: str, conn_id: str) -> None:
        entries = self.table.get(channel)
        info = entries.pop(conn_id, None) if entries is not None else None
        if info is None:
            return
        if not entries:
            del self.table[channel]
        owned = self.by_link.get(link)
        if owned is not None:
            owned.discard((channel, conn_id))
        self._announce(channel, "leave", [(conn_id, info)])

    def drop(self, link: Any) -> None:
        """The worker at ``link`` is gone: its entries leave, one notification per channel."""
        gone: dict[str, list[tuple[str, bytes]]] = {}
        for channel, conn_id in self.by_link.pop(link, ()):
            entries = self.table.get(channel)
            info = entries.pop(conn_id, None) if entries is not None else None
            if info is not None:
                gone.setdefault(channel, []).append((conn_id, info))
            if entries is not None and not entries:
                del self.table[channel]
        for channel, left in gone.items():
            self._announce(channel, "leave", left)

    def _announce(self, channel: str, kind: str, entries: list[tuple[str, bytes]]) -> None:
        payload = notice(channel, kind, entries)
        self.broadcast(Message(presence_channel(channel), payload, True))
