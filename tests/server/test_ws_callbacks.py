"""WebSocket controller callbacks against a real server: order, types, writes, lifecycle.

Every test builds its own :class:`plezi.App` and talks to it over real sockets on port 0, with the
``websockets`` client for well-formed traffic and :class:`wsclient.RawClient` where the test needs
to control the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from wsclient import RawClient, connect, small_send_buffer

import plezi
from helpers import ROOT, UNIT, loop_turns, wait_for
from plezi.protocol.frames import OP_BINARY, OP_CONT, OP_TEXT, encode_frame

EXAMPLES = ROOT / "examples"


def echo_app(cls: type, path: str = "/") -> plezi.App:
    app = plezi.App()
    app.route(path, cls)
    return app


class _Markup(str):
    """Like ``markupsafe.Markup``: a ``str`` subclass."""


class Echo:
    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


# -- on_open before on_message ---------------------------------------------------------------


def test_sync_on_open_finishes_before_any_message(serve: Any) -> None:
    """Messages that arrive with the upgrade request, and while ``on_open`` is still running,
    are delivered only after ``on_open`` returns."""
    gate = threading.Event()
    events: list[str] = []

    class Slow:
        def on_open(self) -> None:
            events.append("open-start")
            # Holds the loop until the test has sent everything (bounded; the test sets it).
            gate.wait(5 * UNIT)
            events.append("open-end")

        def on_message(self, data: str) -> None:
            events.append(data)
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Slow))
    early = b"".join(encode_frame(OP_TEXT, f"m{i}".encode(), mask=b"abcd") for i in range(3))
    with RawClient(running.port, extra=early) as client:
        for i in range(3, 6):
            client.send_text(f"m{i}")
        gate.set()
        got = [client.recv_message().text for _ in range(6)]
    assert got == [f"m{i}" for i in range(6)]
    assert events == ["open-start", "open-end", *got]


def test_async_on_open_finishes_before_any_message(serve: Any) -> None:
    """An ``async`` ``on_open`` that awaits: messages wait for it, then come in order."""
    events: list[str] = []
    box: dict[str, asyncio.Future[None]] = {}
    started = threading.Event()

    class SlowAsync:
        async def on_open(self) -> None:
            events.append("open-start")
            box["fut"] = asyncio.get_running_loop().create_future()
            started.set()
            await box["fut"]
            events.append("open-end")

        def on_message(self, data: str) -> None:
            events.append(data)
            self.write(data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/slow", SlowAsync)
    app.route("/echo", Echo)
    running = serve(app)
    early = b"".join(encode_frame(OP_TEXT, f"m{i}".encode(), mask=b"abcd") for i in range(3))
    with (
        RawClient(running.port, "/slow", extra=early) as client,
        connect(running.ws_url + "/echo") as barrier,
    ):
        assert started.wait(5 * UNIT)
        for i in range(3, 6):
            client.send_text(f"m{i}")
        # A round trip on another connection lets the server loop read what was sent above.
        barrier.send("sync")
        assert barrier.recv(timeout=5 * UNIT) == "sync"
        assert running.call(lambda: list(events)) == ["open-start"]
        running.call(lambda: box["fut"].set_result(None))
        got = [client.recv_message().text for _ in range(6)]
    assert got == [f"m{i}" for i in range(6)]
    assert events == ["open-start", "open-end", *got]


# -- data types ------------------------------------------------------------------------------


def test_text_is_str_and_binary_is_bytes(serve: Any) -> None:
    seen: list[type] = []

    class Types:
        def on_message(self, data: Any) -> None:
            seen.append(type(data))
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Types))
    with connect(running.ws_url + "/") as ws:
        ws.send("héllo ✓")
        assert ws.recv(timeout=5 * UNIT) == "héllo ✓"
        ws.send(b"\x00\xff binary")
        assert ws.recv(timeout=5 * UNIT) == b"\x00\xff binary"
        ws.send("")
        assert ws.recv(timeout=5 * UNIT) == ""
        ws.send(b"")
        assert ws.recv(timeout=5 * UNIT) == b""
    assert seen == [str, bytes, str, bytes]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: "text ✓", "text ✓"),
        (lambda: b"bytes", b"bytes"),
        (lambda: bytearray(b"bytearray"), b"bytearray"),
        (lambda: memoryview(b"xxmemoryviewxx")[2:-2], b"memoryview"),
        (lambda: b"x" * 70000, b"x" * 70000),  # 64-bit length header
        (lambda: "y" * 300, "y" * 300),  # 16-bit length header
        (lambda: _Markup("<b>safe</b>"), "<b>safe</b>"),  # a str subclass is still text
    ],
    ids=["str", "bytes", "bytearray", "memoryview", "bytes-64k", "str-300", "str-subclass"],
)
def test_write_picks_the_frame_type(serve: Any, make: Any, expected: Any) -> None:
    class Writer:
        def on_message(self, data: Any) -> None:
            self.write(make())  # type: ignore[attr-defined]

    running = serve(echo_app(Writer))
    with RawClient(running.port) as client:
        client.send_text("go")
        frame = client.recv_message()
    assert frame.fin
    assert frame.opcode == (OP_TEXT if isinstance(expected, str) else OP_BINARY)
    assert frame.payload == (expected.encode() if isinstance(expected, str) else expected)


def test_write_of_another_type_raises_and_the_connection_stays_usable(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Decision: ``write(<not str/bytes-like>)`` raises ``TypeError`` in the caller, sends nothing
    and leaves the connection open; uncaught, it is logged like any error in a callback."""
    caplog.set_level(logging.INFO, logger="plezi")
    caught: list[str] = []

    class BadWriter:
        def on_message(self, data: str) -> None:
            if data == "caught":
                try:
                    self.write(42)  # type: ignore[attr-defined]
                except TypeError as exc:
                    caught.append(str(exc))
                self.write("after caught")  # type: ignore[attr-defined]
            elif data == "uncaught":
                self.write({1, 2})  # type: ignore[attr-defined]  # (a dict or list is JSON)
            else:
                self.write("echo " + data)  # type: ignore[attr-defined]

    running = serve(echo_app(BadWriter))
    with connect(running.ws_url + "/") as ws:
        ws.send("caught")
        assert ws.recv(timeout=5 * UNIT) == "after caught"
        ws.send("uncaught")
        ws.send("still here")
        assert ws.recv(timeout=5 * UNIT) == "echo still here"
    assert len(caught) == 1
    assert "int" in caught[0]
    errors = [r for r in caplog.records if r.name == "plezi" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "on_message" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is TypeError


# -- close(), open, pending, id --------------------------------------------------------------


def test_server_close_sends_1000_and_on_close_runs_once(serve: Any) -> None:
    closed = threading.Event()
    calls: list[bool] = []
    after_close: list[bool] = []

    class Closer:
        def on_message(self, data: str) -> None:
            self.close()  # type: ignore[attr-defined]
            # After close(): not open, and writing is refused.
            after_close.append(self.open)  # type: ignore[attr-defined]
            after_close.append(self.write("too late"))  # type: ignore[attr-defined]

        def on_close(self) -> None:
            calls.append(self.open)  # type: ignore[attr-defined]
            closed.set()

    running = serve(echo_app(Closer))
    with connect(running.ws_url + "/") as ws:
        ws.send("please close")
        with pytest.raises(ConnectionClosedOK) as info:
            ws.recv(timeout=5 * UNIT)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1000
    assert closed.wait(5 * UNIT)
    running.stop()  # a shutdown must not call on_close again
    assert calls == [False]
    assert after_close == [False, False]


def test_server_close_over_raw_socket_then_tcp_close(serve: Any) -> None:
    class Closer:
        def on_message(self, data: str) -> None:
            self.close()  # type: ignore[attr-defined]

    running = serve(echo_app(Closer))
    with RawClient(running.port) as client:
        client.send_text("bye")
        assert client.recv_close() == 1000
        client.send_close(1000)
        assert client.wait_eof() == b""


def test_open_and_pending_properties(serve: Any) -> None:
    box: dict[str, Any] = {}
    closed = threading.Event()

    class Props:
        def on_open(self) -> None:
            box["inst"] = self
            box["open_in_on_open"] = self.open  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            before = self.pending  # type: ignore[attr-defined]
            self.write("x" * 1000)  # type: ignore[attr-defined]
            after = self.pending  # type: ignore[attr-defined]
            self.write(f"{self.open} {before} {after}")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            box["open_in_on_close"] = self.open  # type: ignore[attr-defined]
            closed.set()

    running = serve(echo_app(Props))
    with connect(running.ws_url + "/") as ws:
        ws.send("go")
        assert ws.recv(timeout=5 * UNIT) == "x" * 1000
        is_open, before, after = ws.recv(timeout=5 * UNIT).split()
        assert is_open == "True"
        assert int(before) == 0
        assert int(after) >= 1004  # the frame is queued (corked) until on_message returns
        # Everything was delivered: nothing is pending any more.
        assert running.call(lambda: box["inst"].pending) == 0
    assert closed.wait(5 * UNIT)
    assert box["open_in_on_open"] is True
    assert box["open_in_on_close"] is False


def test_id_is_unique_per_connection_and_stable(serve: Any) -> None:
    class Ids:
        def on_open(self) -> None:
            self.write(self.id)  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            self.write(self.id)  # type: ignore[attr-defined]

    running = serve(echo_app(Ids))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(running.ws_url + "/")) for _ in range(5)]
        ids = [ws.recv(timeout=5 * UNIT) for ws in clients]
        for ws, first in zip(clients, ids, strict=True):
            ws.send("again")
            assert ws.recv(timeout=5 * UNIT) == first
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 5


