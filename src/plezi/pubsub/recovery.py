"""Recovery: a connection that comes back gets what it missed on a channel, then the live flow.

Theory of operation
-------------------
A client that reconnects says which position it had reached on each recoverable channel (the
``_recover`` query parameter: see :func:`parse_positions` and docs/delivery.md). When its
controller subscribes to one of those channels:

1. the connection is subscribed at once, but each live message is *held* (kept in a list for
   this connection) instead of sent;
2. once the engine confirms the subscription is live upstream (Redis), the history after the
   client's offset is read;
3. in one step, with nothing able to run in between: the outcome is announced (a
   ``{"event": "_recover_", ...}`` message to the client, then the controller's
   ``on_recover(channel, recovered)``), the missed messages are queued, then the held ones
   that the history did not already bring (an offset above the last replayed one), and the
   held subscription is replaced by the ordinary one.

So the client gets every message after its position exactly once, in order, even while the
channel is busy during the read. When the history cannot bring the client up to date (another
epoch: the history was lost; or messages missing: too old, or past the history's size) nothing
is replayed, ``recovered`` is ``False``, and the live flow starts at the subscription.

Each outcome is counted in the server's :class:`~plezi.server.stats.ServerStats` (recovered,
with the messages replayed, or failed, by reason: see :func:`failure_reason`), for
``plezi.stats()`` and ``/metrics``; a connection that closes before its outcome is not counted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from .channels import options_for
from .history import HistoryPage, Position, Positioned
from .registry import Handler

if TYPE_CHECKING:
    from .channels import ChannelOptions
    from .hub import Hub
    from .message import Message

__all__ = [
    "RECOVER_EVENT",
    "RECOVER_PARAM",
    "failure_reason",
    "parse_positions",
    "recover",
    "recovery_notice",
    "start_recovery",
]

log = logging.getLogger("plezi")

#: The query parameter that carries a reconnecting client's positions.
RECOVER_PARAM = "_recover"
#: The event of the message that tells a client how the recovery of a channel went.
RECOVER_EVENT = "_recover_"
#: Channels one connection may ask to recover (a bound: the parameter comes from the client).
MAX_POSITIONS = 256


def parse_positions(query_string: str) -> dict[str, Position] | None:
    """The positions in a request's ``_recover`` query parameter (``None`` when absent).

    The value is a JSON object, ``{"<channel>": ["<epoch>", <offset>], ...}``. A value that is
    not one (or names more than :data:`MAX_POSITIONS` channels) is logged and ignored: the
    connection then recovers nothing, as a new one."""
    if RECOVER_PARAM not in query_string:
        return None
    raw = next((v for k, v in parse_qsl(query_string) if k == RECOVER_PARAM), None)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
        if not isinstance(value, dict) or len(value) > MAX_POSITIONS:
            raise ValueError(f"not an object of at most {MAX_POSITIONS} channels")
        positions = {}
        for channel, pos in value.items():
            if (
                not isinstance(pos, list)
                or len(pos) != 2
                or not isinstance(pos[0], str)
                or isinstance(pos[1], bool)
                or not isinstance(pos[1], int)
                or pos[1] < 0
            ):
                raise ValueError(f"bad position for {channel!r}: {pos!r}")
            positions[channel] = Position(pos[0], pos[1])
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        log.warning("ignoring the %s query parameter: %s", RECOVER_PARAM, exc)
        return {}
    return positions


def failure_reason(page: HistoryPage | None, since: Position) -> str:
    """Why ``page`` (``None``: the history could not be read) does not recover a client at
    ``since``: one of :data:`plezi.server.stats.RECOVERY_FAILURES`."""
    if page is None:
        return "unreadable"
    # (Same epoch: messages are missing, or the client's offset is past the stream's end.)
    return "epoch" if since.epoch != page.epoch else "gap"


def recovery_notice(channel: str, recovered: bool, page: HistoryPage | None) -> str:
    """The message that tells the client how the recovery of ``channel`` went; it carries the
    stream's current position, where the client is now."""
    notice: dict[str, Any] = {"event": RECOVER_EVENT, "channel": channel, "recovered": recovered}
    if page is not None:
        notice["epoch"] = page.epoch
        notice["offset"] = page.offset
    return orjson.dumps(notice).decode()


