"""Pub/sub in one process, over real WebSockets: a real server on port 0 in a thread, real clients.

The hub is process-global and the ``serve`` fixture's server attaches it: one server per test, and
the ``no_leaks`` fixture checks that every test leaves the registry empty (connection subscriptions
die with their connections; connectionless ones are removed in a ``finally``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from wsclient import RawClient, connect, small_send_buffer

import plezi
from helpers import UNIT, Events, Running, app_of
from plezi.protocol.frames import OP_BINARY, OP_TEXT, encode_frame
from plezi.pubsub.hub import hub

pytestmark = pytest.mark.usefixtures("no_leaks")


def count(running: Running, name: str, *, pattern: bool = False) -> int:
    return int(running.call(lambda: hub.registry.count(name, pattern=pattern)))


def publish_on_loop(running: Running, channel: str, message: Any) -> None:
    """Publish from the server's loop: delivered (queued, handlers run) when this returns."""
    running.call(lambda: plezi.publish(channel, message))


def recv(ws: ClientConnection) -> Any:
    return ws.recv(timeout=5 * UNIT)


def opened(url: str, greeting: str | None = "ready") -> ClientConnection:
    """A client whose ``on_open`` has run (it writes ``greeting`` when it has subscribed).
    Close it, or use it in a ``with`` block."""
    ws = connect(url).__enter__()  # the websockets client wants to be a context manager
    if greeting is not None:
        assert recv(ws) == greeting
    return ws


class WS:
    """A WebSocket controller (a route is a WebSocket endpoint when it has ``on_message``)."""

    def on_message(self, data: Any) -> None:
        pass


class Room:
    """Forwards the channel named by the path to its client; subscribes twice (must not
    duplicate); publishes what it is sent as ``<tag>:<n>`` on ``"go <tag> <n>"``."""

    def on_open(self) -> None:
        channel = self.params["id"]  # type: ignore[attr-defined]
        self.subscribe(channel)  # type: ignore[attr-defined]
        self.subscribe(channel)  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: str) -> None:
        _, tag, n = data.split()
        for i in range(int(n)):
            self.publish("room", f"{tag}:{i}")  # type: ignore[attr-defined]
        self.publish("room", f"{tag}:end")  # type: ignore[attr-defined]


# -- order, exactly once -----------------------------------------------------------------------


def test_each_publishers_messages_arrive_in_order_exactly_once_at_every_subscriber(
    serve: Any,
) -> None:
    """Two publishers at once (a connection's callback, and the test thread through the
    thread-safe ``plezi.publish``), 1,000 numbered messages each: every subscriber gets each
    publisher's messages complete, in order, once, although each subscribed twice."""
    running = serve(app_of(("/", Room)))
    n = 1000
    subscribers = [opened(running.ws_url + "/room") for _ in range(3)]
    publisher = opened(running.ws_url + "/other")
    try:
        assert count(running, "room") == 3
        publisher.send(f"go a {n}")
        for i in range(n):
            plezi.publish("room", f"b:{i}")
        plezi.publish("room", "b:end")
        for ws in subscribers:
            got: dict[str, list[str]] = {"a": [], "b": []}
            ends = 0
            while ends < 2:
                tag, value = recv(ws).split(":")
                if value == "end":
                    ends += 1
                else:
                    got[tag].append(value)
            assert got["a"] == [str(i) for i in range(n)]
            assert got["b"] == [str(i) for i in range(n)]
        # Nothing more (a duplicate of an end marker would come before this).
        plezi.publish("room", "final")
        for ws in subscribers:
            assert recv(ws) == "final"
        assert count(running, "room") == 3
    finally:
        for ws in (*subscribers, publisher):
            ws.close()


def test_a_channel_and_a_matching_pattern_deliver_once_per_subscription(serve: Any) -> None:
    """Decision (Redis's): a connection subscribed to ``chat.1`` and to ``chat.*`` gets a message
    on ``chat.1`` twice, once per subscription; re-subscribing either one adds nothing."""

    class Both(WS):
        def on_open(self) -> None:
            for _ in range(2):
                self.subscribe("chat.1")  # type: ignore[attr-defined]
                self.subscribe("chat.*", pattern=True)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Both)))
    with opened(running.ws_url + "/") as ws:
        publish_on_loop(running, "chat.1", "one")
        publish_on_loop(running, "chat.2", "two")
        publish_on_loop(running, "chat.1", "three")
        assert [recv(ws) for _ in range(5)] == ["one", "one", "two", "three", "three"]
        publish_on_loop(running, "end", "x")  # not subscribed
        publish_on_loop(running, "chat.end", "end")
        assert recv(ws) == "end"


