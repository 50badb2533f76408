"""WebSockets through plezi's ASGI application, served by a real uvicorn over real sockets:
the same controller callbacks, JSON auto-dispatch, pub/sub and close codes as natively."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsclient import connect

import plezi
from helpers import UNIT, Events, loop_turns
from plezi.asgi import ASGIApp

T = 5 * UNIT


EVENTS = Events()


class Echo:
    def pre_connect(self) -> bool:
        if self.params.get("token") == "bad":  # type: ignore[attr-defined]
            return False
        self.response.headers["X-Hello"] = "yes"  # type: ignore[attr-defined]
        self.cookies["seen"] = "1"  # type: ignore[attr-defined]
        return True

    def on_open(self) -> None:
        self.write(f"welcome {self.params.get('name', '')}".strip())  # type: ignore[attr-defined]

    def on_message(self, data: str | bytes) -> None:
        if data == "close":
            self.close()  # type: ignore[attr-defined]
        elif data == "id":
            self.write(self.id)  # type: ignore[attr-defined]
        else:
            self.write(data)  # type: ignore[attr-defined]

    def on_close(self) -> None:
        EVENTS.add(("closed", self.params.get("name")))  # type: ignore[attr-defined]


class Slow:
    async def on_message(self, data: str) -> None:
        await loop_turns(int(data))  # done later, not at once: the order must hold
        self.write(data)  # type: ignore[attr-defined]


class Chat:
    auto_dispatch = True

    def on_open(self) -> None:
        self.subscribe("room")  # type: ignore[attr-defined]
        self.subscribe("handled", self.on_handled)  # type: ignore[attr-defined]

    def on_handled(self, message: str) -> None:
        self.write(f"handled: {message}")  # type: ignore[attr-defined]

    def say(self, msg: dict[str, Any]) -> None:
        self.publish("room", {"event": "said", "text": msg["text"]})  # type: ignore[attr-defined]

    def shout(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"event": "shouted", "text": msg["text"].upper()}

    def to(self, msg: dict[str, Any]) -> None:
        plezi.write_to(msg["id"], "direct")


class Plain:
    def index(self) -> str:
        return "no websocket here"


def app() -> plezi.App:
    a = plezi.App()
    for path, controller in {"/echo": Echo, "/slow": Slow, "/chat": Chat, "/plain": Plain}.items():
        a.route(path, controller)
    return a


@pytest.fixture
def server(uvicorn_serve: Any) -> Iterator[Any]:
    yield uvicorn_serve(ASGIApp(app(), limits=plezi.Limits(max_message_size=1000)))


def test_echo_text_and_binary_after_on_open(server: Any) -> None:
    with connect(f"{server.ws_url}/echo?name=ann") as ws:
        assert ws.response is not None
        assert ws.response.headers["x-hello"] == "yes"
        assert "seen=1" in ws.response.headers["set-cookie"]
        assert ws.recv(T) == "welcome ann"
        ws.send("héllo")
        assert ws.recv(T) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(T) == b"\x00\xff"
    EVENTS.take(("closed", "ann"))


def test_pre_connect_false_refuses_with_403(server: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}/echo?token=bad")
    assert info.value.response.status_code == 403


def test_route_without_websocket_and_unknown_path(server: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}/plain")
    assert info.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}/nowhere")
    assert info.value.response.status_code == 404


def test_async_callbacks_keep_their_order(server: Any) -> None:
    with connect(f"{server.ws_url}/slow") as ws:
        for n in ("5", "1", "3", "0"):
            ws.send(n)
        assert [ws.recv(T) for _ in range(4)] == ["5", "1", "3", "0"]


def test_json_event_dispatch_ack_and_errors(server: Any) -> None:
    with connect(f"{server.ws_url}/chat") as ws:
        ws.send(json.dumps({"event": "shout", "text": "hi", "_EID_": 7}))
        assert json.loads(ws.recv(T)) == {"event": "_ack_", "_EID_": 7}
        assert json.loads(ws.recv(T)) == {"event": "shouted", "text": "HI"}
        ws.send(json.dumps({"event": "nope"}))
        err = json.loads(ws.recv(T))
        assert (err["event"], err["status"]) == ("_err_", 404)
        ws.send("{not json")
        assert json.loads(ws.recv(T))["status"] == 400
        ws.send(json.dumps({"event": "shout", "text": "still open"}))
        assert json.loads(ws.recv(T))["text"] == "STILL OPEN"


def test_pub_sub_between_asgi_connections(server: Any) -> None:
    with connect(f"{server.ws_url}/chat") as a, connect(f"{server.ws_url}/chat") as b:
        # Both subscribed in on_open; a round trip on each proves on_open has run.
        for ws in (a, b):
            ws.send(json.dumps({"event": "shout", "text": "ready"}))
            assert json.loads(ws.recv(T))["text"] == "READY"
        a.send(json.dumps({"event": "say", "text": "hello room"}))
        expected = {"event": "said", "text": "hello room"}
        assert json.loads(a.recv(T)) == expected
        assert json.loads(b.recv(T)) == expected
        # A publish from another thread reaches them too, and a handler subscription.
        plezi.publish("room", "from a thread")
        assert a.recv(T) == b.recv(T) == "from a thread"
        plezi.publish("handled", "x")
        assert a.recv(T) == b.recv(T) == "handled: x"


def test_write_to_a_connection_by_id(server: Any) -> None:
    with connect(f"{server.ws_url}/echo") as target, connect(f"{server.ws_url}/chat") as sender:
        assert target.recv(T) == "welcome"
        target.send("id")
        conn_id = target.recv(T)
        sender.send(json.dumps({"event": "to", "id": conn_id}))
        assert target.recv(T) == "direct"


@pytest.mark.parametrize(
    ("name", "sent", "code"),
    [
        ("bob", "close", 1000),  # the controller's close()
        ("big", "é" * 501, 1009),  # 1002 bytes: over max_message_size
    ],
)
def test_server_close_codes(server: Any, name: str, sent: str, code: int) -> None:
    with connect(f"{server.ws_url}/echo?name={name}") as ws:
        assert ws.recv(T) == f"welcome {name}"
        ws.send("é" * 500)  # 1000 bytes: within the limit
        assert ws.recv(T) == "é" * 500
        ws.send(sent)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(T)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == code
    EVENTS.take(("closed", name))


def test_client_close_code_and_on_close(server: Any) -> None:
    with connect(f"{server.ws_url}/echo?name=cid") as ws:
        assert ws.recv(T) == "welcome cid"
        ws.close(4000, "bye")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 4000  # echoed by the ASGI server
    EVENTS.take(("closed", "cid"))


def test_origin_policy(uvicorn_serve: Any) -> None:
    server = uvicorn_serve(ASGIApp(app(), allowed_origins=("https://good.example",)))
    with connect(f"{server.ws_url}/echo", origin="https://good.example") as ws:  # type: ignore[arg-type]
        assert ws.recv(T) == "welcome"
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.ws_url}/echo", origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403


class Goodbye:
    loop: asyncio.AbstractEventLoop | None = None

    def on_message(self, data: str) -> None:
        Goodbye.loop = asyncio.get_running_loop()
        self.write(data)  # type: ignore[attr-defined]

    def on_shutdown(self) -> None:
        self.write("going away")  # type: ignore[attr-defined]

    def on_close(self) -> None:
        EVENTS.add("goodbye closed")


def test_lifespan_shutdown_closes_open_websockets(uvicorn_serve: Any) -> None:
    a = plezi.App()
    a.route("/", Goodbye)
    server = uvicorn_serve(a_asgi := ASGIApp(a))
    with connect(server.ws_url) as ws:
        ws.send("ping")
        assert ws.recv(T) == "ping"
        server.stop()  # uvicorn closes its WebSockets (1012) before the lifespan shutdown
        received = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                received.append(ws.recv(T))
    assert info.value.rcvd is not None
    assert received == []  # so on_shutdown never runs under uvicorn (see docs/asgi.md)
    assert info.value.rcvd.code in (1001, 1012)
    EVENTS.take("goodbye closed")
    assert a_asgi._host is None  # the lifespan shutdown ran: the pub/sub engine stopped


class Flood:
    def on_message(self, data: str) -> None:
        if data == "big":
            self.write(b"x" * 100_000)  # type: ignore[attr-defined]
            self.write(f"pending {self.pending > 0}")  # type: ignore[attr-defined]
        elif data == "flood":
            sent = 0
            while self.write(b"y" * 65536) and sent < 1000:  # type: ignore[attr-defined]
                sent += 1
            EVENTS.add(("flood stopped", sent < 1000))

    def on_drained(self) -> None:
        self.write("drained")  # type: ignore[attr-defined]

    def on_close(self) -> None:
        EVENTS.add("flood closed")


def test_pending_and_on_drained(uvicorn_serve: Any) -> None:
    a = plezi.App()
    a.route("/", Flood)
    server = uvicorn_serve(ASGIApp(a, limits=plezi.Limits(write_high_water=65536)))
    with connect(server.ws_url) as ws:
        ws.send("big")
        assert ws.recv(T) == b"x" * 100_000
        assert ws.recv(T) == "pending True"
        assert ws.recv(T) == "drained"


def test_outgoing_buffer_cap_drops_the_client(uvicorn_serve: Any) -> None:
    a = plezi.App()
    a.route("/", Flood)
    limits = plezi.Limits(max_outgoing_buffer=256 * 1024, write_high_water=65536)
    server = uvicorn_serve(ASGIApp(a, limits=limits))
    with connect(server.ws_url) as ws:
        ws.send("flood")
        EVENTS.take(("flood stopped", True))
        EVENTS.take("flood closed")
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(T)


def test_lifespan_shutdown_with_open_websockets_runs_on_shutdown(uvicorn_serve: Any) -> None:
    # What an ASGI server that sends lifespan.shutdown before closing its WebSockets gets.
    a = plezi.App()
    a.route("/", Goodbye)
    asgi = ASGIApp(a, shutdown_timeout=2 * UNIT)
    server = uvicorn_serve(asgi)
    with connect(server.ws_url) as ws:
        ws.send("ping")
        assert ws.recv(T) == "ping"
        assert Goodbye.loop is not None
        done = asyncio.run_coroutine_threadsafe(asgi.shutdown(), Goodbye.loop)
        assert ws.recv(T) == "going away"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(T)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
    done.result(T)
    EVENTS.take("goodbye closed")
