"""JSON auto-dispatch over real WebSockets and HTTP, the client route, and the chat example.

Every reply is checked as the exact text the server put in a text frame, since Plezi's own
``client.js`` (and ours) parse exactly that: ``{"event":"_ack_","_EID_":x}``, ``_err_`` replies,
return values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection
from wsclient import RawClient, connect, masked

import plezi
from helpers import ROOT, UNIT, Running, Script, loop_turns
from plezi.protocol.frames import OP_BINARY, OP_TEXT
from plezi.web.client import MODULE_FILE, SCRIPT_FILE

CLIENT_DIR = ROOT / "src" / "plezi" / "web" / "client"
CHAT = ROOT / "examples" / "chat_client" / "chat.py"


class Room:
    """An auto-dispatch controller with one event per reply kind."""

    auto_dispatch = True
    opened = 0

    def on_open(self) -> None:
        Room.opened += 1

    def echo(self, msg: dict[str, Any]) -> dict[str, Any]:
        return msg

    def items(self, msg: dict[str, Any]) -> list[Any]:
        return [1, "two", None]

    def text(self, msg: dict[str, Any]) -> str:
        return f"text: {msg.get('value')}"

    def blob(self, msg: dict[str, Any]) -> bytes:
        return b"\x00\x01binary"

    def quiet(self, msg: dict[str, Any]) -> None:
        return None

    async def slow(self, msg: dict[str, Any]) -> dict[str, Any]:
        await loop_turns()
        return {"event": "slow", "n": msg["n"]}

    def boom(self, msg: dict[str, Any]) -> None:
        raise RuntimeError("secret internals")

    async def async_boom(self, msg: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async secret")

    def not_json(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"event": "x", "value": object()}

    def index(self) -> str:
        return "the room"

    def zero(self) -> str:
        return "zero"

    def _private(self, msg: dict[str, Any]) -> str:
        return "private"


class WithUnknown(Room):
    def unknown(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"event": "unknown", "got": msg.get("event")}


@pytest.fixture
def room(serve: Callable[..., Running]) -> Running:
    app = plezi.App()
    app.route("/client.js", "client")
    app.route("/room", Room)
    app.route("/unknown", WithUnknown)
    return serve(app)


@pytest.fixture
def ws(room: Running) -> Iterator[ClientConnection]:
    with connect(room.ws_url + "/room") as client:
        yield client


def ask(ws: ClientConnection, message: Any) -> Any:
    """Send ``message`` (JSON-encoded unless it is already ``str``/``bytes``); return the reply."""
    ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
    return ws.recv(timeout=5 * UNIT)


def http(running: Running) -> httpx.Client:
    return httpx.Client(base_url=running.url, trust_env=False, timeout=5 * UNIT)


# -- events and return values -------------------------------------------------------------------


def test_event_gets_the_whole_message_and_a_dict_comes_back_as_json(ws: ClientConnection) -> None:
    msg = {"event": "echo", "text": "héllo", "nested": {"a": [1, 2]}}
    reply = ask(ws, msg)
    assert isinstance(reply, str)
    assert json.loads(reply) == msg


def test_list_str_and_bytes_returns(ws: ClientConnection) -> None:
    assert ask(ws, {"event": "items"}) == '[1,"two",null]'
    assert ask(ws, {"event": "text", "value": 7}) == "text: 7"
    assert ask(ws, {"event": "blob"}) == b"\x00\x01binary"


def test_none_sends_nothing(ws: ClientConnection) -> None:
    ws.send(json.dumps({"event": "quiet"}))
    # The next reply is the next message's: nothing was sent for ``quiet``.
    assert ask(ws, {"event": "text", "value": "after"}) == "text: after"


def test_ack_first_with_the_exact_eid(ws: ClientConnection) -> None:
    for eid in (17, "abc", 0, 1.5, [1, "x"]):
        ws.send(json.dumps({"event": "text", "value": "v", "_EID_": eid}))
        ack = ws.recv(timeout=5 * UNIT)
        assert ack == '{"event":"_ack_","_EID_":' + json.dumps(eid, separators=(",", ":")) + "}"
        assert ws.recv(timeout=5 * UNIT) == "text: v"


def test_null_or_false_eid_asks_for_no_ack(ws: ClientConnection) -> None:
    assert ask(ws, {"event": "text", "value": 1, "_EID_": None}) == "text: 1"
    assert ask(ws, {"event": "text", "value": 2, "_EID_": False}) == "text: 2"


def test_async_events_are_awaited_and_keep_their_order(room: Running) -> None:
    """The three events leave in one write, so they reach the server while the first (async)
    one is pending: the later ones wait for it, and the replies keep the events' order."""
    events = [
        {"event": "slow", "n": 1, "_EID_": 1},
        {"event": "text", "value": "sync", "_EID_": 2},
        {"event": "slow", "n": 3},
    ]
    with RawClient(room.port, "/room") as raw:
        raw.send_raw(b"".join(masked(OP_TEXT, json.dumps(e).encode()) for e in events))
        got = [raw.recv_message().text for _ in range(5)]
    assert got == [
        '{"event":"_ack_","_EID_":1}',
        '{"event":"slow","n":1}',
        '{"event":"_ack_","_EID_":2}',
        "text: sync",
        '{"event":"slow","n":3}',
    ]