# -- unsubscribing -----------------------------------------------------------------------------


def test_subscriptions_end_with_the_connection_and_on_unsubscribe(serve: Any) -> None:
    closed = Events()

    class Sub(WS):
        def on_open(self) -> None:
            self.subscribe("news")  # type: ignore[attr-defined]
            self.subscribe("news.*", pattern=True)  # type: ignore[attr-defined]
            self.subscribe("notes", self.note)  # type: ignore[attr-defined]
            self.subscribe("control")  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        def note(self, message: str) -> None:
            self.write(f"note:{message}")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            channel, _, pattern = data.partition(" ")
            first = self.unsubscribe(channel, pattern=bool(pattern))  # type: ignore[attr-defined]
            again = self.unsubscribe(channel, pattern=bool(pattern))  # type: ignore[attr-defined]
            self.write(f"{first} {again}")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.add("close")

    running = serve(app_of(("/", Sub)))
    # Explicit unsubscribe.
    with opened(running.ws_url + "/") as ws:
        assert count(running, "news") == count(running, "news.*", pattern=True) == 1
        ws.send("news")
        assert recv(ws) == "True False"
        ws.send("notes")
        assert recv(ws) == "True False"
        ws.send("never-subscribed")
        assert recv(ws) == "False False"
        assert count(running, "news") == count(running, "notes") == 0
        for channel in ("news", "notes", "news.x", "control"):
            publish_on_loop(running, channel, channel)
        assert recv(ws) == "news.x"  # still subscribed to the pattern
        assert recv(ws) == "control"  # and nothing from "news" or "notes" in between
        ws.send("news.* pattern")
        assert recv(ws) == "True False"
        publish_on_loop(running, "news.y", "news.y")
        publish_on_loop(running, "control", "control")
        assert recv(ws) == "control"
    closed.wait_for("close", 1)
    # A clean close, then an abrupt one (TCP reset): every subscription goes.
    for n, how in enumerate(("close", "reset"), 2):
        client = RawClient(running.port)
        assert client.recv_message().text == "ready"
        assert count(running, "control") == 1
        if how == "close":
            client.send_close()
            assert client.recv_close() == 1000
            client.close()
        else:
            client.reset()
        closed.wait_for("close", n)  # cleanup runs before on_close
        for name, pattern in (("news", False), ("news.*", True), ("notes", False)):
            assert count(running, name, pattern=pattern) == 0
        assert count(running, "control") == 0
        assert running.call(lambda: hub.registry.names()) == ([], [])
        publish_on_loop(running, "control", "to nobody")  # no error
        plezi.publish("notes", "to nobody")
    assert running.call(lambda: hub.status())["channels"] == 0


# -- patterns ----------------------------------------------------------------------------------


def test_pattern_subscriptions_end_to_end(serve: Any) -> None:
    class Patterns(WS):
        def on_open(self) -> None:
            for pattern in ("news.*", "h?llo", "room[abc]", "room[^a-c]x", "lit\\*"):
                self.subscribe(pattern, pattern=True)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Patterns)))
    channels = {
        "news.": True,
        "news.sport.today": True,
        "news": False,
        "hello": True,
        "hallo": True,
        "hllo": False,
        "roomb": True,
        "roomd": False,
        "roomdx": True,
        "roombx": False,
        "lit*": True,
        "litx": False,
    }
    with opened(running.ws_url + "/") as ws:
        for channel in channels:
            publish_on_loop(running, channel, channel)
        publish_on_loop(running, "news.end", "end")
        got = []
        while (message := recv(ws)) != "end":
            got.append(message)
    assert got == [channel for channel, matches in channels.items() if matches]


# -- handlers and forwarding -------------------------------------------------------------------


