"""What one server counts, for ``plezi.stats()`` and ``/metrics`` (see :mod:`plezi.web.metrics`).

Theory of operation
-------------------
Counting must cost (nearly) nothing on the hot paths, so nothing here is called per message.
A connection counts in plain ``int`` slots of its own (``_received``, ``_sent``, and the bytes it
handed to the transport, ``_flushed``, which flow control already keeps); when it ends, its
figures are added to the server's :class:`ServerStats` (:meth:`ServerStats.fold`). Rare events
(a refused connection, a slow consumer) add to :class:`ServerStats` directly. A reader
(:meth:`ServerStats.snapshot`) adds the open connections' figures to the ended ones': the cost
of a scrape grows with the open connections, the cost of a message does not.

HTTP replies' bytes are not counted: one ``int`` addition per reply costs about 300 of the
47,000 instructions of a hello-world request (+0.65%; +0.9% pipelined), over the 0.5% such a
figure may cost (docs/metrics.md).

Recoveries (:mod:`plezi.pubsub.recovery`) are rare (one per channel per reconnection): they
add to :class:`ServerStats` directly (:meth:`ServerStats.recovery`).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any, Protocol

__all__ = ["KINDS", "RECOVERY_FAILURES", "REFUSALS", "ServerStats"]

#: The kinds of connections, as ``plezi_connections{kind=...}`` names them.
KINDS = ("websocket", "sse", "http")
#: Why a connection was refused: ``capacity`` (``max_connections``: 503), ``origin``
#: (``allowed_origins``: 403), ``handshake`` (a bad WebSocket handshake: 400),
#: ``pre_connect`` (the controller said no, a bad token included: 403).
REFUSALS = ("capacity", "origin", "handshake", "pre_connect")
#: Why a recovery failed (``recovered: false``): ``epoch`` (the history was lost and started
#: again: another epoch), ``gap`` (messages after the client's position are gone: too old, or
#: past the history's size; or a position past the stream's end), ``unreadable`` (the history
#: could not be read: Redis down...), ``no_history`` (the channel keeps none), ``superseded``
#: (the connection subscribed again, or unsubscribed, meanwhile).
RECOVERY_FAILURES = ("epoch", "gap", "unreadable", "no_history", "superseded")


class _Server(Protocol):
    """What :meth:`ServerStats.snapshot` reads of a :class:`~.state.ServerState` (which
    imports this module)."""

    @property
    def connections(self) -> Sized: ...
    @property
    def streams(self) -> dict[int, Any]: ...


class ServerStats:
    """Counters of one server, plain ints (see the module docstring)."""

    __slots__ = (
        "bytes_sent",
        "received",
        "recovered",
        "recovered_messages",
        "recovery_failures",
        "refused",
        "sent",
        "slow_disconnected",
        "slow_dropped",
    )

    def __init__(self) -> None:
        #: Messages received from clients, messages written to them by the application, and
        #: bytes written to them, by kind (``websocket``, ``sse``), of connections that ended.
        self.received = dict.fromkeys(KINDS[:2], 0)
        self.sent = dict.fromkeys(KINDS[:2], 0)
        self.bytes_sent = dict.fromkeys(KINDS[:2], 0)
        #: Connections refused, by reason (:data:`REFUSALS`).
        self.refused = dict.fromkeys(REFUSALS, 0)
        #: Messages dropped for a slow consumer (``slow_consumer="drop"``), and slow consumers
        #: disconnected (``"disconnect"``).
        self.slow_dropped = 0
        self.slow_disconnected = 0
        #: Recoveries that brought a client up to date, the messages they replayed from the
        #: history, and recoveries that failed, by reason (:data:`RECOVERY_FAILURES`).
        self.recovered = 0
        self.recovered_messages = 0
        self.recovery_failures = dict.fromkeys(RECOVERY_FAILURES, 0)

    def refuse(self, reason: str) -> None:
        """Count one refused connection (``reason``: one of :data:`REFUSALS`)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def recovery(self, failure: str | None, replayed: int = 0) -> None:
        """Count one recovery: ``failure`` ``None`` (recovered, ``replayed`` messages from
        the history), else why it failed (one of :data:`RECOVERY_FAILURES`)."""
        if failure is None:
            self.recovered += 1
            self.recovered_messages += replayed
        else:
            self.recovery_failures[failure] = self.recovery_failures.get(failure, 0) + 1

    def fold(self, conn: Any) -> None:
        """Add the figures of ``conn``, a WebSocket or event stream that ended."""
        kind = "sse" if conn.is_sse else "websocket"
        self.received[kind] += conn._received
        self.sent[kind] += conn._sent
        self.bytes_sent[kind] += conn._flushed

    def snapshot(self, server: _Server | None) -> dict[str, Any]:
        """The figures of ``server`` now (these counters are its): the ended connections'
        plus the open ones'. ``None``: no server runs (no open connection)."""
        received, sent, sizes = dict(self.received), dict(self.sent), dict(self.bytes_sent)
        open_ = dict.fromkeys(KINDS, 0)
        if server is not None:
            streams = list(server.streams.values())
            for conn in streams:
                kind = "sse" if conn.is_sse else "websocket"
                open_[kind] += 1
                received[kind] += conn._received
                sent[kind] += conn._sent
                sizes[kind] += conn._flushed
            # ``connections`` holds every open connection: HTTP ones and the streams.
            open_["http"] = max(0, len(server.connections) - len(streams))
        failures = dict(self.recovery_failures)
        return {
            "connections": open_,
            "messages_received": received,
            "messages_sent": sent,
            "bytes_sent": sizes,
            "refused": dict(self.refused),
            "slow_consumers": {
                "dropped": self.slow_dropped,
                "disconnected": self.slow_disconnected,
            },
            "recoveries": {"recovered": self.recovered, "failed": sum(failures.values())},
            "recovery_failures": failures,
            "recovered_messages": self.recovered_messages,
        }
