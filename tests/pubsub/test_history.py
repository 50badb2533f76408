"""History, positions and recovery in one process (memory engine), over real WebSockets."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from wsclient import connect

import plezi
from helpers import UNIT, Running, app_of, wait_for
from plezi.pubsub import channels
from plezi.pubsub.history import MemoryHistory, Positioned, wire_payload
from plezi.pubsub.hub import hub
from plezi.pubsub.message import Message

pytestmark = pytest.mark.usefixtures("no_leaks")

#: What the ``Sub`` controllers' ``on_recover`` saw: (channel, recovered).
recovered_calls: list[tuple[str, bool]] = []


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    channels.clear()
    hub.engine.__dict__.pop("_local_history", None)  # a new history: a new epoch
    recovered_calls.clear()
    yield
    channels.clear()
    hub.engine.__dict__.pop("_local_history", None)


class Sub:
    """Subscribes to the channel named by the path, then says ``ready``."""

    def on_open(self) -> None:
        self.subscribe(self.params["id"])  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: str) -> None:
        pass

    def on_recover(self, channel: str, recovered: bool) -> None:
        recovered_calls.append((channel, recovered))


def recv_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=5 * UNIT))


def publish(running: Running, channel: str, *messages: Any) -> None:
    def run() -> None:
        for message in messages:
            plezi.publish(channel, message)

    running.call(run)


def recover_url(base: str, positions: dict[str, Any]) -> str:
    return base + "?_recover=" + urllib.parse.quote(json.dumps(positions))


def subscribed(url: str) -> ClientConnection:
    ws = connect(url).__enter__()
    assert ws.recv(timeout=5 * UNIT) == "ready"
    return ws


# -- positions on the wire ----------------------------------------------------------------------


def test_wire_payload_adds_the_position_to_json_objects_only() -> None:
    def wire(payload: bytes, is_text: bool = True) -> bytes:
        return wire_payload(payload, is_text, "chat", "e1", 7)

    pos = {"channel": "chat", "epoch": "e1", "offset": 7}
    assert json.loads(wire(b'{"a": 1}')) == {"a": 1, "_pos": pos}
    assert json.loads(wire(b"{}")) == {"_pos": pos}
    # The app's own "_pos" loses to ours (the last member wins in JSON.parse).
    assert json.loads(wire(b'{"_pos": 1} '))["_pos"] == pos
    for unchanged in (b"[1, 2]", b"hello", b"{not json}", b'"{}"'):
        assert wire(unchanged) == unchanged
    assert wire(b"{}", is_text=False) == b"{}"


def test_memory_history_keeps_the_last_n_and_pages() -> None:
    options = channels.configure("h", history=3)
    history = MemoryHistory()
    for i in range(5):
        assert history.add(Message.of("h", {"i": i}), options).offset == i + 1
    page = history.read("h", options)
    assert [m.offset for m in page.messages] == [3, 4, 5] and page.offset == 5
    assert [m.offset for m in history.read("h", options, since=3).messages] == [4, 5]
    assert [m.offset for m in history.read("h", options, since=2, limit=1).messages] == [3]
    assert not history.read("h", options, since=1).complete  # offset 2 is gone
    assert history.read("h", options, since=5).complete
    assert [m.offset for m in history.read("h", options, limit=2).messages] == [4, 5]
    assert history.stats() == {"channels": 1, "messages": 3}


def test_memory_history_forgets_messages_older_than_the_ttl() -> None:
    options = channels.configure("t", history=100, history_ttl=0.2 * UNIT)
    history = MemoryHistory()
    history.add(Message.of("t", "old"), options)
    time.sleep(0.3 * UNIT)
    history.add(Message.of("t", "new"), options)
    page = history.read("t", options, since=0)
    assert not page.complete and page.offset == 2
    assert [m.value for m in history.read("t", options).messages] == ["new"]


def test_recoverable_channel_messages_carry_positions_others_do_not(serve: Any) -> None:
    plezi.channel("chat", history=10)
    running = serve(app_of(("/sub/:id", Sub)))
    with (
        subscribed(f"{running.ws_url}/sub/chat") as ws,
        subscribed(f"{running.ws_url}/sub/plain") as plain,
    ):
        publish(running, "chat", {"n": 1}, {"n": 2}, "text", b"\x01")
        publish(running, "plain", {"n": 1})
        first, second = recv_json(ws), recv_json(ws)
        assert first["n"] == 1 and first["_pos"]["channel"] == "chat"
        assert (first["_pos"]["offset"], second["_pos"]["offset"]) == (1, 2)
        assert first["_pos"]["epoch"] == second["_pos"]["epoch"] == hub.engine.local_history.epoch
        assert ws.recv(timeout=5 * UNIT) == "text"
        assert ws.recv(timeout=5 * UNIT) == b"\x01"
        assert plain.recv(timeout=5 * UNIT) == '{"n":1}'  # unchanged: no history there


# -- recovery -----------------------------------------------------------------------------------


def test_reconnect_with_a_position_gets_exactly_the_missed_messages_then_live(serve: Any) -> None:
    plezi.channel("chat", history=100)
    running = serve(app_of(("/sub/:id", Sub)))
    with subscribed(f"{running.ws_url}/sub/chat") as ws:
        publish(running, "chat", *({"n": i} for i in range(3)))
        last = [recv_json(ws) for _ in range(3)][-1]["_pos"]
    publish(running, "chat", *({"n": i} for i in range(3, 8)))
    url = recover_url(f"{running.ws_url}/sub/chat", {"chat": [last["epoch"], last["offset"]]})
    with connect(url) as ws:
        assert ws.recv(timeout=5 * UNIT) == "ready"
        notice = recv_json(ws)
        assert notice == {
            "event": "_recover_",
            "channel": "chat",
            "recovered": True,
            "epoch": last["epoch"],
            "offset": 8,
        }
        assert [recv_json(ws)["n"] for _ in range(5)] == [3, 4, 5, 6, 7]
        publish(running, "chat", {"n": 8})
        assert recv_json(ws) == {"n": 8, "_pos": {**last, "offset": 9}}
    wait_for(lambda: recovered_calls == [("chat", True)], "on_recover(chat, True)")


@pytest.mark.parametrize("why", ["epoch", "gone", "ttl"])
def test_recovery_fails_cleanly_when_history_cannot_cover_the_gap(serve: Any, why: str) -> None:
    ttl = 0.3 * UNIT if why == "ttl" else 60.0
    plezi.channel("chat", history=3, history_ttl=ttl)
    running = serve(app_of(("/sub/:id", Sub)))
    publish(running, "chat", {"n": 0})
    epoch = hub.engine.local_history.epoch
    if why == "epoch":  # as after a restart: the same offset in another stream
        since = ["0123abcd", 1]
        publish(running, "chat", {"n": 1})
    elif why == "gone":  # 5 missed, 3 kept
        since = [epoch, 1]
        publish(running, "chat", *({"n": i} for i in range(1, 6)))
    else:  # offline longer than the history's TTL
        since = [epoch, 1]
        publish(running, "chat", {"n": 1})
        time.sleep(0.5 * UNIT)
        publish(running, "chat", {"n": 2})
    with connect(recover_url(f"{running.ws_url}/sub/chat", {"chat": since})) as ws:
        assert ws.recv(timeout=5 * UNIT) == "ready"
        notice = recv_json(ws)
        assert notice["recovered"] is False and notice["epoch"] == epoch
        publish(running, "chat", {"n": "live"})
        assert recv_json(ws)["n"] == "live"  # nothing replayed: the next one is live
    wait_for(lambda: recovered_calls == [("chat", False)], "on_recover(chat, False)")


def test_a_position_for_a_channel_without_history_is_answered_recovered_false(
    serve: Any,
) -> None:
    running = serve(app_of(("/sub/:id", Sub)))
    with connect(recover_url(f"{running.ws_url}/sub/plain", {"plain": ["e", 3]})) as ws:
        assert recv_json(ws) == {"event": "_recover_", "channel": "plain", "recovered": False}
        assert ws.recv(timeout=5 * UNIT) == "ready"
        publish(running, "plain", "live")
        assert ws.recv(timeout=5 * UNIT) == "live"


def test_a_bad_recover_parameter_is_logged_and_ignored(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plezi.channel("chat", history=10)
    running = serve(app_of(("/sub/:id", Sub)))
    with caplog.at_level(logging.WARNING, "plezi"):
        for bad in ("nope", "[1]", '{"chat": ["e", -1]}', '{"chat": "e:1"}'):
            url = f"{running.ws_url}/sub/chat?_recover=" + urllib.parse.quote(bad)
            with connect(url) as ws:
                assert ws.recv(timeout=5 * UNIT) == "ready"
                publish(running, "chat", {"n": 1})
                assert recv_json(ws)["n"] == 1  # subscribed as a new connection
    assert sum("_recover query parameter" in r.getMessage() for r in caplog.records) == 4


def test_plezi_history_pages_through_a_channel(serve: Any) -> None:
    plezi.channel("log", history=50)
    running = serve(app_of(("/sub/:id", Sub)))
    publish(running, "log", *({"n": i} for i in range(10)))

    async def read() -> list[list[Any]]:
        first = await plezi.history("log", limit=3)
        after = await plezi.history("log", since=4, limit=2)
        return [[m.value for m in first.messages], [m.offset for m in after.messages]]

    pages = asyncio.run_coroutine_threadsafe(read(), running.loop).result(5 * UNIT)
    assert pages == [['{"n":7}', '{"n":8}', '{"n":9}'], [5, 6]]
    with pytest.raises(ValueError, match="no history"):
        asyncio.run(plezi.history("nothing"))


def test_positioned_messages_frame_once_per_process() -> None:
    message = Positioned.at(Message.of("c", {"a": 1}), "e", 1)
    assert message.frame() is message.frame()
    assert message.sse_frame() is message.sse_frame()
    assert b'"_pos"' in (message.sse_frame() or b"")
    assert message.value == '{"a":1}'


def test_an_event_stream_recovers_too(serve: Any) -> None:
    """SSE: positions come in the query string of the new stream's URL (as the EventSource
    URL a page builds); the notice and the missed messages are events."""
    from sseclient import EventStream

    plezi.channel("chat", history=10)
    running = serve(app_of(("/sub/:id", Sub)))
    publish(running, "chat", *({"n": i} for i in range(4)))
    epoch = hub.engine.local_history.epoch
    target = "/sub/chat?_recover=" + urllib.parse.quote(json.dumps({"chat": [epoch, 1]}))
    with EventStream(running.port, target) as stream:
        assert stream.open().status == 200
        assert stream.event().data == "ready"
        notice = json.loads(stream.event().data)
        assert notice["event"] == "_recover_" and notice["recovered"] is True
        got = [json.loads(stream.event().data) for _ in range(3)]
        assert [(m["n"], m["_pos"]["offset"]) for m in got] == [(1, 2), (2, 3), (3, 4)]


def test_publishing_from_another_thread_positions_in_publish_order(serve: Any) -> None:
    plezi.channel("chat", history=10)
    running = serve(app_of(("/sub/:id", Sub)))
    with subscribed(f"{running.ws_url}/sub/chat") as ws:
        for i in range(5):  # this thread is not the server's
            plezi.publish("chat", {"n": i})
        got = [recv_json(ws) for _ in range(5)]
    assert [(m["n"], m["_pos"]["offset"]) for m in got] == [(i, i + 1) for i in range(5)]


class Handled:
    """Subscribes with a handler that writes each message back, tagged."""

    def on_open(self) -> None:
        self.subscribe("chat", self.got)  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def got(self, message: str) -> None:
        self.write("got " + message)  # type: ignore[attr-defined]

    def on_message(self, data: str) -> None:
        pass


class Twice(Sub):
    """Subscribes twice in a row: the second subscription replaces the recovering one."""

    def on_open(self) -> None:
        self.subscribe("chat")  # type: ignore[attr-defined]
        self.subscribe("chat")  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]


def test_a_handler_subscription_gets_the_replayed_messages_in_order(serve: Any) -> None:
    plezi.channel("chat", history=10)
    running = serve(app_of(("/h", Handled)))
    publish(running, "chat", *({"n": i} for i in range(3)))
    epoch = hub.engine.local_history.epoch
    with connect(recover_url(f"{running.ws_url}/h", {"chat": [epoch, 1]})) as ws:
        assert ws.recv(timeout=5 * UNIT) == "ready"
        assert recv_json(ws)["recovered"] is True
        publish(running, "chat", {"n": 3})
        got = [ws.recv(timeout=5 * UNIT) for _ in range(3)]
    assert got == ['got {"n":1}', 'got {"n":2}', 'got {"n":3}']  # as published: no _pos


def test_subscribing_again_during_a_recovery_says_recovered_false(serve: Any) -> None:
    plezi.channel("chat", history=10)
    running = serve(app_of(("/twice", Twice)))
    publish(running, "chat", *({"n": i} for i in range(3)))
    epoch = hub.engine.local_history.epoch
    with connect(recover_url(f"{running.ws_url}/twice", {"chat": [epoch, 1]})) as ws:
        assert ws.recv(timeout=5 * UNIT) == "ready"
        assert recv_json(ws)["recovered"] is False  # never a silent gap
        publish(running, "chat", {"n": 3})
        assert recv_json(ws)["n"] == 3