def test_forwarding_and_handlers_one_two_arguments_sync_and_async(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a handler the message goes to the client; with one, the handler gets it instead
    (a failing one is logged under its own name, and the connection goes on)."""
    caplog.set_level(logging.ERROR, logger="plezi")

    class Handlers(WS):
        def on_open(self) -> None:
            try:
                self.subscribe("bad", "not callable")  # type: ignore[attr-defined]
            except TypeError:
                self.write("TypeError")  # type: ignore[attr-defined]
            self.subscribe("failing", self.failing)  # type: ignore[attr-defined]
            self.subscribe("fwd")  # type: ignore[attr-defined]
            self.subscribe("h1", self.one)  # type: ignore[attr-defined]
            self.subscribe("h2", self.two)  # type: ignore[attr-defined]
            self.subscribe("a1", self.async_one)  # type: ignore[attr-defined]
            self.subscribe("a.*", self.async_two, pattern=True)  # type: ignore[attr-defined]
            self.subscribe("lambda", lambda m: self.write(f"lambda:{m}"))  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        def one(self, message: str) -> None:
            self.write(f"one:{message}")  # type: ignore[attr-defined]

        def two(self, channel: str, message: str) -> None:
            self.write(f"two:{channel}:{message}")  # type: ignore[attr-defined]

        async def async_one(self, message: str) -> None:
            await asyncio.sleep(0)
            self.write(f"async_one:{message}")  # type: ignore[attr-defined]

        async def async_two(self, channel: str, message: bytes) -> None:
            await asyncio.sleep(0)
            self.write(f"async_two:{channel}:{message!r}")  # type: ignore[attr-defined]

        def failing(self, message: str) -> None:
            raise RuntimeError("failing handler")

    running = serve(app_of(("/", Handlers)))
    with opened(running.ws_url + "/", "TypeError") as ws:
        assert recv(ws) == "ready"
        assert count(running, "bad") == 0
        for channel, message in (
            ("failing", "-"),
            ("fwd", "f"),
            ("h1", "x"),
            ("h2", "y"),
            ("a1", "z"),
            ("a.b", b"w"),
            ("lambda", "l"),
        ):
            publish_on_loop(running, channel, message)
        assert [recv(ws) for _ in range(6)] == [
            "f",
            "one:x",
            "two:h2:y",
            "async_one:z",
            "async_two:a.b:b'w'",
            "lambda:l",
        ]
    messages = [r.getMessage() for r in caplog.records if r.name == "plezi"]
    assert messages == ["error in Handlers.failing"]


def test_a_bound_handler_waits_for_a_running_async_on_message(serve: Any) -> None:
    """A bound handler runs in the connection's callback order: never while ``on_message`` is
    running (awaiting), and before the next message."""
    events: list[str] = []
    started = threading.Event()
    box: dict[str, asyncio.Event] = {}

    class Ordered:
        def on_open(self) -> None:
            box["gate"] = asyncio.Event()
            self.subscribe("ord", self.on_pub)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        async def on_message(self, data: str) -> None:
            events.append(f"start:{data}")
            started.set()
            if data == "block":
                await box["gate"].wait()
            events.append(f"end:{data}")
            self.write(f"done:{data}")  # type: ignore[attr-defined]

        def on_pub(self, message: str) -> None:
            events.append(f"pub:{message}")
            self.write(f"pub:{message}")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Ordered)))
    with opened(running.ws_url + "/") as ws:
        ws.send("block")
        assert started.wait(5 * UNIT)
        publish_on_loop(running, "ord", "p1")
        ws.send("next")
        publish_on_loop(running, "ord", "p2")
        # A round trip through the loop: the handler had its chance to (wrongly) run.
        assert running.call(lambda: list(events)) == ["start:block"]
        running.call(lambda: box["gate"].set())
        assert [recv(ws) for _ in range(4)] == ["done:block", "pub:p1", "done:next", "pub:p2"]
    assert events == ["start:block", "end:block", "pub:p1", "start:next", "end:next", "pub:p2"]


def test_on_message_waits_for_a_running_async_bound_handler(serve: Any) -> None:
    events: list[str] = []
    started = threading.Event()
    box: dict[str, asyncio.Event] = {}

    class Ordered:
        def on_open(self) -> None:
            box["gate"] = asyncio.Event()
            self.subscribe("ord", self.on_pub)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            events.append(f"msg:{data}")
            self.write(f"msg:{data}")  # type: ignore[attr-defined]

        async def on_pub(self, message: str) -> None:
            events.append(f"start:{message}")
            started.set()
            await box["gate"].wait()
            events.append(f"end:{message}")
            self.write(f"pub:{message}")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Ordered)))
    with opened(running.ws_url + "/") as ws:
        publish_on_loop(running, "ord", "p1")
        assert started.wait(5 * UNIT)
        ws.send("m1")
        publish_on_loop(running, "ord", "p2")
        ws.send("m2")
        # Wait until the server has read both messages (queued behind the running handler).
        conn = running.call(lambda: next(iter(running.server.streams.values())))
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: len(conn._queue or ())) < 3:
            assert time.monotonic() < deadline, "the messages never reached the server"
        assert running.call(lambda: list(events)) == ["start:p1"]
        running.call(lambda: box["gate"].set())
        assert [recv(ws) for _ in range(4)] == ["pub:p1", "msg:m1", "pub:p2", "msg:m2"]
    assert events == ["start:p1", "end:p1", "msg:m1", "start:p2", "end:p2", "msg:m2"]


# -- text and binary ---------------------------------------------------------------------------


def test_text_binary_and_json_frames(serve: Any) -> None:
    handled: list[Any] = []

    class Kinds(WS):
        def on_open(self) -> None:
            self.subscribe("as-published")  # type: ignore[attr-defined]
            self.subscribe("binary", binary=True)  # type: ignore[attr-defined]
            self.subscribe("handled", handled.append)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Kinds)))
    with RawClient(running.port) as client:
        assert client.recv_message().text == "ready"
        cases: list[tuple[str, Any, int, bytes]] = [
            ("as-published", "héllo", OP_TEXT, "héllo".encode()),
            ("as-published", b"\x00\xff", OP_BINARY, b"\x00\xff"),
            ("as-published", bytearray(b"ba"), OP_BINARY, b"ba"),
            ("as-published", {"a": [1, "é"]}, OP_TEXT, '{"a":[1,"é"]}'.encode()),
            ("as-published", [1, None], OP_TEXT, b"[1,null]"),
            ("binary", "text", OP_BINARY, b"text"),
            ("binary", {"k": 2}, OP_BINARY, b'{"k":2}'),
            ("binary", b"\x01", OP_BINARY, b"\x01"),
        ]
        for channel, message, _, _ in cases:
            publish_on_loop(running, channel, message)
        for *_, opcode, payload in cases:
            frame = client.recv_message()
            assert (frame.opcode, frame.payload) == (opcode, payload)
        for message in ("t", b"b", {"d": 1}, [2]):
            publish_on_loop(running, "handled", message)
        with pytest.raises(TypeError):
            plezi.publish("handled", 12)
        with pytest.raises(TypeError):
            plezi.publish("handled", object())
    assert handled == ["t", b"b", '{"d":1}', "[2]"]


# -- connectionless subscriptions --------------------------------------------------------------


def test_connectionless_handlers_sync_async_failing_and_unsubscribe(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers run on the server's loop; one that raises (sync or async) is logged and does not
    keep the message from the others, nor the next messages from it."""
    caplog.set_level(logging.ERROR, logger="plezi")
    got: list[tuple[Any, ...]] = []
    async_done = threading.Event()
    loop_threads: set[int] = set()

    def bad(message: str) -> None:
        raise RuntimeError(f"boom sync {message}")

    async def bad_async(message: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(f"boom async {message}")

    def sync(message: str) -> None:
        loop_threads.add(threading.get_ident())
        got.append(("sync", message))

    def two(channel: str, message: str) -> None:
        got.append(("two", channel, message))

    async def later(message: str) -> None:
        await asyncio.sleep(0)
        loop_threads.add(threading.get_ident())
        got.append(("async", message))
        if sum(g[0] == "async" for g in got) == 2:
            async_done.set()

    subscriptions: list[tuple[str, Callable[..., Any], bool]] = [
        ("free", bad, False),
        ("free", bad_async, False),
        ("free", sync, False),
        ("free", later, False),
        ("fr?e", two, True),
    ]
    running = serve(app_of(("/", WS)))
    try:
        running.call(lambda: [plezi.subscribe(c, h, pattern=p) for c, h, p in subscriptions])
        plezi.publish("free", "1")  # from this thread
        publish_on_loop(running, "free", "2")
        assert async_done.wait(5 * UNIT)
        server_thread = running.thread.ident
        assert loop_threads == {server_thread}
        assert sorted(got) == sorted(
            [
                ("sync", "1"),
                ("two", "free", "1"),
                ("async", "1"),
                ("sync", "2"),
                ("two", "free", "2"),
                ("async", "2"),
            ]
        )
        got.clear()
        removed = running.call(
            lambda: [plezi.unsubscribe(c, h, pattern=p) for c, h, p in subscriptions]
        )
        assert removed == [True] * 5
        assert running.call(lambda: plezi.unsubscribe("free", sync)) is False
        publish_on_loop(running, "free", "3")
        assert got == []
    finally:
        running.call(lambda: [plezi.unsubscribe(c, h, pattern=p) for c, h, p in subscriptions])
    messages = [r.getMessage() for r in caplog.records if r.name == "plezi"]
    assert sum("error in pub/sub handler" in m for m in messages) == 4
    texts = "".join(r.exc_text or "" for r in caplog.records)
    for word in ("boom sync 1", "boom sync 2", "boom async 1", "boom async 2"):
        assert word in texts


# -- where publish is called from --------------------------------------------------------------


def test_publish_from_threads_and_timers(serve: Any) -> None:
    class Sources(WS):
        def on_open(self) -> None:
            self.subscribe("tick")  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            if data == "thread":
                threading.Thread(target=plezi.publish, args=("tick", "from a thread")).start()
            elif data == "timer":
                loop = asyncio.get_running_loop()
                loop.call_later(0.01 * UNIT, plezi.publish, "tick", "from a timer")
            elif data == "soon":
                asyncio.get_running_loop().call_soon(self.publish, "tick", "from call_soon")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Sources)))
    with opened(running.ws_url + "/") as ws:
        for source in ("thread", "timer", "soon"):
            ws.send(source)
            assert recv(ws) == {"thread": "from a thread", "timer": "from a timer"}.get(
                source, "from call_soon"
            )
        thread = threading.Thread(target=plezi.publish, args=("tick", "test's thread"))
        thread.start()
        thread.join(5 * UNIT)
        assert recv(ws) == "test's thread"
        running.call(lambda: running.loop.call_later(0.01 * UNIT, plezi.publish, "tick", "t"))
        assert recv(ws) == "t"