# -- on_close ----------------------------------------------------------------------------------


class _CloseCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()


def _counting_app(counter: _CloseCounter) -> plezi.App:
    class Counted:
        def on_message(self, data: Any) -> None:
            self.write(data)  # type: ignore[attr-defined]

        def on_close(self) -> None:
            counter.calls += 1
            counter.event.set()

    return echo_app(Counted)


def test_on_close_once_after_a_clean_client_close(serve: Any) -> None:
    counter = _CloseCounter()
    running = serve(_counting_app(counter))
    with connect(running.ws_url + "/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "hi"
        ws.close()
        assert ws.close_code == 1000
    assert counter.event.wait(5 * UNIT)
    running.stop()
    assert counter.calls == 1


def test_on_close_once_after_a_tcp_reset(serve: Any) -> None:
    counter = _CloseCounter()
    running = serve(_counting_app(counter))
    client = RawClient(running.port)
    client.send_text("hi")
    assert client.recv_message().text == "hi"
    client.reset()
    assert counter.event.wait(5 * UNIT)
    assert running.call(lambda: len(running.server.connections)) == 0
    running.stop()
    assert counter.calls == 1


def test_on_close_once_after_a_tcp_close_without_close_frame(serve: Any) -> None:
    counter = _CloseCounter()
    running = serve(_counting_app(counter))
    client = RawClient(running.port)
    client.send_text("hi")
    assert client.recv_message().text == "hi"
    client.sock.shutdown(socket.SHUT_WR)
    assert counter.event.wait(5 * UNIT)
    client.close()
    running.stop()
    assert counter.calls == 1


# -- pre_connect -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_pre_connect_false_tries_the_next_route(serve: Any, kind: str) -> None:
    asked: list[str] = []

    class Refuses:
        if kind == "sync":

            def pre_connect(self) -> bool:
                asked.append("first")
                return False
        else:

            async def pre_connect(self) -> bool:
                await asyncio.sleep(0)
                asked.append("first")
                return False

        def on_message(self, data: str) -> None:
            self.write("first: " + data)  # type: ignore[attr-defined]

    class Accepts:
        def pre_connect(self) -> None:
            asked.append("second")

        def on_message(self, data: str) -> None:
            self.write("second: " + data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/room", Refuses)
    app.route("/room", Accepts)
    running = serve(app)
    with connect(running.ws_url + "/room") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "second: hi"
    assert asked == ["first", "second"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_pre_connect_refused_by_every_route_is_403(serve: Any, kind: str) -> None:
    class No:
        if kind == "sync":

            def pre_connect(self) -> bool:
                return False
        else:

            async def pre_connect(self) -> bool:
                return False

        def on_message(self, data: str) -> None:
            raise AssertionError("never connected")

    app = plezi.App()
    app.route("/", No)
    app.route("/", No)
    running = serve(app)
    with pytest.raises(InvalidStatus) as info:
        connect(running.ws_url + "/")
    assert info.value.response.status_code == 403
    # The server is fine afterwards.
    with pytest.raises(InvalidStatus):
        connect(running.ws_url + "/")


def test_frames_sent_with_the_upgrade_wait_for_an_async_pre_connect(serve: Any) -> None:
    """Frames that arrive in the same packet as the upgrade request, while an ``async``
    ``pre_connect`` is still deciding, are delivered after ``on_open``, in order."""
    events: list[str] = []

    class Gate:
        async def pre_connect(self) -> None:
            for _ in range(5):
                await asyncio.sleep(0)
            events.append("pre_connect")

        def on_open(self) -> None:
            events.append("open")

        def on_message(self, data: str) -> None:
            events.append(data)
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Gate))
    early = b"".join(encode_frame(OP_TEXT, f"m{i}".encode(), mask=b"abcd") for i in range(5))
    with RawClient(running.port, extra=early) as client:
        client.send_text("m5")
        got = [client.recv_message().text for _ in range(6)]
    assert got == [f"m{i}" for i in range(6)]
    assert events == ["pre_connect", "open", *got]


def test_pre_connect_headers_and_cookies_reach_the_101(serve: Any) -> None:
    class Auth:
        def pre_connect(self) -> None:
            self.response.headers["X-Room"] = "lobby"  # type: ignore[attr-defined]
            self.cookies["session"] = "abc123"  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Auth))
    with connect(running.ws_url + "/") as ws:
        headers = ws.response.headers
        assert ws.response.status_code == 101
        assert headers["X-Room"] == "lobby"
        assert any(c.startswith("session=abc123") for c in headers.get_all("Set-Cookie"))
        ws.send("ok")
        assert ws.recv(timeout=5 * UNIT) == "ok"


