"""plezi.testing.TestClient against real controllers: every request method, cookies, redirects,
WebSockets, event streams, pub/sub from the test, the graceful shutdown at exit, and exceptions
raised in application code re-raised in the test."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

import plezi
from helpers import UNIT
from plezi.errors import error_observers
from plezi.testing import (
    ConnectionRejected,
    ServerSentEvent,
    TestClient,
    WebSocketClosed,
)

WAIT = 10 * UNIT


class Boom(Exception):
    """Raised by the controllers below on purpose."""


def make_app(log: list[str] | None = None) -> plezi.App:
    """An app with an HTTP resource, a WebSocket room (auto-dispatch), a raw WebSocket, an
    event stream, and actions that fail."""
    events = log if log is not None else []
    app = plezi.App()

    class Items:
        def index(self) -> dict[str, Any]:
            return {
                "method": self.request.method,
                "params": self.params,
                "agent": self.request.headers.get("x-agent"),
                "cookies": dict(self.request.cookies),
            }

        def show(self) -> str:
            return f"item {self.params['id']}"

        def create(self) -> dict[str, Any] | bytes:
            if "content-type" not in self.request.headers:
                return self.request.body  # raw content, echoed
            self.response.status = 201
            return {"created": self.params, "type": self.request.headers.get("content-type")}

        def update(self) -> dict[str, Any]:
            return {"updated": self.params["id"], "with": self.params}

        def delete(self) -> str:
            return f"deleted {self.params['id']}"

        def login(self) -> bool:
            self.cookies.set("user", self.params.get("name", "anon"))
            return self.redirect_to("/items/whoami", 303)

        def whoami(self) -> str:
            return self.cookies.get("user", "nobody")

        def logout(self) -> str:
            del self.cookies["user"]
            return "bye"

        def fail(self) -> str:
            raise Boom("an HTTP action failed")

    class Room:
        auto_dispatch = True

        def pre_connect(self) -> bool:
            if self.params.get("token") == "bad":
                return False
            self.response.headers["X-Room"] = "lobby"
            return True

        def on_open(self) -> None:
            events.append("open")
            self.subscribe("room")

        def say(self, msg: dict[str, Any]) -> dict[str, Any]:
            return {"event": "said", "text": msg["text"]}

        def explode(self, msg: dict[str, Any]) -> None:
            raise Boom("an event failed")

        def leave(self, msg: dict[str, Any]) -> None:
            self.close()

        def on_shutdown(self) -> None:
            events.append("shutdown")
            self.write('{"event": "bye"}')

        def on_close(self) -> None:
            events.append("close")

    class Echo:
        def on_message(self, data: str | bytes) -> None:
            if data == "boom":
                raise Boom("on_message failed")
            self.write(data)

    class Feed:
        def on_message(self, data: str | bytes) -> None:
            pass

        def pre_connect(self) -> bool:
            return self.params.get("token") != "bad"

        def on_sse(self) -> None:
            self.write_event("first", event="greeting", id=1)
            self.write("multi\nline")
            self.subscribe("news")

        def on_close(self) -> None:
            events.append("feed closed")

    class Finite:
        def on_message(self, data: str | bytes) -> None:
            pass

        def on_sse(self) -> None:
            self.write("only")
            self.close()

    app.route("/items", Items)
    app.route("/room", Room)
    app.route("/echo", Echo)
    app.route("/feed", Feed)
    app.route("/finite", Finite)
    return app


# -- HTTP ---------------------------------------------------------------------------------


def test_every_method_reaches_its_action() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        r = client.get("/items", params={"q": "x", "tag": ["a", "b"]}, headers={"X-Agent": "t"})
        assert r.status_code == 200
        assert r.json() == {
            "method": "GET",
            "params": {"q": "x", "tag": "b"},
            "agent": "t",
            "cookies": {},
        }
        assert client.get("/items/7").text == "item 7"

        r = client.post("/items", json={"name": "a", "n": 1})
        assert (r.status_code, r.json()) == (
            201,
            {"created": {"name": "a", "n": 1}, "type": "application/json"},
        )
        r = client.post("/items", data={"name": "b"})
        assert r.json()["created"] == {"name": "b"}
        assert r.json()["type"] == "application/x-www-form-urlencoded"

        assert client.put("/items/3", json={"v": 2}).json() == {
            "updated": "3",
            "with": {"v": 2, "id": "3"},
        }
        assert client.patch("/items/4", data={"v": "5"}).json()["updated"] == "4"
        assert client.delete("/items/5").text == "deleted 5"
        assert client.post("/items", content=b"\x00\x01raw").content == b"\x00\x01raw"


def test_response_headers_text_and_head_and_options() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        r = client.get("/items/9")
        assert r.headers["Content-Type"] == r.headers["content-type"]
        assert r.headers["content-type"].startswith("text/html")
        assert "CONTENT-LENGTH" in r.headers
        assert r.text == "item 9"
        assert r.content == b"item 9"
        head = client.head("/items/9")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == str(len(b"item 9"))
        assert client.options("/items").status_code in (200, 204, 404, 405)
        assert client.get("/nowhere").status_code == 404


def test_cookies_are_kept_between_requests_and_redirects_followed() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        r = client.get("/items/login", params={"name": "ada"})
        assert (r.status_code, r.text) == (200, "ada")
        assert r.url.endswith("/items/whoami")
        assert client.cookies == {"user": "ada"}
        assert client.get("/items/whoami").text == "ada"
        assert client.get("/items").json()["cookies"] == {"user": "ada"}
        # a cookie for one request only, with the kept ones
        sent = client.get("/items", cookies={"extra": "1"}).json()["cookies"]
        assert sent == {"user": "ada", "extra": "1"}
        assert client.cookies == {"user": "ada"}
        bye = client.get("/items/logout")
        assert bye.cookies == {"user": ""}
        assert client.get("/items/whoami").text == "nobody"
        client.set_cookie("user", "grace")
        assert client.get("/items/whoami").text == "grace"


def test_redirects_can_be_left_to_the_test() -> None:
    with TestClient(make_app(), follow_redirects=False, timeout=WAIT) as client:
        r = client.get("/items/login", params={"name": "ada"})
        assert r.status_code == 303
        assert r.headers["location"] == "/items/whoami"
        assert r.cookies == {"user": "ada"}
        assert client.get("/items/whoami", follow_redirects=True).text == "ada"


def test_plain_use_starts_lazily_and_close_stops() -> None:
    app = make_app()
    client = TestClient(app, timeout=WAIT)
    try:
        assert client.get("/items/1").text == "item 1"
        port = client.port
    finally:
        client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get("/items/1")


def test_options_that_cannot_apply_are_refused() -> None:
    with pytest.raises(plezi.ConfigError, match="port"):
        TestClient(make_app(), port=8080)
    with pytest.raises(plezi.ConfigError, match="unknown"):
        TestClient(make_app(), max_bodysize=10)
    with TestClient(make_app(), max_body_size=10, timeout=WAIT) as client:
        assert client.post("/items", content=b"x" * 100).status_code == 413


def test_only_one_body_is_accepted() -> None:
    with TestClient(make_app(), timeout=WAIT) as client, pytest.raises(TypeError, match="one"):
        client.post("/items", json={}, data={})


# -- WebSocket ----------------------------------------------------------------------------


def test_websocket_text_bytes_json_and_close() -> None:
    with (
        TestClient(make_app(), timeout=WAIT) as client,
        client.websocket_connect("/echo") as ws,
    ):
        ws.send_text("hello")
        assert ws.receive_text() == "hello"
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
        ws.send_json({"a": [1, 2]})
        assert ws.receive_json() == {"a": [1, 2]}
        ws.send_bytes(b"bin")
        with pytest.raises(TypeError, match="binary"):
            ws.receive_text()
        with pytest.raises(TimeoutError):
            ws.receive_text(timeout=0.2 * UNIT)
        ws.close(4000)
        assert ws.close_code == 4000  # the server echoes the client's code


def test_websocket_auto_dispatch_headers_and_server_close() -> None:
    with (
        TestClient(make_app(), timeout=WAIT) as client,
        client.websocket_connect("/room", headers={"X-Test": "1"}) as ws,
    ):
        ws.send_json({"event": "say", "text": "hi"})
        assert ws.receive_json() == {"event": "said", "text": "hi"}
        ws.send_json({"event": "leave"})
        with pytest.raises(WebSocketClosed) as closed:
            ws.receive_text()
        assert closed.value.code == 1000
        assert ws.close_code == 1000
        with pytest.raises(WebSocketClosed):
            ws.send_text("too late")


def test_websocket_refused_handshake() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        with pytest.raises(ConnectionRejected) as refused:
            client.websocket_connect("/room", params={"token": "bad"})
        assert refused.value.status_code == 403
        with pytest.raises(ConnectionRejected) as missing:
            client.websocket_connect("/items")
        assert missing.value.status_code == 400


def test_websocket_subprotocols() -> None:
    app = plezi.App()

    class Proto:
        def pre_connect(self) -> bool:
            offered = self.request.headers.get("sec-websocket-protocol", "")
            if "chat.v2" in offered:
                self.response.headers["Sec-WebSocket-Protocol"] = "chat.v2"
            return True

        def on_message(self, data: str | bytes) -> None:
            self.write(data)

    app.route("/", Proto)
    with (
        TestClient(app, timeout=WAIT) as client,
        client.websocket_connect("/", subprotocols=["chat.v1", "chat.v2"]) as ws,
    ):
        assert ws.subprotocol == "chat.v2"


# -- SSE ----------------------------------------------------------------------------------


def test_events_parses_names_ids_and_lines_and_ends_with_the_stream() -> None:
    log: list[str] = []
    with TestClient(make_app(log), timeout=WAIT) as client:
        with client.events("/feed") as stream:
            assert stream.status_code == 200
            assert next(stream) == ServerSentEvent("first", "greeting", "1")
            assert next(stream) == ServerSentEvent("multi\nline", "message", "1")
            with pytest.raises(TimeoutError):
                stream.receive(timeout=0.2 * UNIT)
        assert list(client.events("/finite")) == [ServerSentEvent("only")]
        with pytest.raises(ConnectionRejected) as refused:
            client.events("/feed", params={"token": "bad"})
        assert refused.value.status_code == 403


# -- pub/sub ------------------------------------------------------------------------------


def test_publish_from_the_test_reaches_websockets_and_streams() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        with client.websocket_connect("/room") as a, client.websocket_connect("/room") as b:
            plezi.publish("room", {"event": "news", "n": 1})
            assert a.receive_json() == {"event": "news", "n": 1}
            assert b.receive_json() == {"event": "news", "n": 1}
        with client.events("/feed") as stream:
            next(stream), next(stream)
            plezi.publish("news", "extra")
            assert next(stream).data == "extra"


# -- shutdown -----------------------------------------------------------------------------


def test_exit_runs_on_shutdown_and_on_close() -> None:
    log: list[str] = []
    with TestClient(make_app(log), timeout=WAIT) as client:
        ws = client.websocket_connect("/room")
        stream = client.events("/feed")
        next(stream)
        assert log == ["open"]
    assert sorted(log) == sorted(["open", "shutdown", "close", "feed closed"])
    assert log.index("shutdown") < log.index("close")
    assert ws.close_code == 1001
    assert ws.receive_json() == {"event": "bye"}  # written in on_shutdown, delivered first
    with pytest.raises(WebSocketClosed):
        ws.receive_text()


# -- exceptions in application code -------------------------------------------------------


def test_an_http_action_exception_is_raised_by_the_request() -> None:
    with TestClient(make_app(), timeout=WAIT) as client:
        with pytest.raises(Boom, match="an HTTP action failed"):
            client.get("/items/fail")
        assert client.get("/items/1").text == "item 1"  # raised once


def test_a_websocket_callback_exception_is_raised_while_receiving() -> None:
    with (
        TestClient(make_app(), timeout=WAIT) as client,
        client.websocket_connect("/echo") as ws,
    ):
        ws.send_text("boom")
        # well before the timeout: the wait looks for server exceptions as it goes
        with pytest.raises(Boom, match="on_message failed"):
            ws.receive_text(timeout=60 * UNIT)


def test_async_callback_and_action_exceptions_are_raised() -> None:
    app = plezi.App()

    class Slow:
        async def index(self) -> str:
            raise Boom("an async action failed")

        async def on_message(self, data: str | bytes) -> None:
            raise Boom("an async on_message failed")

    app.route("/", Slow)
    with TestClient(app, timeout=WAIT) as client:
        with pytest.raises(Boom, match="an async action failed"):
            client.get("/")
        with client.websocket_connect("/") as ws:
            ws.send_text("x")
            with pytest.raises(Boom, match="an async on_message failed"):
                ws.receive_text(timeout=60 * UNIT)


def test_an_event_exception_is_raised_at_the_next_call() -> None:
    with (
        TestClient(make_app(), timeout=WAIT) as client,
        client.websocket_connect("/room") as ws,
    ):
        ws.send_json({"event": "explode"})
        with pytest.raises(Boom, match="an event failed"):
            ws.receive_json()


def test_an_exception_is_raised_at_exit() -> None:
    app = plezi.App()

    class Closing:
        def on_message(self, data: str | bytes) -> None:
            pass

        def on_close(self) -> None:
            raise Boom("on_close failed")

    app.route("/", Closing)
    client = TestClient(app, timeout=WAIT)
    with pytest.raises(Boom, match="on_close failed"), client:
        client.websocket_connect("/")
    assert not error_observers  # the client's observer is gone


def test_a_failing_test_keeps_its_own_exception() -> None:
    with (
        pytest.raises(AssertionError) as failed,
        TestClient(make_app(), timeout=WAIT) as client,
        client.websocket_connect("/echo") as ws,
    ):
        ws.send_text("boom")
        raise AssertionError("the test's own failure")
    notes = getattr(failed.value, "__notes__", [])
    assert any("on_message failed" in note for note in notes), notes


def test_exceptions_can_be_kept_instead() -> None:
    with TestClient(make_app(), raise_server_exceptions=False, timeout=WAIT) as client:
        r = client.get("/items/fail")
        assert (r.status_code, r.text) == (500, "Internal Server Error\n")
        assert [type(e) for e in client.server_exceptions] == [Boom]


def test_two_clients_see_only_their_own_server_exceptions() -> None:
    with (
        TestClient(make_app(), timeout=WAIT) as first,
        TestClient(make_app(), raise_server_exceptions=False, timeout=WAIT) as second,
    ):
        assert second.get("/items/fail").status_code == 500
        assert first.get("/items/1").text == "item 1"
        assert len(second.server_exceptions) == 1
        assert not first.server_exceptions
        assert threading.active_count() >= 3  # two server threads and this one
