"""Engines: how a published message reaches the other processes (or not)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .presence import Presence

if TYPE_CHECKING:
    from .channels import ChannelOptions
    from .history import HistoryPage, MemoryHistory
    from .message import Message

__all__ = ["Engine", "MemoryEngine", "Sink"]


class Sink(Protocol):
    """What an engine hands incoming messages to (the :class:`~plezi.pubsub.hub.Hub`)."""

    def deliver(self, message: Message) -> None: ...
    def flush(self) -> None:
        """The end of a read from another process: fan out what ``deliver`` left batched."""


class Engine:
    """The in-process engine's interface; other engines extend it.

    ``publish`` must deliver each message exactly once to every subscriber in every process the
    engine reaches, this one included.
    """

    name = "base"
    #: A history read answers after every message published before it has been delivered here
    #: (the history and the live flow come the same way); ``False`` for Redis, where a read
    #: may overtake the live flow (see :mod:`.recovery`).
    history_in_order = True
    #: The presence table, made on first use (see :attr:`presence`).
    _tracker: Presence | None = None

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    @property
    def presence(self) -> Presence:
        """Who is in the presence channels (:mod:`.presence`), as this engine keeps it."""
        tracker = self._tracker
        if tracker is None:
            tracker = self._tracker = self.make_presence()
        return tracker

    @property
    def presence_if_made(self) -> Presence | None:
        """The presence table if something used it, else ``None`` (never makes one)."""
        return self._tracker

    def make_presence(self) -> Presence:
        """This engine's presence table: the process's own (one process)."""
        return Presence(self.publish)

    def publish(self, message: Message) -> None:
        """Send ``message`` to every process (this one included)."""
        raise NotImplementedError

    def publish_recoverable(self, message: Message, options: ChannelOptions) -> None:
        """Send ``message``, published on a channel with history, to every process: with its
        position (see :mod:`.history`). By default this process assigns positions and keeps
        the history (right for one process only)."""
        self.sink.deliver(self.local_history.add(message, options))

    async def history(
        self,
        channel: str,
        options: ChannelOptions,
        since: int | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """Read ``channel``'s history (see :meth:`.history.MemoryHistory.read`)."""
        return self.local_history.read(channel, options, since, limit)

    async def subscription_live(self, name: str) -> None:
        """Return once a message published on ``name`` from now on reaches this process (an
        engine that subscribes upstream waits for the confirmation): a recovery subscribes,
        then waits for this, then reads the history."""

    @property
    def local_history(self) -> MemoryHistory:
        """The history kept in this process (made on first use: most apps have none)."""
        kept: MemoryHistory | None = self.__dict__.get("_local_history")
        if kept is None:
            from .history import MemoryHistory

            kept = self.__dict__["_local_history"] = MemoryHistory()
        return kept

    def subscribed(self, name: str, pattern: bool) -> None:
        """This process now has a subscriber for ``name`` (engines that filter upstream)."""

    def unsubscribed(self, name: str, pattern: bool) -> None:
        """This process has no subscriber left for ``name``."""

    async def start(self) -> None:
        """Connect (called on the server's loop when it starts)."""

    async def stop(self) -> None:
        """Disconnect (called during shutdown, after connections closed)."""

    def status(self) -> dict[str, object]:
        """A description of the engine's state for ``plezi.pubsub_status()``."""
        return {"engine": self.name, "connected": True}


class MemoryEngine(Engine):
    """One process: a published message goes straight to the local subscribers."""

    name = "memory"

    def publish(self, message: Message) -> None:
        self.sink.deliver(message)