def test_a_websocket_request_to_a_plain_http_route_is_refused(serve: Any) -> None:
    class Page:
        def index(self) -> str:
            return "page"

    running = serve(echo_app(Page))
    with pytest.raises(InvalidStatus) as info:
        connect(running.ws_url + "/")
    assert info.value.response.status_code >= 400


# -- ordering ----------------------------------------------------------------------------------


def test_async_on_message_never_overlaps_and_keeps_order(serve: Any) -> None:
    """An ``async`` ``on_message`` that awaits for a random number of loop turns (sometimes
    none) still sees messages one at a time, in order, and ``on_close`` runs after the last one."""
    rng = random.Random(1234)
    delays = [rng.choice([0, 0, 1, 3]) for _ in range(100)]
    order: list[str] = []
    state = {"active": 0, "max_active": 0}
    closed = threading.Event()

    class Slowpoke:
        async def on_message(self, data: str) -> None:
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
            delay = delays[int(data)]
            if delay:
                await loop_turns(delay)
            order.append(data)
            state["active"] -= 1
            if data == "99":
                self.write("done")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            order.append("closed")
            closed.set()

    running = serve(echo_app(Slowpoke))
    with connect(running.ws_url + "/") as ws:
        for i in range(100):
            ws.send(str(i))
        assert ws.recv(timeout=10 * UNIT) == "done"
    assert closed.wait(5 * UNIT)
    assert order == [str(i) for i in range(100)] + ["closed"]
    assert state["max_active"] == 1


