"""Server-Sent Events through plezi's ASGI application, served by a real uvicorn over real
sockets and read by a real HTTP client (httpx, streaming): the native stream's head, events,
pub/sub beside WebSockets, both ends closing, keep-alive comments, the cap, shutdown.

Events are read by the test suite's own event-stream parser (the HTML standard's algorithm, in
``tests/protocol/test_protocol_sse.py``), so the framing is checked by a second implementation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from wsclient import connect as ws_connect

import plezi
from helpers import UNIT, Events
from plezi.asgi import ASGIApp
from plezi.pubsub.hub import hub
from protocol.test_protocol_sse import parse_events

T = 5 * UNIT
STREAM = {"Accept": "text/event-stream"}


EVENTS = Events()


class Stream:
    """An event stream read through httpx: blocks up to a blank line, parsed into events."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_raw()
        self.buf = b""
        self.comments = 0

    def block(self) -> bytes | None:
        """The next block; ``None`` once the response has ended."""
        while b"\n\n" not in self.buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                assert not self.buf, f"the stream ended mid-block: {self.buf!r}"
                return None
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n\n")
        return raw

    def event(self) -> dict[str, str]:
        """The next event (comments are counted and skipped)."""
        while True:
            raw = self.block()
            assert raw is not None, "the stream ended"
            parsed = parse_events(raw + b"\n\n")
            if parsed:
                return parsed[0]
            assert raw.startswith(b":"), raw
            self.comments += 1

    def data(self, count: int) -> list[str]:
        return [self.event()["data"] for _ in range(count)]

    def rest(self) -> list[str]:
        """The data of the events left before the response ends."""
        found = []
        while (raw := self.block()) is not None:
            found.extend(event["data"] for event in parse_events(raw + b"\n\n"))
        return found


@contextmanager
def stream(client: httpx.Client, url: str) -> Iterator[Stream]:
    """``GET url`` with ``Accept: text/event-stream``; leaving the block disconnects."""
    with client.stream("GET", url, headers=STREAM) as response:
        yield Stream(response)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=T, trust_env=False) as c:
        yield c


class Room:
    """``/room?name=...&channel=...``: the page for plain requests; a stream (or a WebSocket)
    subscribed to ``channel`` for connections; ``say`` (WebSocket JSON) publishes."""

    auto_dispatch = True

    def index(self) -> str:
        return "the page"

    def pre_connect(self) -> bool:
        token = self.params.get("token")  # type: ignore[attr-defined]
        if token == "bad":
            return False
        if token == "crlf":
            self.response.headers["X-Bad"] = "a\r\nInjected: 1"  # type: ignore[attr-defined]
        self.response.headers["X-Room"] = "yes"  # type: ignore[attr-defined]
        self.response.headers["Cache-Control"] = "no-store"  # type: ignore[attr-defined]
        self.cookies["seen"] = "1"  # type: ignore[attr-defined]
        return True

    def on_open(self) -> None:
        params = self.params  # type: ignore[attr-defined]
        self.subscribe(params.get("channel", "room"))  # type: ignore[attr-defined]
        self.write(f"id {self.id}")  # type: ignore[attr-defined]
        if params.get("close"):
            self.write("two\nlines")  # type: ignore[attr-defined]
            self.write_event("tick", event="clock", id=7, retry=1500)  # type: ignore[attr-defined]
            self.close()  # type: ignore[attr-defined]
        EVENTS.add(("open", params.get("name")))

    def say(self, msg: dict[str, Any]) -> None:
        self.publish(msg["channel"], msg["text"])  # type: ignore[attr-defined]

    def on_shutdown(self) -> None:
        self.write("going away")  # type: ignore[attr-defined]
        EVENTS.add(("shutdown", self.params.get("name")))  # type: ignore[attr-defined]

    def on_close(self) -> None:
        EVENTS.add(("closed", self.params.get("name")))  # type: ignore[attr-defined]


def room_app() -> plezi.App:
    app = plezi.App()
    app.route("/room", Room)
    return app


@pytest.fixture
def server(uvicorn_serve: Any) -> Any:
    return uvicorn_serve(ASGIApp(room_app()))


