"""Server-Sent Events over real sockets: the stream's head, events, routing, the parser stopping.

A ``GET`` with ``Accept: text/event-stream`` to a controller that accepts connections becomes an
event stream; everything else about the request is plain HTTP. :class:`EventStream` is a raw
socket client whose events are read by the test suite's own event-stream parser (the HTML
standard's algorithm, in ``tests/protocol/test_protocol_sse.py``), so the server's framing is
checked against a second implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rawhttp import RawHTTP, request_bytes

import plezi
from helpers import UNIT, Events, Running, loop_turns
from sseclient import STREAM, Event, EventStream, first_event

__all__ = ["Event", "EventStream", "feed_app", "first_event", "serve_controller"]


def serve_controller(serve: Callable[..., Running], controller: type, **limits: Any) -> Running:
    """Serve ``controller`` at ``/``."""
    app = plezi.App()
    app.route("/", controller)
    return serve(app, **limits)


def feed_app(tally: Events, **extra: Any) -> tuple[plezi.App, dict[str, Any]]:
    """``/`` serves HTML to plain requests and events to ``Accept: text/event-stream``."""
    conns: dict[str, Any] = {}

    class Feed:
        def index(self) -> str:
            return "plain index"

        def show(self) -> str:
            return f"plain show {self.params['id']}"  # type: ignore[attr-defined]

        def create(self) -> str:
            return "plain create"

        def on_open(self) -> None:
            conns[self.params.get("name", "feed")] = self  # type: ignore[attr-defined]
            tally.add("open")
            self.write("ready")  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            tally.add("message")  # never called on an event stream

        def on_close(self) -> None:
            tally.add("close")

    for name, value in extra.items():
        setattr(Feed, name, value)
    app = plezi.App()
    app.route("/", Feed)
    return app, conns


# -- the stream's head ----------------------------------------------------------------------------


def test_stream_head_and_first_event(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, _ = feed_app(tally)
    running = serve(app)
    with EventStream(running.port) as stream:
        response = stream.open()
        assert response.header("cache-control") == "no-cache"
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        assert response.header("connection") is None
        assert response.header("date")
        assert stream.event() == Event("ready")
    tally.wait_for("close")
    assert "message" not in tally.events


def test_pre_connect_headers_and_cookies_go_out_with_the_head(
    serve: Callable[..., Running],
) -> None:
    class Feed:
        def pre_connect(self) -> None:
            self.response.headers["X-Feed"] = "yes"  # type: ignore[attr-defined]
            self.response.headers["Cache-Control"] = "no-store"  # type: ignore[attr-defined]
            self.response.headers["Content-Length"] = "12"  # type: ignore[attr-defined]
            self.cookies["seen"] = "1"  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

    running = serve_controller(serve, Feed)
    with EventStream(running.port) as stream:
        response = stream.open()
        assert response.header("x-feed") == "yes"
        assert response.headers["cache-control"] == ["no-store"]  # replaces ours
        assert response.header("content-length") is None  # never: the stream has no length
        assert (
            response.header(
                "set-cookie",
            )
            is not None
        )
        assert response.header("set-cookie").startswith("seen=1")  # type: ignore[union-attr]


def test_a_header_with_a_line_break_is_a_500(serve: Callable[..., Running]) -> None:
    class Feed:
        def pre_connect(self) -> None:
            self.response.headers["X-Bad"] = "a\r\nInjected: 1"  # type: ignore[attr-defined]

        def on_open(self) -> None:
            raise AssertionError("never opened")

        def on_message(self, data: Any) -> None:
            pass

    running = serve_controller(serve, Feed)
    with EventStream(running.port) as stream:
        response = stream.read_response()
        assert response.status == 500
        assert response.header("injected") is None
        assert response.text.startswith("Internal")
        assert stream.ended() == []  # and the connection closes


# -- what is written ------------------------------------------------------------------------------


def test_write_named_events_ids_retry_and_multi_line_data(serve: Callable[..., Running]) -> None:
    class Feed:
        def on_open(self) -> None:
            self.write("one line")  # type: ignore[attr-defined]
            self.write("two\nlines\r\nand a third\r")  # type: ignore[attr-defined]
            self.write(b"bytes \xc3\xa9t\xc3\xa9")  # type: ignore[attr-defined]
            self.write("")  # type: ignore[attr-defined]
            self.write_event("tick", event="clock", id=7)  # type: ignore[attr-defined]
            self.write_event("x", id="abc", retry=1500)  # type: ignore[attr-defined]
            self.write_event(bytearray(b"y"), event="named")  # type: ignore[attr-defined]
            try:
                self.write_event("z", event="bad\nname")  # type: ignore[attr-defined]
            except ValueError:
                self.write("ValueError")  # type: ignore[attr-defined]
            try:
                self.write(b"\xff")  # type: ignore[attr-defined]
            except UnicodeDecodeError:
                self.write("UnicodeDecodeError")  # type: ignore[attr-defined]
            try:
                self.write(42)  # type: ignore[attr-defined]
            except TypeError:
                self.write("TypeError")  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

    running = serve_controller(serve, Feed)
    with EventStream(running.port) as stream:
        stream.open()
        assert stream.events(10) == [
            Event("one line"),
            Event("two\nlines\nand a third\n"),
            Event("bytes été"),
            Event(""),
            Event("tick", "clock", "7"),
            Event("x", id="abc", retry=1500),
            Event("y", "named"),
            Event("ValueError"),
            Event("UnicodeDecodeError"),
            Event("TypeError"),
        ]


def test_write_event_on_a_websocket_is_a_type_error(serve: Callable[..., Running]) -> None:
    from wsclient import connect

    class Both:
        def index(self) -> str:
            return f"in HTTP: {self.write_event('x')}"  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            try:
                self.write_event(data)  # type: ignore[attr-defined]
            except TypeError as exc:
                self.write(str(exc))  # type: ignore[attr-defined]

    running = serve_controller(serve, Both)
    with connect(running.ws_url + "/") as ws:
        ws.send("x")
        assert "needs an SSE connection" in ws.recv(timeout=5 * UNIT)
    with RawHTTP(running.port) as http:  # outside a connection: False, like write()
        assert http.request("GET", "/").text == "in HTTP: False"


def test_async_callbacks_and_close_from_the_server(serve: Callable[..., Running]) -> None:
    tally = Events()

    class Feed:
        async def pre_connect(self) -> bool:
            await asyncio.sleep(0)
            return True

        async def on_open(self) -> None:
            await loop_turns()
            self.write(f"id {self.id}")  # type: ignore[attr-defined]
            self.close()  # type: ignore[attr-defined]
            assert not self.open  # type: ignore[attr-defined]
            assert self.write("after close") is False  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

        def on_close(self) -> None:
            tally.add("close")

    running = serve_controller(serve, Feed)
    with EventStream(running.port) as stream:
        stream.open()
        (event,) = stream.ended()
        assert event.data.startswith("id ") and "-" in event.data
    tally.wait_for("close")


def test_last_event_id_is_a_request_header(serve: Callable[..., Running]) -> None:
    class Feed:
        def on_open(self) -> None:
            headers = self.request.headers  # type: ignore[attr-defined]
            self.write(f"resume after {headers.get('last-event-id')}")  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

    running = serve_controller(serve, Feed)
    assert first_event(running.port, headers={"Last-Event-ID": "41"}) == Event("resume after 41")


# -- which requests become streams ---------------------------------------------------------------


def test_other_requests_are_plain_http(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, _ = feed_app(tally)
    running = serve(app)
    with RawHTTP(running.port) as http:
        assert http.request("GET", "/").text == "plain index"
        assert http.request("GET", "/5").text == "plain show 5"
        # Accept without the event-stream type (curl's default, a browser's navigation).
        assert http.request("GET", "/", {"Accept": "*/*"}).text == "plain index"
        accept = "text/html,application/xhtml+xml,*/*;q=0.8"
        assert http.request("GET", "/", {"Accept": accept}).text == "plain index"
        # HEAD and POST with the event-stream Accept: their plain HTTP actions.
        head = http.request("HEAD", "/", STREAM)
        assert head.status == 200
        assert (head.header("content-type") or "").startswith("text/html")
        assert http.request("POST", "/", STREAM, b"x=1").text == "plain create"
        # Still the same keep-alive connection.
        assert http.request("GET", "/7").text == "plain show 7"
    assert "open" not in tally.events


def test_a_controller_that_accepts_no_connections_answers_as_http(
    serve: Callable[..., Running],
) -> None:
    class Page:
        def index(self) -> str:
            return "just a page"

        def on_open(self) -> None:  # no on_message: not a connection controller
            raise AssertionError("never opened")

    running = serve_controller(serve, Page)
    with RawHTTP(running.port) as http:
        response = http.request("GET", "/", STREAM)
        assert (response.status, response.text) == (200, "just a page")
        assert http.request("GET", "/missing", STREAM).status == 404


def test_auto_dispatch_controllers_accept_streams(serve: Callable[..., Running]) -> None:
    class Chat:
        auto_dispatch = True

        def on_open(self) -> None:
            self.write('{"event": "hello"}')  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/chat", Chat)
    running = serve(app)
    assert first_event(running.port, "/chat") == Event('{"event": "hello"}')


def test_on_sse_makes_a_stream_controller_without_on_message(
    serve: Callable[..., Running],
) -> None:
    """Plezi's ``on_sse``: a controller that defines it accepts event streams (and no
    WebSocket), and it runs when the stream opens, after ``on_open``."""
    calls: list[str] = []

    class Ticker:
        def index(self) -> str:
            return "the page"

        def on_open(self) -> None:
            calls.append("on_open")

        def on_sse(self) -> None:
            calls.append("on_sse")
            self.write_event("tick", event="clock")  # type: ignore[attr-defined]

    running = serve_controller(serve, Ticker)
    assert first_event(running.port) == Event("tick", "clock")
    assert calls == ["on_open", "on_sse"]
    with RawHTTP(running.port) as http:
        assert http.request("GET", "/").text == "the page"  # no Accept: the action
        upgrade = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        }
        assert http.request("GET", "/", upgrade).status != 101  # not a WebSocket controller


def test_pre_connect_refusal_is_403_and_the_next_route_may_accept(
    serve: Callable[..., Running],
) -> None:
    class Closed:
        def pre_connect(self) -> bool:
            return self.params.get("key") == "ok"  # type: ignore[attr-defined, no-any-return]

        def on_open(self) -> None:
            self.write("closed route")  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

    class Lenient:
        async def pre_connect(self) -> bool:
            return self.params.get("key") == "other"  # type: ignore[attr-defined, no-any-return]

        def on_open(self) -> None:
            self.write("lenient route")  # type: ignore[attr-defined]

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/feed", Closed)
    app.route("/feed", Lenient)
    running = serve(app)
    with RawHTTP(running.port) as http:
        refused = http.request("GET", "/feed?key=no", STREAM)
        assert refused.status == 403
        assert refused.header("connection") is None  # a plain refusal: the connection stays
        refused = http.request("GET", "/feed", STREAM)
        assert refused.status == 403
    assert first_event(running.port, "/feed?key=ok") == Event("closed route")
    assert first_event(running.port, "/feed?key=other") == Event("lenient route")


# -- the connection after the request ------------------------------------------------------------


def test_bytes_after_the_stream_request_are_ignored(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, conns = feed_app(tally)
    running = serve(app)
    before = request_bytes("GET", "/1")
    after = request_bytes("GET", "/2") + b"GARBAGE \x00\xff\r\n\r\n"
    with EventStream(running.port, "/?name=piped", before=before, after=after) as stream:
        # The request before it is answered first, then the stream begins.
        first = stream.read_response()
        assert (first.status, first.text) == (200, "plain show 1")
        assert stream.first() == Event("ready")
        # More bytes later: still ignored, and the stream still works.
        stream.sock.sendall(request_bytes("GET", "/3") + b"\x00" * 10_000)
        tally.wait_for("open")
        assert running.call(lambda: conns["piped"].write("still here")) is True
        assert stream.event() == Event("still here")
        assert b"HTTP/1.1" not in stream.buf
    tally.wait_for("close")
    assert tally.events.count("open") == 1


def test_a_stream_request_behind_an_async_reply(serve: Callable[..., Running]) -> None:
    class Slow:
        async def index(self) -> str:
            await loop_turns()
            return "slow reply"

    tally = Events()
    app, _ = feed_app(tally)
    app.route("/slow", Slow)
    app.routes.insert(0, app.routes.pop())  # before "/", whose (:id) would take "/slow"
    running = serve(app)
    before = request_bytes("GET", "/slow")
    after = request_bytes("GET", "/slow")
    with EventStream(running.port, before=before, after=after) as stream:
        assert stream.read_response().text == "slow reply"
        assert stream.first() == Event("ready")
        assert b"HTTP/1.1" not in stream.buf


def test_an_upgrade_header_other_than_websocket_is_ignored(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, _ = feed_app(tally)
    running = serve(app)
    h2c = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABk"}
    with EventStream(
        running.port, headers=h2c, after=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    ) as stream:
        assert stream.first() == Event("ready")
        assert b"HTTP" not in stream.buf


def test_client_disconnect_runs_on_close_and_ends_the_subscriptions(
    serve: Callable[..., Running],
) -> None:
    from plezi.pubsub.hub import hub

    tally = Events()

    def on_open(self: Any) -> None:
        self.subscribe("room")
        tally.add("open")

    app, _ = feed_app(tally, on_open=on_open)
    running = serve(app)
    streams = [EventStream(running.port) for _ in range(3)]
    for stream in streams:
        stream.open()
    tally.wait_for("open", 3)
    assert running.call(lambda: hub.registry.count("room")) == 3
    for stream in streams:
        stream.sock.close()
    tally.wait_for("close", 3)
    assert running.call(lambda: hub.registry.count("room")) == 0
    assert running.call(lambda: len(running.server.streams)) == 0


def test_verbose_access_log(serve: Callable[..., Running], caplog: Any) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="plezi.access")
    tally = Events()
    app, _ = feed_app(tally)
    running = serve(app)
    running.server.config.verbose = True
    with EventStream(running.port) as stream:
        stream.first()
    assert any('"GET / HTTP/1.1" 200 SSE' in r.getMessage() for r in caplog.records)