def test_mixed_sync_and_async_callbacks_keep_their_order(serve: Any) -> None:
    """async on_open, sync on_message, async on_close: one sequence; messages sent before the
    close are all delivered before on_close, even while the async on_open is still running."""
    order: list[str] = []
    closed = threading.Event()

    class Mixed:
        async def on_open(self) -> None:
            for _ in range(5):
                await asyncio.sleep(0)
            order.append("open")

        def on_message(self, data: str) -> None:
            order.append(data)

        async def on_close(self) -> None:
            await asyncio.sleep(0)
            order.append("closed")
            closed.set()

    running = serve(echo_app(Mixed))
    frames = b"".join(encode_frame(OP_TEXT, str(i).encode(), mask=b"abcd") for i in range(50))
    close = encode_frame(0x8, b"\x03\xe8", mask=b"abcd")
    with RawClient(running.port, extra=frames + close) as client:
        assert client.recv_close() == 1000
        client.wait_eof()
    assert closed.wait(5 * UNIT)
    assert order == ["open", *[str(i) for i in range(50)], "closed"]


def test_a_backlog_behind_an_async_on_message_then_a_close(serve: Any) -> None:
    """200 messages and a close frame in one packet to a slow async on_message: the backlog
    (which pauses reading past 64 events) is delivered in full and in order, then on_close."""
    order: list[str] = []
    closed = threading.Event()

    class Slow:
        async def on_message(self, data: str) -> None:
            await loop_turns(1)
            order.append(data)

        def on_close(self) -> None:
            order.append("closed")
            closed.set()

    running = serve(echo_app(Slow))
    frames = b"".join(encode_frame(OP_TEXT, str(i).encode(), mask=b"abcd") for i in range(200))
    close = encode_frame(0x8, b"\x03\xe8", mask=b"abcd")
    with RawClient(running.port) as client:
        client.send_raw(frames + close)
        assert client.recv_close() == 1000
        assert client.wait_eof() == b""
    assert closed.wait(5 * UNIT)
    assert order == [*[str(i) for i in range(200)], "closed"]


