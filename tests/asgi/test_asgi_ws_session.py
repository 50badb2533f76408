"""The ASGI WebSocket over the sans-I/O session: messages handed to the ASGI server as they are
(no frame built and read back), a failed connection delivers nothing more. Real uvicorn, real
sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from wsclient import connect

import plezi
from helpers import UNIT, Events
from plezi.asgi import ASGIApp

T = 5 * UNIT

EVENTS = Events()


class Text(str):
    """A ``str`` subclass: still a text message."""


class Kinds:
    def on_message(self, data: str | bytes) -> None:
        EVENTS.add(("got", data))
        if data == "kinds":
            for item in ("é", b"\x00", bytearray(b"ab"), memoryview(b"cd"), Text("sub")):
                self.write(item)  # type: ignore[attr-defined]
            self.write({"json": 1})  # type: ignore[attr-defined]

    def on_close(self) -> None:
        conn = self._pl_conn  # type: ignore[attr-defined]
        rcvd = conn.close_rcvd
        EVENTS.add(("closed", rcvd and rcvd[0], conn.close_by))


@pytest.fixture
def server(uvicorn_serve: Any) -> Iterator[Any]:
    app = plezi.App()
    app.route("/kinds", Kinds)
    yield uvicorn_serve(ASGIApp(app, limits=plezi.Limits(max_message_size=100)))


def test_each_kind_of_write_arrives_as_its_message(server: Any) -> None:
    with connect(f"{server.ws_url}/kinds") as ws:
        ws.send("kinds")
        got = [ws.recv(T) for _ in range(6)]
        ws.close(4000, "bye")
    assert got == ["é", b"\x00", b"ab", b"cd", "sub", '{"json":1}']
    # The ASGI server did the handshake; the session records the peer's close.
    EVENTS.take(("closed", 4000, "remote"))


def test_nothing_reaches_the_controller_after_the_connection_failed(server: Any) -> None:
    with connect(f"{server.ws_url}/kinds") as ws:
        ws.send("x" * 101)  # over max_message_size: the session fails the connection (1009)
        ws.send("after")  # already on its way: must not reach on_message
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(T)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with EVENTS.changed:
        assert EVENTS.changed.wait_for(lambda: any(i[0] == "closed" for i in EVENTS.events), T)
        closed = [i for i in EVENTS.events if i[0] == "closed"]
    assert closed[0][2] == "error"  # we failed the connection
    assert ("got", "after") not in EVENTS.events