async def recover(
    hub: Hub,
    conn: Any,
    channel: str,
    since: Position,
    options: ChannelOptions,
    *,
    held: list[Message],
    holder: Handler,
    replay: Callable[[Message], object],
    subscribe: Callable[[], object],
    done: Callable[[bool, HistoryPage | None], object],
) -> None:
    """Recover ``channel`` for ``conn`` from ``since`` (see the module docstring), once
    ``conn`` holds the channel (:meth:`.registry.Registry.hold`: ``holder``, taking live
    messages into ``held``; done before this runs, at the subscribe itself).

    ``replay(message)`` sends one message the way the final subscription will; ``subscribe()``
    makes the final subscription; ``done(recovered, page)`` announces the outcome (``page`` is
    ``None`` when the history could not be read). Nothing happens if the connection closes; if
    it subscribes again (or unsubscribes) meanwhile, the outcome is ``recovered`` false."""
    registry = hub.registry
    stats = hub.server.stats if hub.server is not None else None
    page: HistoryPage | None = None
    try:
        await hub.engine.subscription_live(channel)
        page = await hub.engine.history(channel, options, since.offset, None)
    except Exception as exc:  # noqa: BLE001 - Redis down, for one: recovered is False
        log.warning("could not read the history of %r to recover a connection: %s", channel, exc)
    if not conn.is_open:
        return  # its cleanup removed the subscription
    if not registry.holding(channel, conn, holder):
        # Subscribed again (or unsubscribed) meanwhile: nothing is replayed, and the client
        # must know it, or the gap would be silent.
        if stats is not None:
            stats.recovery("superseded")
        done(False, page)
        return
    recovered = page is not None and page.recovers(since)
    if stats is not None:
        if recovered and page is not None:
            stats.recovery(None, len(page.messages))
        else:
            stats.recovery(failure_reason(page, since))
    done(recovered, page)
    epoch, last = "", -1
    if recovered and page is not None:
        for replayed in page.messages:
            replay(replayed)
        epoch = page.epoch
        last = page.messages[-1].offset if page.messages else since.offset
    caught_up = not recovered or hub.engine.history_in_order
    for message in held:
        # Live messages the history brought already are dropped; the rest follow, in order.
        if not isinstance(message, Positioned) or message.epoch != epoch or message.offset > last:
            replay(message)
            caught_up = True
        elif message.offset == last:
            caught_up = True
    if caught_up:
        subscribe()
        return

    # The history was read on another connection than the live flow (Redis) and came back
    # first: the live flow has still to bring some of the replayed messages. Keep dropping
    # them; the first newer one ends the recovery.
    def behind(message: Message) -> None:
        if isinstance(message, Positioned) and message.epoch == epoch and message.offset <= last:
            return
        subscribe()  # replaces this holder: the next messages go the usual way
        replay(message)

    holder.call = behind


class _Call:
    """``func(*args)`` run through a connection's callback order (``run_handler``)."""

    __slots__ = ("args", "func", "is_async")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args
        self.is_async = inspect.iscoroutinefunction(func)

    def call(self, _message: object) -> Any:
        return self.func(*self.args)


def start_recovery(
    controller: Any,
    conn: Any,
    channel: str,
    since: Position,
    handler: Callable[..., Any] | None,
    binary: bool,
) -> bool:
    """Subscribe ``conn`` to ``channel`` through a recovery from ``since`` (``handler`` and
    ``binary`` as :meth:`plezi.Controller.subscribe` takes them); ``False`` when the channel has
    no history (the client is told ``recovered: false`` and the caller subscribes as usual)."""
    from .hub import hub

    options = options_for(channel)
    if options is None or not options.history or hub.server is None:
        if hub.server is not None:
            hub.server.stats.recovery("no_history")
        conn.send(recovery_notice(channel, False, None))
        _tell_controller(controller, conn, channel, False)
        return False
    registry = hub.registry
    replay: Callable[[Message], object]
    subscribe: Callable[[], object]
    if handler is None:
        if conn.is_sse:

            def replay(message: Message) -> None:
                event = message.sse_frame()
                if event is not None:
                    conn.queue_frame(event)

            def subscribe() -> None:
                registry.forward(channel, conn, sse=True)

        else:

            def replay(message: Message) -> None:
                conn.queue_frame(message.frame(binary))

            def subscribe() -> None:
                registry.forward(channel, conn, binary=binary)

    else:
        bound = Handler(handler, conn)

        def replay(message: Message) -> None:
            conn.run_handler(bound, message)

        def subscribe() -> None:
            registry.handle(channel, handler, owner=conn)

    def done(recovered: bool, page: HistoryPage | None) -> None:
        conn.send(recovery_notice(channel, recovered, page))
        _tell_controller(controller, conn, channel, recovered)

    # Held from now on, not from when the task starts: a subscribe that follows in the same
    # callback must replace this one, not be replaced by it.
    held: list[Message] = []
    holder = registry.hold(channel, conn, held.append)
    task = recover(
        hub,
        conn,
        channel,
        since,
        options,
        held=held,
        holder=holder,
        replay=replay,
        subscribe=subscribe,
        done=done,
    )
    hub.server.spawn(task)
    return True


def _tell_controller(controller: Any, conn: Any, channel: str, recovered: bool) -> None:
    """Call the controller's ``on_recover(channel, recovered)``, if it has one, in the
    connection's callback order."""
    callback = getattr(controller, "on_recover", None)
    if callback is not None:
        conn.run_handler(_Call(callback, channel, recovered), None)
