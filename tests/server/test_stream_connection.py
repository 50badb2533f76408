"""What WebSocket and SSE connections share, and the one door pub/sub reaches them through.

Both kinds of connection are :class:`~plezi.server.connection.StreamConnection`: an event stream
is not a WebSocket and carries no WebSocket session. The server keeps both in
``ServerState.streams`` (``write_to`` finds either there). Pub/sub reaches connections through
``plezi.server.connection.OUTBOX`` and writes no module-level value of the server layer.
"""

from __future__ import annotations

import ast
import time
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


def test_websocket_and_event_stream_share_a_base_and_one_table(
    serve: Callable[..., Running],
) -> None:
    tally = Events()
    ids: list[str] = []

    class Both:
        def on_open(self) -> None:
            ids.append(self.id)  # type: ignore[attr-defined]
            tally.add("open")

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/", Both)
    running = serve(app)
    stream = EventStream(running.port)
    stream.open()
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


def test_an_idle_connection_lets_go_of_its_write_queue_and_writes_again(
    serve: Callable[..., Running],
) -> None:
    """A held connection with nothing to send keeps no write queue (an empty list is 72 bytes,
    2% of one): none before its first write, and the reaper's sweep lets go of it once it is
    empty again. What is queued is never let go of, and writing afterwards works, on a
    WebSocket and on an event stream alike."""
    opened = Events()

    class Room:
        def on_open(self) -> None:
            self.subscribe("room")  # type: ignore[attr-defined]
            opened.add("open")

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/", Room)
    # The reaper sweeps the open streams every quarter of the shorter of the two: 0.1 s; no
    # ping (nor an event stream's keep-alive) is due within the test.
    running = serve(app, ping_interval=60, ping_timeout=0.4)
    stream = EventStream(running.port)
    stream.open()
    client = RawClient(running.port, "/")
    try:
        opened.wait_for("open", 2)
        conns = running.call(lambda: list(running.server.streams.values()))
        assert running.call(lambda: [conn._out for conn in conns]) == [None, None]

        def queue_then_sweep() -> list[Any]:
            plezi.publish("room", "kept")
            pending = OUTBOX.pending  # the publish's frames, queued now rather than later
            assert pending is not None
            pending()
            # Queued, not yet flushed: the sweep's release must leave it alone.
            for conn in conns:
                conn.release_idle()
            return [list(conn._out) for conn in conns]

        assert all(out for out in running.call(queue_then_sweep))
        assert client.recv_message(5 * UNIT).payload == b"kept"
        assert stream.event().data == "kept"
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: [conn._out for conn in conns]) != [None, None]:
            assert time.monotonic() < deadline, "the sweep kept the empty queues"
            time.sleep(0.05)
        running.call(lambda: plezi.publish("room", "again"))
        assert client.recv_message(5 * UNIT).payload == b"again"
        assert stream.event().data == "again"
    finally:
        client.close()
        stream.close()
