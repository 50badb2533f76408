"""The subscriptions of one process: channel or pattern -> subscribers.

Theory of operation
-------------------
A subscriber is either a connection that forwards messages to its client (a WebSocket: as
published, or forced binary; an SSE stream: as events), a handler bound to a connection (runs in
that connection's callback order and dies with it), or a connectionless handler (lives until
unsubscribed). One connection has at most one subscription per channel: subscribing again replaces
it. A channel name and a pattern are separate subscriptions: a message reaches a subscriber once
per subscription it matches (as with Redis, whose clients get a ``message`` and a ``pmessage``), so
a connection subscribed to ``chat.1`` and to the pattern ``chat.*`` gets a message on ``chat.1``
twice.

The registry tells its engine when a channel or pattern gets its first local subscriber and when
it loses its last one, so that engines which talk to other processes (the cluster master, Redis)
subscribe upstream once per process, whatever the number of local subscribers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .message import Message
from .patterns import compile_glob

__all__ = ["Handler", "Outbox", "Registry", "Subscriber"]

log = logging.getLogger("plezi")


class Subscriber(Protocol):
    """What the registry needs from a connection (WebSocket or SSE)."""

    def queue_frame(self, frame: bytes) -> None: ...
    def run_handler(self, handler: Handler, message: Message) -> None: ...


class Outbox(Protocol):
    """How the registry reaches connections (the server's is
    :class:`plezi.server.connection.Outbox`): queue one frame on many subscribers, and say
    whether a batch of published frames waits (``flush`` queues it), so that a connection
    queues nothing before it."""

    def fan_out(self, conns: Iterable[Any], frame: bytes, /) -> None: ...
    def set_pending(self, flush: Callable[[], object] | None, /) -> None: ...


class _EachOutbox:
    """The outbox of a registry used alone (no server): ``queue_frame`` on each subscriber."""

    @staticmethod
    def fan_out(conns: Iterable[Any], frame: bytes) -> None:
        for conn in conns:
            conn.queue_frame(frame)

    @staticmethod
    def set_pending(flush: Callable[[], object] | None) -> None:
        pass


class Handler:
    """A handler subscription: the function, how to call it, and who owns it."""

    __slots__ = ("call", "func", "is_async", "owner", "with_channel")

    def __init__(self, func: Callable[..., Any], owner: Subscriber | None) -> None:
        self.func = func
        self.owner = owner
        self.is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        self.with_channel = _takes_two(func)
        #: ``call(message)`` calls the handler: ``func(channel, message)`` or ``func(message)``.
        #: It bears the handler's name, so that a connection's error log names the handler.
        self.call: Callable[[Message], Any] = _caller(func, self.with_channel)


def _caller(func: Callable[..., Any], with_channel: bool) -> Callable[[Message], Any]:
    if with_channel:

        def call(message: Message) -> Any:
            return func(message.channel, message.value)

    else:

        def call(message: Message) -> Any:
            return func(message.value)

    call.__name__ = getattr(func, "__name__", type(func).__name__)
    return call


def _takes_two(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class _Topic:
    """Subscribers of one channel or one pattern."""

    __slots__ = (
        "deflate",
        "deflate_binary",
        "forward",
        "forward_binary",
        "forward_sse",
        "handlers",
        "match",
    )

    def __init__(self, match: Callable[[str], object] | None = None) -> None:
        self.forward: dict[Subscriber, None] = {}
        self.forward_binary: dict[Subscriber, None] = {}
        #: WebSockets with permessage-deflate: a message reaches them compressed once for all.
        self.deflate: dict[Subscriber, None] = {}
        self.deflate_binary: dict[Subscriber, None] = {}
        #: SSE streams: a message reaches them framed as an event, not as a WebSocket frame.
        self.forward_sse: dict[Subscriber, None] = {}
        self.handlers: dict[object, Handler] = {}
        self.match = match

    def __len__(self) -> int:
        return (
            len(self.forward)
            + len(self.forward_binary)
            + len(self.deflate)
            + len(self.deflate_binary)
            + len(self.forward_sse)
            + len(self.handlers)
        )

    def discard(self, key: object) -> None:
        self.forward.pop(key, None)  # type: ignore[call-overload]
        self.forward_binary.pop(key, None)  # type: ignore[call-overload]
        self.deflate.pop(key, None)  # type: ignore[call-overload]
        self.deflate_binary.pop(key, None)  # type: ignore[call-overload]
        self.forward_sse.pop(key, None)  # type: ignore[call-overload]
        self.handlers.pop(key, None)


Hook = Callable[[str, bool], None]

#: A batch is queued on its subscribers once it holds this many bytes, so that a flood published
#: in one iteration meets each connection's outgoing buffer cap every 64 KiB, not once at the end.
_BATCH_MAX = 64 * 1024


def _nothing(name: str, pattern: bool) -> None:
    pass


class Registry:
    """Local subscriptions and local delivery (see the module docstring)."""

    def __init__(
        self, on_first: Hook = _nothing, on_last: Hook = _nothing, *, outbox: Outbox | None = None
    ) -> None:
        self._channels: dict[str, _Topic] = {}
        self._patterns: dict[str, _Topic] = {}
        #: Called with (name, is_pattern) when a channel/pattern gains its first subscriber.
        self.on_first = on_first
        #: Called with (name, is_pattern) when a channel/pattern loses its last subscriber.
        self.on_last = on_last
        #: ``loop.call_soon`` while a server runs (the hub sets it): then consecutive messages
        #: to one topic are batched until the end of the read or loop iteration.
        self.schedule: Callable[[Callable[[], None]], object] | None = None
        self._batch: tuple[dict[Subscriber, None], list[bytes]] | None = None
        self._batch_size = 0
        box: Outbox = outbox if outbox is not None else _EachOutbox()
        #: Queues one frame on many subscribers (the outbox's, bound once: PERF).
        self.fan_out: Callable[[Iterable[Subscriber], bytes], None] = box.fan_out
        #: Tells the outbox that a batch waits (a flush function) or not (``None``).
        self._set_pending = box.set_pending
        #: Called with (handler, message) to run a connectionless handler.
        self.run_free_handler: Callable[[Handler, Message], None] = _run_inline

    # -- subscribing ------------------------------------------------------------------------

    def _topic(self, name: str, pattern: bool) -> _Topic:
        table = self._patterns if pattern else self._channels
        topic = table.get(name)
        if topic is None:
            topic = table[name] = _Topic(compile_glob(name) if pattern else None)
            self.on_first(name, pattern)
        return topic

    def forward(
        self,
        name: str,
        conn: Subscriber,
        *,
        binary: bool = False,
        pattern: bool = False,
        sse: bool = False,
    ) -> None:
        """Send every message on ``name`` straight to ``conn``'s client (``sse``: as events;
        ``binary`` does not apply). A connection whose ``deflate_broadcasts`` is true (a
        WebSocket that negotiated permessage-deflate) gets the message compressed once."""
        self.flush_batch()
        topic = self._topic(name, pattern)
        topic.discard(conn)
        if sse:
            topic.forward_sse[conn] = None
        elif getattr(conn, "deflate_broadcasts", False):
            (topic.deflate_binary if binary else topic.deflate)[conn] = None
        else:
            (topic.forward_binary if binary else topic.forward)[conn] = None

    def handle(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        owner: Subscriber | None = None,
        pattern: bool = False,
    ) -> None:
        """Call ``func`` for every message on ``name`` (bound to ``owner`` when given)."""
        self.flush_batch()
        topic = self._topic(name, pattern)
        key: object = owner if owner is not None else func
        topic.discard(key)
        topic.handlers[key] = Handler(func, owner)

    def hold(self, name: str, key: object, take: Callable[[Message], object]) -> Handler:
        """Subscribe ``key`` (a connection) to the channel ``name``, every message handed to
        ``take(message)`` at once: a recovery holds the live messages so while it reads the
        history; subscribing ``key`` again replaces this. Returns the subscription, for
        :meth:`holding`."""
        self.flush_batch()
        topic = self._topic(name, False)
        topic.discard(key)
        handler = topic.handlers[key] = Handler(take, None)
        handler.call = take
        return handler

    def holding(self, name: str, key: object, handler: Handler) -> bool:
        """Whether ``key``'s subscription to ``name`` is still ``handler`` (from :meth:`hold`)."""
        topic = self._channels.get(name)
        return topic is not None and topic.handlers.get(key) is handler

    def remove(self, name: str, key: object, *, pattern: bool = False) -> bool:
        """Remove ``key``'s (a connection's, or a connectionless handler's) subscription."""
        self.flush_batch()
        table = self._patterns if pattern else self._channels
        topic = table.get(name)
        if topic is None:
            return False
        before = len(topic)
        topic.discard(key)
        removed = before != len(topic)
        if not topic:
            del table[name]
            self.on_last(name, pattern)
        return removed

    def names(self) -> tuple[list[str], list[str]]:
        """The channels and patterns with at least one local subscriber."""
        return list(self._channels), list(self._patterns)

    def count(self, name: str, *, pattern: bool = False) -> int:
        """How many local subscribers ``name`` has."""
        topic = (self._patterns if pattern else self._channels).get(name)
        return 0 if topic is None else len(topic)

    # -- delivering -------------------------------------------------------------------------

    def _queue(self, subscribers: dict[Subscriber, None], frame: bytes) -> None:
        """Fan ``frame`` out, batched with the frames before it when they went to the same
        subscribers in this read or iteration.

        PERF: a burst of messages read at once costs one queued chunk per subscriber instead of
        one per message; a batch goes out early once it holds ``_BATCH_MAX`` bytes, so the cap
        of every subscriber is checked at least that often. Order is kept: the batch is flushed
        before anything else is queued on any connection (the outbox's ``set_pending``), before any
        subscription changes, at the end of the read and at the end of the loop iteration.
        """
        if self.schedule is None:
            self.fan_out(subscribers, frame)
            return
        batch = self._batch
        if batch is not None and batch[0] is subscribers:
            batch[1].append(frame)
            self._batch_size += len(frame)
            if self._batch_size >= _BATCH_MAX:
                self.flush_batch()
            return
        self.flush_batch()
        self._batch = (subscribers, [frame])
        self._batch_size = len(frame)
        self._set_pending(self.flush_batch)
        self.schedule(self.flush_batch)

    def flush_batch(self) -> None:
        """Queue the waiting batch on its subscribers (one chunk each)."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        self._set_pending(None)
        subscribers, frames = batch
        self.fan_out(subscribers, frames[0] if len(frames) == 1 else b"".join(frames))

    def deliver(self, message: Message) -> int:
        """Deliver ``message`` to every local subscriber; returns how many there were."""
        delivered = 0
        topic = self._channels.get(message.channel)
        if topic is not None:
            delivered += self._deliver(topic, message)
        if self._patterns:
            channel = message.channel
            for topic in list(self._patterns.values()):
                if topic.match is not None and topic.match(channel):
                    delivered += self._deliver(topic, message)
        return delivered

    def _deliver(self, topic: _Topic, message: Message) -> int:
        # PERF: framed once, the same bytes queued on every connection; queueing never runs
        # user code, so the dicts cannot change under the loops.
        forward = topic.forward
        if forward:
            self._queue(forward, message.frame())
        forward_binary = topic.forward_binary
        if forward_binary:
            self._queue(forward_binary, message.frame(True))
        deflate = topic.deflate
        if deflate:
            self._queue(deflate, message.deflated_frame())
        deflate_binary = topic.deflate_binary
        if deflate_binary:
            self._queue(deflate_binary, message.deflated_frame(True))
        forward_sse = topic.forward_sse
        if forward_sse:
            event = message.sse_frame()
            if event is not None:
                self._queue(forward_sse, event)
        handlers = topic.handlers
        if handlers:
            for handler in list(handlers.values()):
                if handler.owner is not None:
                    handler.owner.run_handler(handler, message)
                else:
                    self.run_free_handler(handler, message)
        return len(topic)


def _run_inline(handler: Handler, message: Message) -> None:
    try:
        handler.call(message)
    except Exception:
        log.exception("error in pub/sub handler %r", handler.func)