# -- write_to ----------------------------------------------------------------------------------


def test_write_to_reaches_one_connection_and_is_false_once_it_closed(serve: Any) -> None:
    closed = threading.Event()

    class Direct(WS):
        def on_open(self) -> None:
            self.subscribe("control")  # type: ignore[attr-defined]
            self.write(json.dumps({"id": self.id}))  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            target, _, text = data.partition(" ")
            self.write(f"sent {plezi.write_to(target, text)}")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.set()

    running = serve(app_of(("/", Direct)))
    clients = [opened(running.ws_url + "/", None) for _ in range(3)]
    try:
        ids = [json.loads(recv(ws))["id"] for ws in clients]
        assert len(set(ids)) == 3
        a, b, c = clients
        b.send(f"{ids[0]} hello a")
        assert recv(b) == "sent True"
        assert recv(a) == "hello a"
        # From another thread, any type.
        assert plezi.write_to(ids[2], {"to": "c"}) is True
        assert recv(c) == '{"to":"c"}'
        assert plezi.write_to(ids[2], b"\x01") is True
        assert recv(c) == b"\x01"
        # Only the target got anything.
        publish_on_loop(running, "control", "barrier")
        for ws in clients:
            assert recv(ws) == "barrier"
        a.close()
        assert closed.wait(5 * UNIT)
        b.send(f"{ids[0]} too late")
        assert recv(b) == "sent False"
        assert plezi.write_to(ids[0], "too late") is False  # from another thread too
        assert running.call(lambda: plezi.write_to(ids[0], "x")) is False
        b.send("not-an-id hello")  # some other process's id: sent on its way
        assert recv(b) == "sent True"
    finally:
        for ws in clients:
            ws.close()


