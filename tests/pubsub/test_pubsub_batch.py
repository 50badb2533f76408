"""Batched fan-out keeps order: messages read at once and published to one topic are queued as
one chunk per subscriber, but never reordered against other channels, direct writes, or
subscription changes made in the same read."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from wsclient import RawClient

import plezi
from helpers import UNIT
from plezi.protocol.frames import OP_TEXT, encode_frame

MASK = b"abcd"


pytestmark = pytest.mark.usefixtures("no_leaks")


class Hub:
    """Commands, one per message: ``pub <channel> <text>``, ``say <text>`` (a direct write to
    the sender), ``sub <channel>`` (subscribe the sender)."""

    def on_open(self) -> None:
        self.subscribe("a")  # type: ignore[attr-defined]
        self.subscribe("b")  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        verb, _, rest = data.partition(" ")
        if verb == "pub":
            channel, _, text = rest.partition(" ")
            self.publish(channel, text)  # type: ignore[attr-defined]
        elif verb == "say":
            self.write(rest)  # type: ignore[attr-defined]
        elif verb == "sub":
            self.subscribe(rest)  # type: ignore[attr-defined]
            self.write(f"subscribed {rest}")  # type: ignore[attr-defined]


def burst(client: RawClient, *messages: str) -> None:
    """Every message in one TCP write: the server reads them in one go."""
    client.send_raw(b"".join(encode_frame(OP_TEXT, m.encode(), mask=MASK) for m in messages))


def texts(ws: ClientConnection, n: int) -> list[str]:
    return [str(ws.recv(timeout=5 * UNIT)) for _ in range(n)]


def start(serve: Any) -> tuple[Any, ClientConnection, RawClient]:
    app = plezi.App()
    app.route("/", Hub)
    running = serve(app)
    from wsclient import connect

    listener = connect(running.ws_url + "/").__enter__()
    assert listener.recv(timeout=5 * UNIT) == "ready"
    sender = RawClient(running.port, "/")
    return running, listener, sender


def test_order_is_kept_across_channels_in_one_read(serve: Any) -> None:
    _running, listener, sender = start(serve)
    try:
        burst(sender, "pub a 1", "pub a 2", "pub b 3", "pub a 4", "pub b 5", "pub b 6")
        assert texts(listener, 6) == ["1", "2", "3", "4", "5", "6"]
    finally:
        listener.close()
        sender.close()


def test_direct_writes_and_publishes_keep_their_order(serve: Any) -> None:
    running, listener, sender = start(serve)
    sender_ws = None
    try:
        # The listener sends: its own direct replies interleave with what it publishes.
        from wsclient import connect

        sender_ws = connect(running.ws_url + "/").__enter__()
        assert sender_ws.recv(timeout=5 * UNIT) == "ready"
        sender_ws.send("pub a x")
        sender_ws.send("say direct")
        sender_ws.send("pub a y")
        assert texts(sender_ws, 3) == ["x", "direct", "y"]
        assert texts(listener, 2) == ["x", "y"]
    finally:
        listener.close()
        sender.close()
        if sender_ws is not None:
            sender_ws.close()


def test_a_subscription_made_in_the_same_read_gets_only_later_messages(serve: Any) -> None:
    _running, listener, sender = start(serve)
    try:
        assert sender.recv_frame().payload == b"ready"
        listener.send("sub c")
        assert listener.recv(timeout=5 * UNIT) == "subscribed c"
        # One read: publish 1 (batched for c's subscribers: the listener), subscribe the sender
        # to c, publish 2. The sender must get 2 and not 1; the listener gets both.
        burst(sender, "pub c 1", "sub c", "pub c 2")
        assert sender.recv_frame().payload == b"subscribed c"
        assert sender.recv_frame().payload == b"2"
        assert texts(listener, 2) == ["1", "2"]
    finally:
        listener.close()
        sender.close()