def test_head_events_and_server_close(server: Any, client: httpx.Client) -> None:
    with stream(client, f"{server.url}/room?name=head&close=1") as events:
        response = events.response
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers.get_list("cache-control") == ["no-store"]  # pre_connect's
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-room"] == "yes"
        assert response.headers["set-cookie"].startswith("seen=1")
        assert "content-length" not in response.headers
        assert "injected" not in response.headers
        assert events.event()["data"].startswith("id ")
        assert events.event() == {"data": "two\nlines"}
        assert events.event() == {"event": "clock", "id": "7", "retry": "1500", "data": "tick"}
        assert events.rest() == []  # close(): the response ends (more_body=False)
    EVENTS.take(("closed", "head"))
    # The ASGI server keeps the connection: the same client goes on with plain requests.
    assert client.get(f"{server.url}/room").text == "the page"


def test_requests_that_are_not_streams(server: Any, client: httpx.Client) -> None:
    assert client.get(f"{server.url}/room").text == "the page"  # no Accept: the action
    head = client.head(f"{server.url}/room", headers=STREAM)  # only a GET opens a stream
    assert head.status_code == 200
    assert head.headers["content-type"] != "text/event-stream"
    refused = client.get(f"{server.url}/room?token=bad", headers=STREAM)
    assert refused.status_code == 403
    broken = client.get(f"{server.url}/room?token=crlf", headers=STREAM)
    assert broken.status_code == 500
    assert "injected" not in broken.headers


def test_client_disconnect_runs_on_close_and_ends_the_subscription(
    server: Any, client: httpx.Client
) -> None:
    with stream(client, f"{server.url}/room?name=leaver&channel=leave") as events:
        conn_id = events.event()["data"].removeprefix("id ")
        EVENTS.take(("open", "leaver"))
        assert EVENTS.on_loop(lambda: hub.registry.count("leave")) == 1
    EVENTS.take(("closed", "leaver"))
    assert EVENTS.on_loop(lambda: hub.registry.count("leave")) == 0
    assert EVENTS.on_loop(lambda: plezi.write_to(conn_id, "gone")) is False


def test_publish_reaches_sse_and_websocket_subscribers(server: Any, client: httpx.Client) -> None:
    url = f"{server.url}/room?channel=both"
    with (
        stream(client, url + "&name=s1") as first,
        stream(client, url + "&name=s2") as second,
        ws_connect(f"{server.ws_url}/room?channel=both") as ws,
    ):
        ids = [s.event()["data"].removeprefix("id ") for s in (first, second)]
        assert ws.recv(T).startswith("id ")
        plezi.publish("both", "from a thread")
        plezi.publish("both", {"json": [1, 2]})
        ws.send(json.dumps({"event": "say", "channel": "both", "text": "from a websocket"}))
        expected = ["from a thread", '{"json":[1,2]}', "from a websocket"]
        assert first.data(3) == second.data(3) == expected
        assert [ws.recv(T) for _ in range(3)] == expected
        assert plezi.write_to(ids[1], "just you") is True
        plezi.publish("both", "last")
        assert first.data(1) == ["last"]
        assert second.data(2) == ["just you", "last"]
    EVENTS.take(("closed", "s1"))
    EVENTS.take(("closed", "s2"))


def test_quiet_streams_get_keepalive_comments(uvicorn_serve: Any, client: httpx.Client) -> None:
    limits = plezi.Limits(ping_interval=0.2 * UNIT)
    server = uvicorn_serve(ASGIApp(room_app(), limits=limits))
    with stream(client, f"{server.url}/room?name=quiet&channel=quiet") as events:
        events.event()
        assert [events.block(), events.block()] == [b": ", b": "]
        plezi.publish("quiet", "after the comments")
        assert events.event() == {"data": "after the comments"}
    EVENTS.take(("closed", "quiet"))


