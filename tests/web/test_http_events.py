"""Auto-dispatch events over HTTP: on by default (Plezi's behaviour), off with
``http_events = False``; and what an event reached over HTTP gets when it needs a connection."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from wsclient import connect

import plezi
from helpers import UNIT, Running


class Room:
    auto_dispatch = True

    def on_open(self) -> None:
        self.joined = True

    def echo(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"event": "echo", "text": msg.get("text")}

    def optional(self, msg: Any = None) -> str:  # an event, and GET-able with no message
        return "optional"

    def join(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.subscribe("room")  # type: ignore[attr-defined]
        return {"event": "joined"}

    def needs_open(self, msg: dict[str, Any]) -> str:
        return f"joined={self.joined}"  # set by on_open only

    def notify(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.write({"event": "notice"})  # type: ignore[attr-defined]
        return {"event": "notified"}

    def index(self) -> str:
        return "the room"


class Private(Room):
    http_events = False


@pytest.fixture
def running(serve: Callable[..., Running]) -> Running:
    app = plezi.App()
    app.route("/room", Room)
    app.route("/private", Private)
    return serve(app)


def client(running: Running) -> httpx.Client:
    return httpx.Client(base_url=running.url, timeout=5 * UNIT)


def test_events_answer_http_by_default(running: Running) -> None:
    with client(running) as http:
        assert http.get("/room/echo", params={"text": "q"}).json() == {
            "event": "echo",
            "text": "q",
        }
        assert http.post("/room/echo", json={"text": "p"}).json()["text"] == "p"
        assert http.get("/room/optional").text == "optional"


def test_http_events_false_keeps_events_off_http(running: Running) -> None:
    with client(running) as http:
        assert http.get("/private").text == "the room"  # plain HTTP actions stay
        for name in ("echo", "optional", "join"):
            for method in ("GET", "POST", "PUT", "DELETE"):
                r = http.request(method, f"/private/{name}", params={"text": "q"})
                assert r.status_code in (404, 405), (name, method)
                assert "echo" not in r.text
        # Plezi's AJAX fallback (a POST naming the event in its body) is refused too.
        r = http.post("/private", json={"event": "echo", "id": "echo", "text": "x"})
        assert r.status_code in (404, 405)
    # ... and they are still events on a WebSocket.
    with connect(running.ws_url + "/private") as ws:
        ws.send(json.dumps({"event": "echo", "text": "ws"}))
        assert json.loads(ws.recv(timeout=5 * UNIT)) == {"event": "echo", "text": "ws"}


def test_an_event_needing_a_connection_over_http_is_400_with_a_log_line(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    with client(running) as http:
        r = http.get("/room/join")
    assert r.status_code == 400
    assert r.text == "Bad Request: this event needs a WebSocket connection\n"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "plezi"]
    assert any(
        "GET /room/join: Room.join is an auto-dispatch event that needs a WebSocket connection"
        in line
        and "http_events = False" in line
        for line in lines
    ), lines


def test_an_event_failing_over_http_is_a_500_whose_log_says_why(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with client(running) as http:
        r = http.get("/room/needs_open")
    assert (r.status_code, r.text) == (500, "Internal Server Error\n")
    (record,) = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert record.exc_info is not None
    notes = getattr(record.exc_info[1], "__notes__", [])
    assert any("Room.needs_open is an auto-dispatch event" in n for n in notes), notes
    assert any("on_open did not run" in n and "http_events = False" in n for n in notes)
    assert "joined" not in r.text


def test_a_write_over_http_is_logged_once_and_the_return_value_answers(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    with client(running) as http:
        for _ in range(3):
            assert http.get("/room/notify").json() == {"event": "notified"}
    lines = [rec.getMessage() for rec in caplog.records if "nothing was sent" in rec.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "Room.write() has no WebSocket or SSE connection to send on (GET /room/notify)"
    )
    # On a WebSocket the same event writes, then answers.
    with connect(running.ws_url + "/room") as ws:
        ws.send(json.dumps({"event": "notify"}))
        assert json.loads(ws.recv(timeout=5 * UNIT)) == {"event": "notice"}
        assert json.loads(ws.recv(timeout=5 * UNIT)) == {"event": "notified"}
