"""Pub/sub and ``write_to`` on Server-Sent Events streams, beside WebSocket subscribers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from test_sse import Event, EventStream
from wsclient import connect

import plezi
from helpers import UNIT, Events, Running
from plezi.pubsub.hub import hub


def room_app(tally: Events) -> plezi.App:
    """``/room``: SSE and WebSocket clients subscribed to "room" (and the pattern "news.*");
    ``/room?handler=1``: a handler subscription that writes named events."""

    class Room:
        def on_open(self) -> None:
            if self.params.get("handler"):  # type: ignore[attr-defined]
                self.subscribe("room", self.relay)  # type: ignore[attr-defined]
            else:
                self.subscribe("room")  # type: ignore[attr-defined]
                self.subscribe("news.*", pattern=True)  # type: ignore[attr-defined]
            self.write(f"id {self.id}")  # type: ignore[attr-defined]
            tally.add("open")

        def relay(self, channel: str, message: Any) -> None:
            self.write_event(str(message), event=channel)  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/room", Room)
    return app


def test_publish_reaches_sse_and_websocket_subscribers_alike(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    tally = Events()
    running = serve(room_app(tally))
    with (
        EventStream(running.port, "/room") as first,
        EventStream(running.port, "/room") as second,
        connect(running.ws_url + "/room") as ws,
    ):
        for stream in (first, second):
            assert stream.first().data.startswith("id ")
        assert ws.recv(timeout=5 * UNIT).startswith("id ")
        tally.wait_for("open", 3)
        plezi.publish("room", "hello")
        plezi.publish("room", "two\nlines")
        plezi.publish("room", {"json": [1, 2]})
        plezi.publish("room", "été".encode())  # binary, but UTF-8: its text
        plezi.publish("room", b"\xff\xfe")  # binary, not UTF-8: not for event streams
        plezi.publish("news.today", "by pattern")
        plezi.publish("elsewhere", "not subscribed")
        plezi.publish("room", "last")
        expected = [
            Event("hello"),
            Event("two\nlines"),
            Event('{"json":[1,2]}'),
            Event("été"),
            Event("by pattern"),
            Event("last"),
        ]
        assert first.events(6) == expected
        assert second.events(6) == expected
        got = [ws.recv(timeout=5 * UNIT) for _ in range(7)]
        assert got == [
            "hello",
            "two\nlines",
            '{"json":[1,2]}',
            "été".encode(),
            b"\xff\xfe",
            "by pattern",
            "last",
        ]
    assert any("not UTF-8" in r.getMessage() for r in caplog.records if r.name == "plezi")


def test_a_burst_keeps_its_order_on_both_kinds(serve: Callable[..., Running]) -> None:
    tally = Events()
    running = serve(room_app(tally))
    with EventStream(running.port, "/room") as stream, connect(running.ws_url + "/room") as ws:
        stream.first()
        ws.recv(timeout=5 * UNIT)
        tally.wait_for("open", 2)

        def burst() -> None:  # one loop iteration: the messages are batched per topic
            for n in range(200):
                plezi.publish("room", f"m{n}")
                if n % 50 == 0:
                    plezi.publish("news.x", f"n{n}")

        running.call(burst)
        expected = []
        for n in range(200):
            expected.append(f"m{n}")
            if n % 50 == 0:
                expected.append(f"n{n}")
        assert [e.data for e in stream.events(len(expected))] == expected
        assert [ws.recv(timeout=5 * UNIT) for _ in expected] == expected


def test_handler_subscriptions_write_named_events(serve: Callable[..., Running]) -> None:
    tally = Events()
    running = serve(room_app(tally))
    with EventStream(running.port, "/room?handler=1") as stream:
        stream.first()
        tally.wait_for("open")
        plezi.publish("room", "via handler")
        assert stream.event() == Event("via handler", "room")


def test_write_to_reaches_a_stream_by_its_id(serve: Callable[..., Running]) -> None:
    tally = Events()
    running = serve(room_app(tally))
    with EventStream(running.port, "/room") as stream:
        stream.open()
        conn_id = stream.event().data.removeprefix("id ")
        assert plezi.write_to(conn_id, "just you") is True
        assert plezi.write_to(conn_id, {"a": 1}) is True
        assert running.call(lambda: plezi.write_to(conn_id, b"\xff")) is True  # skipped
        assert running.call(lambda: plezi.write_to(conn_id, "from the loop")) is True
        assert stream.events(3) == [Event("just you"), Event('{"a":1}'), Event("from the loop")]
    tally.wait_for("close")
    assert running.call(lambda: plezi.write_to(conn_id, "gone")) is False
    assert running.call(lambda: hub.registry.count("room")) == 0
