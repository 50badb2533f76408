"""Server-Sent Events streams under the server's limits: keep-alive comments instead of the idle
timeout, the outgoing buffer cap (slow consumers), graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from rawhttp import RawHTTP
from test_sse import Event, EventStream, feed_app, serve_controller
from wsclient import small_send_buffer

from helpers import ROOT, UNIT, Events, Running


def test_idle_streams_get_keepalive_comments_and_outlive_the_idle_timeout(
    serve: Callable[..., Running],
) -> None:
    tally = Events()
    app, conns = feed_app(tally)
    # A keep-alive HTTP connection idle for 0.3 s is closed; a stream is not.
    running = serve(app, ping_interval=0.2 * UNIT, keepalive_timeout=0.3 * UNIT)
    with EventStream(running.port) as stream:
        assert stream.first() == Event("ready")
        started = time.monotonic()
        while stream.comments < 3:
            block = stream.block()
            assert block is not None, "the stream ended"
            assert block.startswith(b":") and b"\n" not in block, block
            stream.comments += 1
        assert time.monotonic() - started > 0.3 * UNIT  # longer than the idle timeout
        assert running.call(lambda: conns["feed"].write("alive")) is True
        assert stream.event() == Event("alive")
    tally.wait_for("close")


def test_a_busy_stream_gets_no_comments(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, conns = feed_app(tally)
    running = serve(app, ping_interval=0.3 * UNIT)
    with EventStream(running.port) as stream:
        stream.first()
        tally.wait_for("open")
        deadline = time.monotonic() + 1.0 * UNIT
        while time.monotonic() < deadline:
            running.call(lambda: conns["feed"].write("tick"))
            assert stream.event() == Event("tick")
            time.sleep(0.05 * UNIT)  # paces the writes (what is tested is the absence of comments)
        assert stream.comments == 0


def test_no_comments_when_pings_are_off(serve: Callable[..., Running]) -> None:
    tally = Events()
    app, _ = feed_app(tally)
    running = serve(app, ping_interval=0, keepalive_timeout=0.2 * UNIT)
    with EventStream(running.port) as stream:
        stream.first()
        stream.sock.settimeout(0.6 * UNIT)
        with pytest.raises(TimeoutError):
            stream.sock.recv(100)  # nothing comes, and the stream is not closed either


CAP = 64 * 1024
CHUNK = 8 * 1024


def flood(controller: Any) -> None:
    """From a callback: 64 numbered events of 4 KiB ("0 xxx...", "1 xxx..."), after shrinking
    the kernel's send buffer so that they wait in plezi's buffers."""
    small_send_buffer(controller)
    for n in range(64):
        controller.write(f"{n} " + "x" * 4096)


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "plezi"]


def test_a_slow_consumer_is_disconnected(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    tally = Events()

    def on_open(self: Any) -> None:
        small_send_buffer(self)
        conns["sink"] = self
        tally.add("open")

    app, conns = feed_app(tally, on_open=on_open)
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024)
    payload = "x" * CHUNK
    peak = 0
    writes = 0

    def push() -> tuple[bool, int]:
        sink = conns["sink"]
        return sink.write(payload), sink.pending

    with EventStream(running.port, rcvbuf=4096):  # never reads
        tally.wait_for("open")
        deadline = time.monotonic() + 10 * UNIT
        while "close" not in tally.events:
            assert time.monotonic() < deadline, "the slow consumer was never disconnected"
            ok, pending = running.call(push)
            if not ok:
                break
            writes += 1
            peak = max(peak, pending)
        tally.wait_for("close")
        assert running.call(lambda: conns["sink"].open) is False
    assert writes * CHUNK > CAP
    assert peak <= CAP + CHUNK + 16, (peak, CAP)
    messages = logged(caplog)
    assert any(m.startswith("SSE ") and "not reading" in m for m in messages), messages


def test_graceful_shutdown_runs_on_shutdown_then_ends_the_streams(
    serve: Callable[..., Running],
) -> None:
    tally = Events()

    def on_shutdown(self: Any) -> None:
        tally.add("shutdown")
        self.write_event(f"bye {self.params['name']}", event="shutdown")

    app, _ = feed_app(tally, on_shutdown=on_shutdown)
    running = serve(app)
    streams = [EventStream(running.port, f"/?name=s{n}") for n in range(3)]
    try:
        for stream in streams:
            assert stream.first() == Event("ready")
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 2 * UNIT  # nobody waited for the timeout
        for n, stream in enumerate(streams):
            assert stream.ended() == [Event(f"bye s{n}", "shutdown")]
    finally:
        for stream in streams:
            stream.sock.close()
    assert tally.events.count("shutdown") == 3
    assert tally.events.count("close") == 3
    # Every on_shutdown ran before any on_close.
    assert [e for e in tally.events if e in ("shutdown", "close")][:3] == ["shutdown"] * 3


def test_a_client_that_takes_nothing_is_dropped(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    closed = threading.Event()

    class Flood:
        def on_open(self) -> None:
            flood(self)  # well under the cap, far over what the socket buffers hold

        def on_message(self, data: Any) -> None:
            pass

        def on_close(self) -> None:
            closed.set()

    running = serve_controller(serve, Flood, ping_interval=0.2 * UNIT, ping_timeout=0.2 * UNIT)
    with EventStream(running.port, rcvbuf=4096):  # never reads
        assert closed.wait(5 * UNIT), "a client that reads nothing was kept"
    messages = logged(caplog)
    assert any("took nothing" in m for m in messages), messages


def test_the_guide_sample_streams_and_says_goodbye_on_sigterm(script: Any) -> None:
    proc = script(ROOT / "examples" / "websocket_sample.py")
    with EventStream(proc.port) as one, EventStream(proc.port) as two:
        one.open()
        two.open()
        with RawHTTP(proc.port) as http:  # the stream is up once a later request is answered
            assert http.request("GET", "/").text == "Hello World!"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        for stream in (one, two):
            assert stream.ended() == [Event("Server shutting down. Goodbye.")]
        proc.proc.wait(10 * UNIT)
        elapsed = time.monotonic() - started
    code, err = proc.stop()
    assert code == 0, err
    assert elapsed < 5 * UNIT
    assert "Traceback" not in err


def test_on_drained_after_a_full_buffer_is_sent(serve: Callable[..., Running]) -> None:
    tally = Events()

    def on_open(self: Any) -> None:
        flood(self)  # past write_high_water: on_drained is armed

    def on_drained(self: Any) -> None:
        tally.add("drained")
        self.write("drained")

    app, _ = feed_app(tally, on_open=on_open, on_drained=on_drained)
    running = serve(app, write_high_water=16 * 1024)
    with EventStream(running.port) as stream:
        stream.open()
        events = stream.events(65)
        assert [e.data.split()[0] for e in events[:64]] == [str(n) for n in range(64)]
        assert events[64] == Event("drained")
    assert tally.events.count("drained") == 1


def test_the_drop_policy_drops_events_and_keeps_the_stream(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    tally = Events()

    def on_open(self: Any) -> None:
        flood(self)  # in one callback: past the 64 KiB cap

    def on_drained(self: Any) -> None:  # the client caught up
        self.write("after")

    app, _ = feed_app(tally, on_open=on_open, on_drained=on_drained)
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024, slow_consumer="drop")
    with EventStream(running.port, rcvbuf=4096) as stream:
        stream.open()
        kept = []
        while (event := stream.event()).data != "after":
            kept.append(int(event.data.split()[0]))
        assert kept == list(range(len(kept)))  # in order, the first ones...
        assert 8 < len(kept) < 64  # ...and the ones over the cap dropped, not queued
    tally.wait_for("close")  # the stream stayed open until the client left
    messages = logged(caplog)
    assert any(m.startswith("SSE ") and "dropping messages" in m for m in messages), messages
    assert any(m.startswith("SSE ") and "caught up" in m for m in messages), messages