def test_a_decorated_async_callback_is_awaited_in_order(serve: Any) -> None:
    """A sync wrapper around an ``async def`` (what a decorator produces) returns a coroutine:
    it is awaited like a declared ``async`` callback, in order, never dropped."""
    order: list[str] = []

    def logged(func: Any) -> Any:
        def wrapper(self: Any, *args: Any) -> Any:
            return func(self, *args)

        return wrapper

    class Decorated:
        @logged
        async def on_open(self) -> None:
            await asyncio.sleep(0)
            order.append("open")

        @logged
        async def on_message(self, data: str) -> None:
            if int(data) % 3 == 0:
                await loop_turns(3)
            order.append(data)
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Decorated))
    with connect(running.ws_url + "/") as ws:
        for i in range(30):
            ws.send(str(i))
        got = [ws.recv(timeout=5 * UNIT) for _ in range(30)]
    assert got == [str(i) for i in range(30)]
    assert order == ["open", *got]


def test_sync_on_message_costs_no_task(serve: Any) -> None:
    seen_tasks: list[int] = []
    current: list[object] = []

    class Counter:
        def on_message(self, data: str) -> None:
            seen_tasks.append(len(asyncio.all_tasks()))
            current.append(asyncio.current_task())
            if data == "99":
                self.write("done")  # type: ignore[attr-defined]

    running = serve(echo_app(Counter))
    with connect(running.ws_url + "/") as ws:
        # Connected and idle: measure the baseline from the loop itself.
        ws.send("-1")
        baseline = running.call(lambda: len(asyncio.all_tasks(running.loop)))
        for i in range(100):
            ws.send(str(i))
        assert ws.recv(timeout=5 * UNIT) == "done"
        after = running.call(lambda: len(asyncio.all_tasks(running.loop)))
    assert after == baseline
    assert len(seen_tasks) == 101
    assert set(seen_tasks) == {baseline}
    assert current == [None] * 101  # run inline, not inside a task