def test_a_binary_frame_holding_json_is_dispatched_too(room: Running) -> None:
    with RawClient(room.port, "/room") as raw:
        raw.send(OP_BINARY, b'{"event":"text","value":"bin"}')
        frame = raw.recv_message()
        assert (frame.opcode, frame.text) == (OP_TEXT, "text: bin")


# -- errors: 400, 404, 500; the connection stays open ---------------------------------------------


def error(reply: Any) -> dict[str, Any]:
    assert isinstance(reply, str)
    decoded = json.loads(reply)
    assert decoded["event"] == "_err_"
    assert isinstance(decoded["error"], str) and decoded["error"]
    return decoded  # type: ignore[no-any-return]


def test_no_such_event_is_404_with_the_request(ws: ClientConnection) -> None:
    msg = {"event": "nope", "_EID_": 9, "x": 1}
    err = error(ask(ws, msg))
    assert (err["status"], err["_EID_"], err["request"]) == (404, 9, msg)
    assert ask(ws, {"event": "text", "value": "still open"}) == "text: still open"


@pytest.mark.parametrize(
    ("message", "request_echo"),
    [
        ("not json", "not json"),
        ('{"event": "echo"', '{"event": "echo"'),
        ("[1, 2]", [1, 2]),
        ('"just a string"', "just a string"),
        ("null", None),
        ('{"text": "no event"}', {"text": "no event"}),
        ('{"event": null}', {"event": None}),
        ('{"event": 5}', {"event": 5}),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_invalid_messages_are_400(ws: ClientConnection, message: Any, request_echo: Any) -> None:
    err = error(ask(ws, message))
    assert err["status"] == 400
    assert err["request"] == request_echo
    assert ask(ws, {"event": "text", "value": "ok"}) == "text: ok"


def test_a_400_without_event_still_carries_the_eid(ws: ClientConnection) -> None:
    err = error(ask(ws, {"_EID_": 4, "text": "x"}))
    assert (err["status"], err["_EID_"]) == (400, 4)


@pytest.mark.parametrize("event", ["boom", "async_boom", "not_json"])
def test_a_failing_event_is_500_and_logged_never_leaked(
    ws: ClientConnection, caplog: pytest.LogCaptureFixture, event: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="plezi"):
        ws.send(json.dumps({"event": event, "_EID_": 3}))
        assert ws.recv(timeout=5 * UNIT) == '{"event":"_ack_","_EID_":3}'
        err = error(ws.recv(timeout=5 * UNIT))
    assert (err["status"], err["_EID_"]) == (500, 3)
    assert "secret" not in json.dumps(err)
    assert f"Room.{event}" in caplog.text
    assert ask(ws, {"event": "text", "value": "alive"}) == "text: alive"


@pytest.mark.parametrize(
    "event",
    [
        # callbacks and REST names
        "on_open",
        "on_message",
        "on_close",
        "on_shutdown",
        "on_drained",
        "pre_connect",
        "index",
        "zero",
        "unknown",
        # private, and anything plezi itself defines
        "_private",
        "__init__",
        "__class__",
        "write",
        "close",
        "send_file",
        "redirect_to",
        "render",
        "url_for",
        "params",
        "auto_dispatch",
    ],
)
def test_unreachable_names_are_404(room: Running, event: str) -> None:
    Room.opened = 0
    with connect(room.ws_url + "/room") as ws:
        err = error(ask(ws, {"event": event, "path": "/etc/passwd", "_EID_": 1}))
        assert err["status"] == 404
        assert ask(ws, {"event": "text", "value": "open"}) == "text: open"
    assert Room.opened == 1


def test_unknown_takes_what_has_no_method(room: Running) -> None:
    with connect(room.ws_url + "/unknown") as ws:
        ws.send(json.dumps({"event": "nope", "_EID_": 5}))
        assert ws.recv(timeout=5 * UNIT) == '{"event":"_ack_","_EID_":5}'
        assert json.loads(ws.recv(timeout=5 * UNIT)) == {"event": "unknown", "got": "nope"}
        # Callbacks are still out of reach: they go to ``unknown`` too.
        assert json.loads(ask(ws, {"event": "on_open"})) == {"event": "unknown", "got": "on_open"}
        # A message with no event is malformed, not unknown.
        assert error(ask(ws, {"x": 1}))["status"] == 400


def test_a_users_on_message_replaces_the_dispatcher(serve: Callable[..., Running]) -> None:
    class Raw:
        auto_dispatch = True

        def on_message(self, data: str) -> None:
            self.write(f"raw: {data}")  # type: ignore[attr-defined]

        def echo(self, msg: dict[str, Any]) -> dict[str, Any]:
            return {"echoed": msg.get("v")}

    app = plezi.App()
    app.route("/", Raw)
    running = serve(app)
    with connect(running.ws_url + "/") as ws:
        assert ask(ws, '{"event":"echo"}') == 'raw: {"event":"echo"}'
    with http(running) as client:
        assert client.get("/echo", params={"v": "1"}).json() == {"echoed": "1"}


def test_a_controller_subclass_dispatches_too(serve: Callable[..., Running]) -> None:
    class Typed(plezi.Controller):
        auto_dispatch = True

        def whoami(self, msg: dict[str, Any]) -> dict[str, Any]:
            return {"event": "whoami", "id": self.id}

    app = plezi.App()
    app.route("/", Typed)
    with connect(serve(app).ws_url + "/") as ws:
        reply = json.loads(ask(ws, {"event": "whoami"}))
        assert reply["event"] == "whoami" and reply["id"]


def test_sync_events_run_inline_without_a_task(serve: Callable[..., Running]) -> None:
    """A sync event runs in the connection's read path, like a sync ``on_message``: no task."""
    seen: list[Any] = []

    class Probe:
        auto_dispatch = True

        def probe(self, msg: dict[str, Any]) -> str:
            seen.append(asyncio.current_task())
            return "probed"

    app = plezi.App()
    app.route("/", Probe)
    with connect(serve(app).ws_url + "/") as ws:
        assert ask(ws, {"event": "probe", "_EID_": 1}) == '{"event":"_ack_","_EID_":1}'
        assert ws.recv(timeout=5 * UNIT) == "probed"
    assert seen == [None]


# -- the same events over HTTP ------------------------------------------------------------------


def test_http_get_with_params_returns_json(room: Running) -> None:
    with http(room) as client:
        r = client.get("/room/echo", params={"text": "hi", "user[name]": "ann"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"id": "echo", "text": "hi", "user": {"name": "ann"}}


def test_http_post_json_body(room: Running) -> None:
    with http(room) as client:
        r = client.post("/room/echo", json={"event": "echo", "n": [1, 2]})
        assert r.json() == {"event": "echo", "n": [1, 2], "id": "echo"}
        assert client.post("/room/text", data={"value": "form"}).text == "text: form"
        assert client.request("HEAD", "/room/items").status_code == 200


def test_plezis_ajax_fallback_posts_the_event_to_the_route_itself(room: Running) -> None:
    """Plezi's client.js, when an emit times out with ``ajaj.auto``, POSTs the event as JSON to
    the WebSocket URL's HTTP form with ``id`` set to the event name, and dispatches the reply."""
    with http(room) as client:
        r = client.post("/room", json={"event": "echo", "id": "echo", "v": 1})
    assert r.status_code == 200
    assert r.json() == {"event": "echo", "id": "echo", "v": 1}


def test_http_async_event_and_unreachable_names(room: Running) -> None:
    with http(room) as client:
        assert client.get("/room/slow", params={"n": "4"}).json() == {"event": "slow", "n": "4"}
        assert client.get("/room").text == "the room"
        assert client.get("/room/zero").text == "zero"
        for name in ("on_open", "_private", "send_file", "nope", "pre_connect", "boom"):
            r = client.get(f"/room/{name}")
            assert r.status_code in (404, 500), name
            assert r.status_code == (500 if name == "boom" else 404), name
        assert client.get("/room/quiet").status_code == 404  # None falls through


def test_http_does_not_reach_events_of_a_plain_controller(serve: Callable[..., Running]) -> None:
    class Plain:
        def on_message(self, data: str) -> None: ...

        def chat(self, msg: dict[str, Any]) -> dict[str, Any]:
            return {"reached": True}

    app = plezi.App()
    app.route("/", Plain)
    with http(serve(app)) as client:
        assert client.get("/chat").status_code == 404
        assert client.post("/chat", json={}).status_code == 404


# -- the client route ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "file"), [("/client.js", SCRIPT_FILE), ("/client.mjs", MODULE_FILE)]
)
def test_client_route_serves_both_builds_with_etag(room: Running, path: str, file: str) -> None:
    body = (CLIENT_DIR / file).read_bytes()
    with http(room) as client:
        r = client.get(path)
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.headers["cache-control"] == "no-cache"
        etag = r.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        again = client.get(path, headers={"If-None-Match": etag})
        assert (again.status_code, again.content) == (304, b"")
        assert again.headers["etag"] == etag
        assert "content-length" not in again.headers
        assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200
        head = client.request("HEAD", path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(body))
        assert client.get(path + "/other").status_code == 404
        r = client.post(path)
        assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")


def test_client_route_defined_in_plezis_top_level_api() -> None:
    before = len(plezi.app.routes)
    try:
        route = plezi.route("/assets/plezi.js", "client")
        assert route is plezi.app.routes[before]
        assert plezi.app.routes[before + 1].pattern.match("/assets/plezi.mjs") == {}
    finally:
        del plezi.app.routes[before:]


# -- the example --------------------------------------------------------------------------------


def test_chat_example_broadcasts_and_answers_http(script: Callable[..., Script]) -> None:
    s = script(CHAT)
    with httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT) as client:
        page = client.get("/")
        assert page.status_code == 200 and "new PleziClient()" in page.text
        assert client.get("/client.js").headers["content-type"].startswith("text/javascript")
        with connect(s.ws_url + "/") as ann, connect(s.ws_url + "/") as bob:
            # A round trip each: both are subscribed (on_open has run) before anyone speaks.
            for ws in (ann, bob):
                assert json.loads(ask(ws, {"event": "nope"}))["status"] == 404
            ann.send(json.dumps({"event": "chat", "name": "ann", "text": "hi", "_EID_": 1}))
            assert ann.recv(timeout=5 * UNIT) == '{"event":"_ack_","_EID_":1}'
            line = {"event": "chat", "name": "ann", "text": "hi"}
            got = [json.loads(ann.recv(timeout=5 * UNIT)) for _ in range(2)]
            assert sorted(got, key=json.dumps) == sorted(
                [line, {"event": "delivered"}], key=json.dumps
            )
            assert json.loads(bob.recv(timeout=5 * UNIT)) == line
            # The same event over HTTP reaches everyone in the room.
            r = client.post("/chat", data={"name": "curl", "text": "from http"})
            assert r.json() == {"event": "delivered"}
            for ws in (ann, bob):
                got_line = json.loads(ws.recv(timeout=5 * UNIT))
                assert got_line == {"event": "chat", "name": "curl", "text": "from http"}
            assert error(ask(bob, "garbage"))["status"] == 400
    code, err = s.stop()
    assert code == 0 and "Traceback" not in err
