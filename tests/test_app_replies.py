"""What :meth:`plezi.App.handle` answers is data, never HTTP/1.1 bytes (the server layer renders
them, the ASGI adapter hands them over as they are), and :meth:`plezi.App.connect` routes a
WebSocket an ASGI server accepted already, without a handshake to check.

``App`` is sans-I/O: a :class:`Request` in, data out; no server needed to look at what it says.
"""

from __future__ import annotations

from typing import Any

import orjson

import plezi
from plezi.asgi.scope import reply_messages
from plezi.http.request import Request
from plezi.http.response import Accept, Reply

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": KEY,
    "sec-websocket-version": "13",
}


class Pages:
    def index(self) -> str:
        return "Hello World!"

    def show(self) -> dict[str, Any]:
        return {"id": self.params["id"]}  # type: ignore[attr-defined]


class Chat:
    def pre_connect(self) -> bool:
        self.seen = dict(self.request.headers)  # type: ignore[attr-defined]
        return self.params.get("token") != "bad"  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        pass


def make_app() -> plezi.App:
    app = plezi.App()
    app.route("/chat", Chat)
    app.route("/pages", Pages)
    return app


def request(method: str, target: str, headers: dict[str, str] | None = None) -> Request:
    path, _, query = target.partition("?")
    return Request(method, target, path, query, headers or {}, b"", "1.1", None, "http", True)


def test_handle_answers_with_data() -> None:
    app = make_app()
    # The hello-world path: the body of a plain 200 text/html reply, nothing rendered.
    assert app.handle(request("GET", "/pages")) == b"Hello World!"
    assert app.handle(request("HEAD", "/pages")) == b"Hello World!"  # the server drops it
    reply = app.handle(request("GET", "/pages/7"))
    assert type(reply) is Reply
    assert (reply.status, list(reply.headers)) == (200, [("content-type", "application/json")])
    assert orjson.loads(reply.body) == {"id": "7"}
    missing = app.handle(request("GET", "/nowhere"))
    assert isinstance(missing, Reply)
    assert (missing.status, missing.body) == (404, b"Not Found\n")
    wrong = app.handle(request("DELETE", "/pages"))
    assert isinstance(wrong, Reply)
    assert wrong.status == 405
    assert ("allow", "GET, HEAD") in wrong.headers


def test_handle_accepts_a_websocket_and_an_event_stream() -> None:
    app = make_app()
    accepted = app.handle(request("GET", "/chat", UPGRADE))
    assert isinstance(accepted, Accept)
    assert (accepted.kind, accepted.key) == ("websocket", KEY)
    stream = app.handle(request("GET", "/chat", {"accept": "text/event-stream"}))
    assert isinstance(stream, Accept)
    assert stream.kind == "sse"


def test_connect_trusts_the_handshake_the_asgi_server_did() -> None:
    app = make_app()
    # No upgrade headers at all (an ASGI server over HTTP/2 passes none): accepted as it is,
    # and the controller sees the headers the ASGI server passed, none made up.
    accepted = app.connect(request("GET", "/chat", {"host": "x"}))
    assert isinstance(accepted, Accept)
    assert accepted.kind == "websocket"
    assert accepted.controller.seen == {"host": "x"}
    refused = request("GET", "/chat?token=bad")
    reply = app.connect(refused)
    assert isinstance(reply, Reply)
    assert reply.status == 403
    assert refused.keep_alive is False
    for path, status in (("/pages", 400), ("/nowhere", 404)):
        reply = app.connect(request("GET", path))
        assert isinstance(reply, Reply)
        assert reply.status == status
    # The same request through `handle` is plain HTTP: only `connect` skips the handshake.
    plain = app.handle(request("GET", "/chat", {"host": "x"}))
    assert isinstance(plain, Reply)
    assert plain.status == 404


def test_asgi_messages_are_the_data_as_it_is() -> None:
    reply = Reply(201, [("x-a", "1"), ("set-cookie", "a=b"), ("set-cookie", "c=d")], b"made")
    assert reply_messages(reply, head=False) == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"x-a", b"1"),
                (b"set-cookie", b"a=b"),
                (b"set-cookie", b"c=d"),
                (b"content-length", b"4"),
            ],
        },
        {"type": "http.response.body", "body": b"made"},
    ]
    hello = reply_messages(b"Hello World!", head=True, prefix="websocket.http")
    assert hello[0]["status"] == 200
    assert hello[0]["headers"] == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"12"),
    ]
    assert hello[1] == {"type": "websocket.http.response.body", "body": b""}
    assert reply_messages(Reply(304, [("etag", '"x"')]), head=False)[0]["headers"] == [
        (b"etag", b'"x"')
    ]