def test_an_exception_in_on_message_is_logged_and_the_connection_goes_on(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")

    class Fragile:
        def on_message(self, data: str) -> None:
            if data == "boom":
                raise ValueError("boom!")
            self.write("ok " + data)  # type: ignore[attr-defined]

    class FragileAsync:
        async def on_message(self, data: str) -> None:
            await asyncio.sleep(0)
            if data == "boom":
                raise ValueError("async boom!")
            self.write("ok " + data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/sync", Fragile)
    app.route("/async", FragileAsync)
    running = serve(app)
    for path in ("/sync", "/async"):
        with connect(running.ws_url + path) as ws:
            ws.send("one")
            ws.send("boom")
            ws.send("two")
            assert ws.recv(timeout=5 * UNIT) == "ok one"
            assert ws.recv(timeout=5 * UNIT) == "ok two"
    errors = [r for r in caplog.records if r.name == "plezi" and r.levelno >= logging.ERROR]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["boom!", "async boom!"]
    assert all("on_message" in r.getMessage() for r in errors)


def test_an_exception_in_on_open_is_logged_and_messages_still_flow(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")

    class BadOpen:
        def on_open(self) -> None:
            raise RuntimeError("open failed")

        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(BadOpen))
    with connect(running.ws_url + "/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "hi"
    assert any(r.exc_info and "open failed" in str(r.exc_info[1]) for r in caplog.records)


# -- flow control --------------------------------------------------------------------------


def test_on_drained_after_the_buffer_filled_and_emptied(serve: Any) -> None:
    chunk = b"z" * 32768
    count = 32  # 1 MiB: far more than the small socket buffers hold
    drained: list[int] = []

    class Flood:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: str) -> None:
            for _ in range(count):
                self.write(chunk)  # type: ignore[attr-defined]

        def on_drained(self) -> None:
            drained.append(self.pending)  # type: ignore[attr-defined]
            if len(drained) == 1:
                self.write("drained")  # type: ignore[attr-defined]

    running = serve(echo_app(Flood), write_high_water=16 * 1024, max_outgoing_buffer=8 << 20)
    with RawClient(running.port, rcvbuf=16384) as client:
        client.send_text("go")
        for _ in range(count):
            frame = client.recv_message()
            assert frame.opcode == OP_BINARY and frame.payload == chunk
        assert client.recv_message().text == "drained"
    assert drained and drained[0] == 0


# -- framing over TCP ------------------------------------------------------------------------


def test_a_text_frame_sent_byte_by_byte_is_one_str(serve: Any) -> None:
    seen: list[Any] = []

    class Record:
        def on_message(self, data: Any) -> None:
            seen.append(data)
            self.write(data)  # type: ignore[attr-defined]

    running = serve(echo_app(Record))
    text = "naïve ✓ café " * 20  # 2- and 3-byte characters, and a 16-bit length
    binary = bytes(range(256))
    with RawClient(running.port) as client:
        for byte in encode_frame(OP_TEXT, text.encode(), mask=b"k3y!"):
            client.send_raw(bytes([byte]))
        assert client.recv_message().text == text
        # A fragmented text message, byte by byte, split inside the multi-byte characters.
        raw = "✓✓✓ é".encode()
        frames = (
            encode_frame(OP_TEXT, raw[:2], fin=False, mask=b"abcd")
            + encode_frame(OP_CONT, raw[2:7], fin=False, mask=b"efgh")
            + encode_frame(OP_CONT, raw[7:], mask=b"ijkl")
        )
        for byte in frames:
            client.send_raw(bytes([byte]))
        assert client.recv_message().text == "✓✓✓ é"
        for byte in encode_frame(OP_BINARY, binary, mask=b"abcd"):
            client.send_raw(bytes([byte]))
        frame = client.recv_message()
        assert frame.opcode == OP_BINARY and frame.payload == binary
    assert seen == [text, "✓✓✓ é", binary]
    assert [type(x) for x in seen] == [str, str, bytes]


# -- corking ---------------------------------------------------------------------------------


def test_many_writes_in_one_callback_arrive_in_order(serve: Any) -> None:
    class Burst:
        def on_message(self, data: str) -> None:
            for i in range(100):
                self.write(f"{data}-{i}")  # type: ignore[attr-defined]

    running = serve(echo_app(Burst))
    with connect(running.ws_url + "/") as ws:
        ws.send("a")
        ws.send("b")
        got = [ws.recv(timeout=5 * UNIT) for _ in range(200)]
    assert got == [f"a-{i}" for i in range(100)] + [f"b-{i}" for i in range(100)]


def test_writes_in_one_callback_leave_in_one_write(serve: Any) -> None:
    """Corking: the 100 frames of one callback are handed to the kernel in one write, so on
    loopback the first recv() returns all of them. Several rounds, all must be whole."""

    class Burst:
        def on_message(self, data: str) -> None:
            for i in range(100):
                self.write(f"{data}-{i}")  # type: ignore[attr-defined]

    running = serve(echo_app(Burst))
    expected_size = sum(2 + len(f"r0-{i}") for i in range(100))
    with RawClient(running.port) as client:
        for round_ in range(5):
            client.send_text(f"r{round_}")
            client.sock.settimeout(5 * UNIT)
            first = client.sock.recv(1 << 20)
            assert len(first) == expected_size, f"round {round_}: {len(first)} of {expected_size}"
            client.buf = first
            texts = [client.recv_message().text for _ in range(100)]
            assert texts == [f"r{round_}-{i}" for i in range(100)]


def test_writes_from_outside_a_callback_are_corked_per_loop_iteration(serve: Any) -> None:
    """Writes made from the loop (a timer, another connection, pub/sub) outside this connection's
    own callbacks also leave in one write per iteration."""
    box: dict[str, Any] = {}
    opened = threading.Event()

    class Target:
        def on_open(self) -> None:
            box["inst"] = self
            opened.set()

        def on_message(self, data: str) -> None:
            pass

    running = serve(echo_app(Target))
    with RawClient(running.port) as client:
        assert opened.wait(5 * UNIT)

        def burst() -> None:
            for i in range(50):
                box["inst"].write(f"t-{i}")

        running.call(burst)
        client.sock.settimeout(5 * UNIT)
        first = client.sock.recv(1 << 20)
        assert len(first) == sum(2 + len(f"t-{i}") for i in range(50))
        client.buf = first
        assert [client.recv_message().text for _ in range(50)] == [f"t-{i}" for i in range(50)]


# -- the guide's programs ----------------------------------------------------------------------


def test_guide_echo_example(script: Any) -> None:
    proc = script(EXAMPLES / "echo.py")
    with connect(proc.ws_url + "/") as ws:
        ws.send("Hello, echo ✓")
        assert ws.recv(timeout=5 * UNIT) == "Hello, echo ✓"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5 * UNIT) == b"\x00\x01binary"
    code, err = proc.stop()
    assert code == 0, err


def test_guide_websocket_sample_echoes_with_a_prefix(script: Any) -> None:
    proc = script(EXAMPLES / "websocket_sample.py")
    with connect(proc.ws_url + "/") as ws:
        ws.send("Hello")
        assert ws.recv(timeout=5 * UNIT) == "echo: Hello"
    code, err = proc.stop()
    assert code == 0, err


def test_closed_connection_refuses_writes_from_outside(serve: Any) -> None:
    """A write to a connection that has closed returns False instead of raising."""
    box: dict[str, Any] = {}
    closed = threading.Event()

    class Keep:
        def on_open(self) -> None:
            box["inst"] = self

        def on_message(self, data: str) -> None:
            pass

        def on_close(self) -> None:
            closed.set()

    running = serve(echo_app(Keep))
    with connect(running.ws_url + "/") as ws:
        ws.send("x")
    assert closed.wait(5 * UNIT)
    assert running.call(lambda: box["inst"].write("late")) is False
    assert running.call(lambda: box["inst"].open) is False


def test_a_bad_header_set_in_pre_connect_gets_500_not_a_dropped_connection(serve, caplog):
    class Bad:
        def pre_connect(self):
            self.response.headers["X-Bad"] = "a\r\nInjected: yes"

        def on_message(self, data):
            self.write(data)

    app = plezi.App()
    app.route("/", Bad)
    running = serve(app)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5 * UNIT) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 500")
    assert b"Injected" not in data
    assert any("cannot accept the WebSocket" in r.getMessage() for r in caplog.records)