# -- encode once -------------------------------------------------------------------------------


def test_one_frame_object_is_queued_for_every_forwarding_subscriber(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[tuple[int, bytes]] = []
    original = hub.registry.fan_out

    def recording(conns: Any, frame: bytes) -> None:
        conns = list(conns)
        original(conns, frame)
        # What each connection really holds: the very frame object, not a copy (its queue is
        # the frame alone, or a list from its second item on).
        for conn in conns:
            out = conn._out
            queued.append((id(conn), out[-1] if isinstance(out, list) else out))

    class Sub(WS):
        def on_open(self) -> None:
            self.subscribe("room")  # type: ignore[attr-defined]
            self.subscribe("raw", binary=True)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Sub)))
    clients = [opened(running.ws_url + "/") for _ in range(3)]
    try:
        monkeypatch.setattr(hub.registry, "fan_out", recording)
        payload = "x" * 70_000
        publish_on_loop(running, "room", payload)
        publish_on_loop(running, "raw", payload)
        running.call(lambda: None)  # the loop has run the batch flush scheduled by the publishes
        monkeypatch.undo()
        text, binary = queued[:3], queued[3:]
        assert len({conn for conn, _ in text}) == 3
        assert all(frame is text[0][1] for _, frame in text)
        assert all(frame is binary[0][1] for _, frame in binary)
        assert text[0][1] == encode_frame(OP_TEXT, payload.encode())
        assert binary[0][1] == encode_frame(OP_BINARY, payload.encode())
        for ws in clients:
            assert recv(ws) == payload
            assert recv(ws) == payload.encode()
    finally:
        for ws in clients:
            ws.close()