def test_lifespan_shutdown_runs_on_shutdown_and_ends_the_stream(
    uvicorn_serve: Any, client: httpx.Client
) -> None:
    # What an ASGI server that sends lifespan.shutdown while streams are open gets.
    asgi = ASGIApp(room_app(), shutdown_timeout=2 * UNIT)
    server = uvicorn_serve(asgi)
    with stream(client, f"{server.url}/room?name=down") as events:
        events.event()
        EVENTS.take(("open", "down"))
        assert EVENTS.loop is not None
        done = asyncio.run_coroutine_threadsafe(asgi.shutdown(), EVENTS.loop)
        assert events.rest() == ["going away"]
    done.result(T)
    EVENTS.take(("shutdown", "down"))
    EVENTS.take(("closed", "down"))
    with stream(client, f"{server.url}/room?name=again") as events:  # a new host serves it
        assert events.event()["data"].startswith("id ")
    EVENTS.take(("closed", "again"))


def test_uvicorn_stop_cuts_streams_after_its_graceful_timeout(
    uvicorn_serve: Any, client: httpx.Client
) -> None:
    # uvicorn waits for open responses before lifespan.shutdown: on_shutdown does not run.
    server = uvicorn_serve(ASGIApp(room_app()), timeout_graceful_shutdown=0.3 * UNIT)
    with stream(client, f"{server.url}/room?name=cut") as events:
        events.event()
        server.stop()
        with pytest.raises(httpx.RemoteProtocolError):  # cut: no end of the chunked body
            events.rest()
    EVENTS.take(("closed", "cut"))
    assert ("shutdown", "cut") not in EVENTS.events  # it was gone before lifespan.shutdown


class Flood:
    def on_open(self) -> None:
        sent = 0
        while self.write("y" * 65536) and sent < 1000:  # type: ignore[attr-defined]
            sent += 1
        EVENTS.add(("flood stopped", sent < 1000))

    def on_message(self, data: Any) -> None:
        pass

    def on_close(self) -> None:
        EVENTS.add("flood closed")


def test_outgoing_buffer_cap_drops_the_stream(
    uvicorn_serve: Any, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plezi")
    app = plezi.App()
    app.route("/", Flood)
    limits = plezi.Limits(max_outgoing_buffer=256 * 1024, write_high_water=65536)
    server = uvicorn_serve(ASGIApp(app, limits=limits))
    with stream(client, server.url) as events:
        EVENTS.take(("flood stopped", True))
        EVENTS.take("flood closed")
        with pytest.raises(httpx.RemoteProtocolError):  # cut: no end of the chunked body
            events.rest()
    assert any("SSE " in m and "dropping it" in m for m in caplog.messages), caplog.messages


def test_a_client_that_stops_reading_is_dropped_past_the_cap(
    uvicorn_serve: Any, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plezi")
    limits = plezi.Limits(max_outgoing_buffer=256 * 1024, write_high_water=65536)
    server = uvicorn_serve(ASGIApp(room_app(), limits=limits))
    with stream(client, f"{server.url}/room?name=stalled&channel=firehose") as events:
        events.event()
        EVENTS.take(("open", "stalled"))
        # One message per loop iteration, so that the stream's writer is stuck in the ASGI
        # server's send (the socket is full) when the cap is reached.
        for _ in range(400):  # at most 25 MiB
            if ("closed", "stalled") in EVENTS.events:
                break
            EVENTS.on_loop(lambda: plezi.publish("firehose", "z" * 65536))
        EVENTS.take(("closed", "stalled"))
        with pytest.raises(httpx.RemoteProtocolError):  # what was sent, then a cut
            events.rest()
    assert any("SSE " in m and "dropping it" in m for m in caplog.messages), caplog.messages


def test_a_client_that_takes_nothing_is_dropped_after_the_ping_timeout(
    uvicorn_serve: Any, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    # With "drop", the cap does not disconnect: only the reaper's check can.
    limits = plezi.Limits(ping_interval=0.2 * UNIT, ping_timeout=0.2 * UNIT, slow_consumer="drop")
    server = uvicorn_serve(ASGIApp(room_app(), limits=limits))
    with stream(client, f"{server.url}/room?name=asleep&channel=asleep") as events:
        events.event()
        EVENTS.take(("open", "asleep"))
        for _ in range(400):  # at most 25 MiB: more than the socket buffers hold
            if ("closed", "asleep") in EVENTS.events:
                break
            EVENTS.on_loop(lambda: plezi.publish("asleep", "z" * 65536))
        EVENTS.take(("closed", "asleep"))
    assert any("SSE " in m and "took nothing" in m for m in caplog.messages), caplog.messages