# -- what a held connection keeps ------------------------------------------------------------


def test_held_connections_share_equal_header_values(serve: Any) -> None:
    """MEMORY: every WebSocket keeps its upgrade request for its whole life; header values
    equal across connections (``Host``, ``User-Agent``...) are one shared string, while the
    request's own key stays its own, and every value reads as the client sent it."""
    seen: list[dict[str, str]] = []

    class Keep(Echo):
        def on_open(self) -> None:
            seen.append(self.request.headers)  # type: ignore[attr-defined]

    running = serve(echo_app(Keep))
    agent = "plezi-test/1.0 (" + "x" * 100 + ")"
    long = "y" * 300  # past the length that is shared: kept as it is
    headers = {"X-Long": long}
    options: dict[str, Any] = {"additional_headers": headers, "user_agent_header": agent}
    with connect(running.ws_url, **options) as a, connect(running.ws_url, **options) as b:
        wait_for(lambda: len(seen) == 2, "both on_open")
        a.send("1")
        b.send("2")
        assert (a.recv(5 * UNIT), b.recv(5 * UNIT)) == ("1", "2")
    first, second = seen
    for name in ("host", "user-agent", "upgrade", "sec-websocket-version"):
        assert first[name] == second[name]
        assert first[name] is second[name], name
    assert first["user-agent"] == agent
    assert first["x-long"] == second["x-long"] == long
    assert first["x-long"] is not second["x-long"]
    assert first["sec-websocket-key"] != second["sec-websocket-key"]