# -- slow consumers ----------------------------------------------------------------------------

CAP = 256 * 1024
CHUNK = 64 * 1024
#: A 64 KiB message's frame: the payload plus a 10-byte header.
FRAME = CHUNK + 10


class Flooded(WS):
    """Subscribes to ``flood``; the ``/stalled`` one also shrinks its kernel send buffer."""

    conns: dict[str, Any]
    closed: threading.Event

    def on_open(self) -> None:
        if self.params.get("id") == "stalled":  # type: ignore[attr-defined]
            small_send_buffer(self)
            type(self).conns["stalled"] = self
        self.subscribe("flood")  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_close(self) -> None:
        if self.params.get("id") == "stalled":  # type: ignore[attr-defined]
            type(self).closed.set()


def flooded_app() -> tuple[plezi.App, type[Flooded]]:
    cls = type("Flooded", (Flooded,), {"conns": {}, "closed": threading.Event()})
    return app_of(("/", cls)), cls


def test_a_stalled_subscriber_is_disconnected_and_the_others_get_everything(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Slow-consumer policy "disconnect": a subscriber that never reads holds at most the cap
    plus one message, is dropped with a log line, and the others get every message, promptly,
    before and after."""
    caplog.set_level(logging.INFO, logger="plezi")
    app, cls = flooded_app()
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024)
    stalled = RawClient(running.port, "/stalled", rcvbuf=4096)
    others = [opened(running.ws_url + "/") for _ in range(2)]
    try:
        assert stalled.recv_message().text == "ready"
        assert count(running, "flood") == 3
        payload = b"f" * CHUNK
        peak, slowest, sent, after = 0, 0.0, 0, 0
        deadline = time.monotonic() + 15 * UNIT
        while after < 5:  # keep going for 5 messages after the disconnection
            assert time.monotonic() < deadline, "the stalled subscriber was never dropped"
            started = time.monotonic()
            plezi.publish("flood", payload)  # from this thread
            sent += 1
            for ws in others:
                assert recv(ws) == payload
            slowest = max(slowest, time.monotonic() - started)
            peak = max(peak, running.call(lambda: cls.conns["stalled"].pending))
            after += cls.closed.is_set()
        assert sent * FRAME > CAP
        assert peak <= CAP + FRAME, (peak, CAP)
        assert slowest < 1 * UNIT, slowest
        assert count(running, "flood") == 2
        assert running.call(lambda: cls.conns["stalled"].open) is False
    finally:
        stalled.close()
        for ws in others:
            ws.close()
    assert any(
        "not reading" in r.getMessage() and "dropping it" in r.getMessage()
        for r in caplog.records
        if r.name == "plezi"
    )


def test_a_flood_published_in_one_iteration_is_bounded_too(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """4 MiB published in 1 KiB messages within one loop iteration (where consecutive messages
    to one topic are batched): a subscriber that never reads still holds at most the cap plus
    one batch (64 KiB), and is dropped while the flood goes on, not handed all of it."""
    caplog.set_level(logging.INFO, logger="plezi")
    app, cls = flooded_app()
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024)
    stalled = RawClient(running.port, "/stalled", rcvbuf=4096)
    try:
        assert stalled.recv_message().text == "ready"
        payload = "x" * 1024

        def flood() -> int:
            conn = cls.conns["stalled"]
            peak = 0
            for _ in range(4096):
                plezi.publish("flood", payload)
                peak = max(peak, conn.pending)
            return peak

        peak = running.call(flood)
        after = running.call(lambda: cls.conns["stalled"].pending)  # the next iteration
        assert max(peak, after) <= CAP + 64 * 1024 + 2 * 1024, (peak, after)
        assert cls.closed.wait(5 * UNIT)
        assert count(running, "flood") == 0
    finally:
        stalled.close()
    assert any("not reading" in r.getMessage() for r in caplog.records if r.name == "plezi")


def test_a_stalled_subscriber_under_the_drop_policy_stays_and_gets_later_messages(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Slow-consumer policy "drop": the stalled subscriber stays connected, what is past the cap
    is dropped (log line), memory stays bounded, the others get everything; once it reads
    again it gets what was queued, then the messages published after it caught up."""
    caplog.set_level(logging.INFO, logger="plezi")
    app, cls = flooded_app()
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024, slow_consumer="drop")
    stalled = RawClient(running.port, "/stalled", rcvbuf=4096)
    others = [opened(running.ws_url + "/") for _ in range(2)]
    try:
        assert stalled.recv_message().text == "ready"
        flood = 3 * CAP // CHUNK + 4  # three times the cap
        peak, slowest = 0, 0.0
        for i in range(flood):
            payload = i.to_bytes(4, "big") * (CHUNK // 4)
            started = time.monotonic()
            plezi.publish("flood", payload)
            for ws in others:
                assert recv(ws) == payload
            slowest = max(slowest, time.monotonic() - started)
            peak = max(peak, running.call(lambda: cls.conns["stalled"].pending))
        assert peak <= CAP + FRAME, (peak, CAP)
        assert slowest < 1 * UNIT, slowest
        assert running.call(lambda: cls.conns["stalled"].open) is True
        assert not cls.closed.is_set()
        # It reads again: what was queued, in order, with the rest dropped, until the server
        # has nothing left for it (it caught up: later messages flow again).
        received: list[int] = []
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: cls.conns["stalled"].pending) > 0:
            frame = stalled.recv_message()
            received.append(int.from_bytes(frame.payload[:4], "big"))
            assert time.monotonic() < deadline
        assert received == sorted(set(received))
        assert len(received) < flood  # some were dropped
        for i in range(3):
            publish_on_loop(running, "flood", f"later {i}")
        tail: list[str] = []
        while len(tail) < 3:
            frame = stalled.recv_message()
            if frame.opcode == OP_BINARY:  # still draining the flood
                received.append(int.from_bytes(frame.payload[:4], "big"))
                continue
            tail.append(frame.text)
        assert tail == ["later 0", "later 1", "later 2"]
        assert received == sorted(set(received))
        assert running.call(lambda: cls.conns["stalled"].open) is True
        for ws in others:
            assert [recv(ws) for _ in range(3)] == tail
    finally:
        stalled.close()
        for ws in others:
            ws.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "plezi"]
    assert any("dropping messages until it catches up" in m for m in messages)
    assert any("caught up" in m and "flow again" in m for m in messages)


