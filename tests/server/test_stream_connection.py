"""What WebSocket and SSE connections share, and the one door pub/sub reaches them through.

Both kinds of connection are :class:`~plezi.server.connection.StreamConnection`: an event stream
is not a WebSocket and carries no WebSocket session. The server keeps both in
``ServerState.streams`` (``write_to`` finds either there). Pub/sub reaches connections through
``plezi.server.connection.OUTBOX`` and writes no module-level value of the server layer.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsclient import RawClient, connect

import plezi
from helpers import UNIT, Events, Running
from plezi.protocol.connection import SessionLogic
from plezi.server.connection import OUTBOX, StreamConnection
from plezi.server.sse import SseConnection
from plezi.server.websocket import WebSocketConnection
from sseclient import EventStream

PUBSUB = Path(__file__).resolve().parents[2] / "src" / "plezi" / "pubsub"


def serve_both_kinds(
    serve: Callable[..., Running], on_open: Callable[[Any], None]
) -> tuple[Running, EventStream]:
    """Serve one controller at ``/`` that takes WebSockets and event streams alike
    (``on_open`` runs with the controller at each open), with an event stream open to it."""

    class Both:
        def on_open(self) -> None:
            on_open(self)

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/", Both)
    running = serve(app)
    stream = EventStream(running.port)
    stream.open()
    return running, stream


def test_websocket_and_event_stream_share_a_base_and_one_table(
    serve: Callable[..., Running],
) -> None:
    tally = Events()
    ids: list[str] = []

    def on_open(controller: Any) -> None:
        ids.append(controller.id)
        tally.add("open")

    running, stream = serve_both_kinds(serve, on_open)
    with connect(running.ws_url + "/"):
        tally.wait_for("open", 2)
        kinds = running.call(
            lambda: sorted(type(c).__name__ for c in running.server.streams.values())
        )
        conns = running.call(lambda: list(running.server.streams.values()))
        assert kinds == ["SseConnection", "WebSocketConnection"]
        assert all(isinstance(conn, StreamConnection) for conn in conns)
        sse = next(conn for conn in conns if isinstance(conn, SseConnection))
        ws = next(conn for conn in conns if isinstance(conn, WebSocketConnection))
        # An event stream has no WebSocket session: no frame reader, no close handshake.
        assert not isinstance(sse, SessionLogic | WebSocketConnection)
        assert not hasattr(sse, "reader")
        assert isinstance(ws, SessionLogic)
        # ``write_to`` reaches both kinds through the one table.
        for conn_id in ids:
            assert running.call(lambda conn_id=conn_id: plezi.write_to(conn_id, "hi"))
        assert stream.event().data == "hi"
    stream.sock.close()


def _server_names(tree: ast.Module) -> set[str]:
    """Names a module imports from the server layer (``from ..server.x import A``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module is not None:
            if node.module.split(".")[0] == "server":
                names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("plezi.server"):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node


def test_pubsub_writes_no_value_of_the_server_layer() -> None:
    offences = []
    for path in sorted(PUBSUB.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported = _server_names(tree)
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if not isinstance(target, ast.Attribute | ast.Subscript):
                    continue
                root = _root(target)
                if isinstance(root, ast.Name) and root.id in imported:
                    offences.append(f"{path.name}:{node.lineno}: {ast.unparse(target)}")
    assert offences == []


def test_a_write_queue_is_nothing_one_item_or_a_list(
    serve: Callable[..., Running],
) -> None:
    """A connection with nothing to send holds no write queue (an empty list is 72 bytes, 2% of
    a held connection); one message waits alone, in no list; a list from the second on. After
    the flush it holds nothing again, and every message arrives in order, on a WebSocket and
    on an event stream alike."""
    opened = Events()

    def on_open(controller: Any) -> None:
        controller.subscribe("room")
        opened.add("open")

    running, stream = serve_both_kinds(serve, on_open)
    client = RawClient(running.port, "/")
    try:
        opened.wait_for("open", 2)
        conns = running.call(lambda: list(running.server.streams.values()))
        assert running.call(lambda: [conn._out for conn in conns]) == [None, None]

        def publish_now(message: str) -> None:
            plezi.publish("room", message)
            pending = OUTBOX.pending  # the publish's frames, queued now rather than later
            assert pending is not None
            pending()

        def queue(messages: list[str]) -> list[Any]:
            for message in messages:
                publish_now(message)
            # Queued, not yet flushed (that is at the end of this loop iteration).
            return [conn._out for conn in conns]

        one = running.call(lambda: queue(["one"]))
        assert [type(out) for out in one] == [bytes, bytes]
        assert client.recv_message(5 * UNIT).payload == b"one"
        assert stream.event().data == "one"
        two = running.call(lambda: queue(["two", "three"]))
        assert [(type(out), len(out)) for out in two] == [(list, 2), (list, 2)]
        assert [client.recv_message(5 * UNIT).payload for _ in range(2)] == [b"two", b"three"]
        assert [event.data for event in stream.events(2)] == ["two", "three"]
        assert running.call(lambda: [conn._out for conn in conns]) == [None, None]
    finally:
        client.close()
        stream.close()