# -- closing and status ------------------------------------------------------------------------


def test_no_message_follows_the_close_frame(serve: Any) -> None:
    """A connection that sent its close frame is still subscribed until the client answers;
    a message published meanwhile must not be written after the close frame."""

    class Closer(WS):
        def on_open(self) -> None:
            self.subscribe("room")  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            self.close()  # type: ignore[attr-defined]

    running = serve(app_of(("/", Closer)))
    with RawClient(running.port) as client:
        assert client.recv_message().text == "ready"
        client.send_text("close please")
        assert client.recv_close() == 1000
        publish_on_loop(running, "room", "after the close frame")
        conn_id = running.call(lambda: next(iter(running.server.streams.values())).id)
        assert running.call(lambda: plezi.write_to(conn_id, "direct")) is False
        running.call(lambda: None)  # the flush at the end of that loop iteration has run
        client.send_close()
        assert client.wait_eof() == b""


def test_pubsub_status_in_process(serve: Any) -> None:
    class Sub(WS):
        def on_open(self) -> None:
            self.subscribe("a")  # type: ignore[attr-defined]
            self.subscribe("b.*", pattern=True)  # type: ignore[attr-defined]
            self.write("ready")  # type: ignore[attr-defined]

    running = serve(app_of(("/", Sub)))
    with opened(running.ws_url + "/"):
        status = running.call(plezi.pubsub_status)
        assert status == {"engine": "memory", "connected": True, "channels": 1, "patterns": 1}
