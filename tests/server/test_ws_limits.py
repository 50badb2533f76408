"""WebSocket limits on a real server: message size, pings, slow consumers, the close handshake."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

import pytest
from wsclient import MASK as M
from wsclient import Echo, Frame, RawClient, connect, echo_app, masked, small_send_buffer

import plezi
from helpers import UNIT
from plezi.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
)

frame = masked


def frames_until_eof(client: RawClient, timeout: float) -> list[Frame]:
    """Every frame the server sends before it ends the connection (EOF or reset)."""
    frames: list[Frame] = []
    while True:
        try:
            frames.append(client.recv_frame(timeout))
        except (EOFError, ConnectionResetError):
            return frames


# -- message size ----------------------------------------------------------------------------


def test_a_message_at_the_limit_passes_and_one_byte_more_is_1009(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(echo_app(), max_message_size=1024)
    with RawClient(running.port) as client:
        client.send_raw(frame(OP_BINARY, b"b" * 1024))
        assert client.recv_message().payload == b"b" * 1024
        client.send_raw(frame(OP_TEXT, b"t" * 1024))
        assert client.recv_message().text == "t" * 1024
        client.send_raw(frame(OP_BINARY, b"b" * 1025))
        assert client.recv_close() == 1009
        assert client.wait_eof() == b""
    assert any(
        "too big" in r.getMessage() and "1009" in r.getMessage()
        for r in caplog.records
        if r.name == "plezi"
    )
    with connect(running.ws_url + "/") as ws:  # still serving
        ws.send("ok")
        assert ws.recv(timeout=5 * UNIT) == "ok"


def test_an_oversized_frame_is_refused_from_its_header(serve: Any) -> None:
    """The 1009 comes from the header alone: the server does not wait for (or buffer) a payload
    it is going to refuse."""
    running = serve(echo_app(), max_message_size=1024)
    with RawClient(running.port) as client:
        client.send_raw(
            encode_frame(OP_BINARY, b"", mask=None)[:1]
            + b"\xff"
            + (1 << 40).to_bytes(8, "big")
            + M
            + b"only the start"
        )
        assert client.recv_close() == 1009
        assert client.wait_eof() == b""


def test_fragments_adding_up_past_the_limit_are_1009(serve: Any) -> None:
    running = serve(echo_app(), max_message_size=1024)
    with RawClient(running.port) as client:
        # Fragments within the limit are reassembled.
        client.send_raw(frame(OP_BINARY, b"a" * 500, fin=False) + frame(OP_CONT, b"b" * 524))
        assert client.recv_message().payload == b"a" * 500 + b"b" * 524
        # 3 x 400 = 1200 > 1024: refused on the third fragment, which is not even the last.
        client.send_raw(frame(OP_TEXT, b"x" * 400, fin=False))
        client.send_raw(frame(OP_CONT, b"y" * 400, fin=False))
        client.send_raw(frame(OP_CONT, b"z" * 400, fin=False))
        assert client.recv_close() == 1009
        assert client.wait_eof() == b""


# -- pings -----------------------------------------------------------------------------------

PING_LIMITS = {"ping_interval": 0.2 * UNIT, "ping_timeout": 0.3 * UNIT}


def test_an_idle_connection_is_pinged_then_closed_when_silent(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    closed = threading.Event()

    class Watch(Echo):
        def on_close(self) -> None:
            closed.set()

    app = plezi.App()
    app.route("/", Watch)
    running = serve(app, **PING_LIMITS)
    with RawClient(running.port) as client:
        started = time.monotonic()
        ping = client.recv_frame(5 * UNIT)
        assert ping.opcode == OP_PING
        assert time.monotonic() - started >= 0.5 * PING_LIMITS["ping_interval"]
        # Stay silent: no pong.
        pinged = time.monotonic()
        frames = frames_until_eof(client, 5 * UNIT)
        waited = time.monotonic() - pinged
    assert [f.opcode for f in frames] == [OP_CLOSE]
    assert frames[0].close_code == 1011
    assert waited >= 0.5 * PING_LIMITS["ping_timeout"]
    assert closed.wait(5 * UNIT)
    assert any("ping" in r.getMessage() for r in caplog.records if r.name == "plezi")


def test_a_peer_that_answers_pings_stays_connected(serve: Any) -> None:
    """Each pong counts as a sign of life: the server keeps pinging at every interval and never
    closes, even though the client sends nothing else."""
    running = serve(echo_app(), **PING_LIMITS)
    with RawClient(running.port) as client:
        for _ in range(3):
            ping = client.recv_frame(5 * UNIT)
            assert ping.opcode == OP_PING, ping
            client.send_raw(frame(OP_PONG, ping.payload))
        client.send_raw(frame(OP_TEXT, b"still here"))
        assert client.recv_message().text == "still here"


def test_traffic_postpones_pings(serve: Any) -> None:
    running = serve(echo_app(), **PING_LIMITS)
    with RawClient(running.port) as client:
        started = time.monotonic()
        # Busy for two ping intervals: no ping in between.
        while time.monotonic() - started < 2 * PING_LIMITS["ping_interval"]:
            client.send_raw(frame(OP_TEXT, b"busy"))
            got = client.recv_frame(5 * UNIT)
            assert (got.opcode, got.payload) == (OP_TEXT, b"busy"), got
        # Now idle: a ping comes.
        assert client.recv_frame(5 * UNIT).opcode == OP_PING


def test_a_slow_but_reading_client_is_not_taken_for_dead(serve: Any) -> None:
    """While the server holds back reading because the client is behind (back-pressure), the
    client cannot answer pings; that it keeps reading is its sign of life. It reads one message
    per reaper tick, for far longer than ping_interval + ping_timeout, and is never cut."""
    count = 24

    class Flood:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: Any) -> None:
            if data == "flood":
                for _ in range(count):
                    self.write(b"s" * 32768)  # type: ignore[attr-defined]
            else:
                self.write(data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/", Flood)
    limits = {"ping_interval": 0.1 * UNIT, "ping_timeout": 0.1 * UNIT}
    running = serve(app, write_high_water=16 * 1024, max_outgoing_buffer=8 << 20, **limits)

    def next_tick() -> None:
        # The server's reaper clock is the pace: one message per tick.
        first = running.call(lambda: running.server.now)
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: running.server.now) == first:
            assert time.monotonic() < deadline

    with RawClient(running.port, rcvbuf=4096) as client:
        client.send_raw(frame(OP_TEXT, b"flood"))
        started = time.monotonic()
        received = 0
        while received < count:
            got = client.recv_frame(5 * UNIT)
            if got.opcode == OP_PING:
                client.send_raw(frame(OP_PONG, got.payload))
                continue
            assert got.opcode == OP_BINARY, got
            received += 1
            next_tick()
        elapsed = time.monotonic() - started
        client.send_raw(frame(OP_TEXT, b"still alive"))
        while (got := client.recv_frame(5 * UNIT)).opcode == OP_PING:
            client.send_raw(frame(OP_PONG, got.payload))
        assert got.text == "still alive"
    # The test is only meaningful if the reading took longer than a ping timeout.
    assert elapsed > 2 * (limits["ping_interval"] + limits["ping_timeout"]), elapsed


def test_a_client_that_stopped_reading_below_the_cap_is_still_detected_by_pings(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The other side of the above: a client that reads nothing (its queue below the cap, so no
    slow-consumer cut) makes no progress, so the ping timeout still ends the connection."""
    caplog.set_level(logging.INFO, logger="plezi")
    closed = threading.Event()

    class Flood:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: Any) -> None:
            for _ in range(16):
                self.write(b"d" * 32768)  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.set()

    app = plezi.App()
    app.route("/", Flood)
    running = serve(
        app,
        write_high_water=16 * 1024,
        max_outgoing_buffer=8 << 20,
        ping_interval=0.1 * UNIT,
        ping_timeout=0.1 * UNIT,
    )
    with RawClient(running.port, rcvbuf=4096) as client:
        client.send_raw(frame(OP_TEXT, b"flood"))
        assert closed.wait(5 * UNIT)
    assert any("ping" in r.getMessage() for r in caplog.records if r.name == "plezi")


# -- slow consumers ------------------------------------------------------------------------

CAP = 256 * 1024
CHUNK = 64 * 1024


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_a_client_that_never_reads_is_disconnected_and_memory_stays_bounded(
    serve: Any, caplog: pytest.LogCaptureFixture, tls: bool, request: pytest.FixtureRequest
) -> None:
    """A subscription-like flood (writes from outside the connection's callbacks, one 64 KiB
    message per loop iteration) to a client that never reads: the server disconnects it once
    more than ``max_outgoing_buffer`` is queued, logs it, never holds more than the cap plus
    one message, and another client on the same server is served at normal speed meanwhile.
    Over TLS too: what waits to be encrypted counts as queued."""
    caplog.set_level(logging.INFO, logger="plezi")
    box: dict[str, Any] = {}
    opened = threading.Event()
    closed = threading.Event()

    class Sink:
        def on_open(self) -> None:
            small_send_buffer(self)
            box["sink"] = self
            opened.set()

        def on_message(self, data: Any) -> None:
            pass

        def on_close(self) -> None:
            closed.set()

    app = plezi.App()
    app.route("/sink", Sink)
    app.route("/echo", Echo)
    files = request.getfixturevalue("tls_files") if tls else None
    ctx = ssl.create_default_context(cafile=files[0]) if files else None
    extra = {"tls_cert": files[0], "tls_key": files[1]} if files else {}
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024, **extra)
    payload = b"f" * CHUNK
    peak = 0
    writes = 0
    slowest = 0.0

    def push() -> tuple[bool, int]:
        sink = box["sink"]
        ok = sink.write(payload)
        return ok, sink.pending

    with (
        RawClient(running.port, "/sink", rcvbuf=4096, tls=ctx) as stalled,
        connect(running.ws_url + "/echo", ssl=ctx) as other,
    ):
        assert opened.wait(5 * UNIT)
        deadline = time.monotonic() + 10 * UNIT
        while not closed.is_set():
            assert time.monotonic() < deadline, "the slow consumer was never disconnected"
            ok, pending = running.call(push)
            if not ok:
                break
            writes += 1
            peak = max(peak, pending)
            # The other client: one round trip per flood message, each prompt.
            sent = time.monotonic()
            other.send(f"ping {writes}")
            assert other.recv(timeout=5 * UNIT) == f"ping {writes}"
            slowest = max(slowest, time.monotonic() - sent)
        assert closed.wait(5 * UNIT)
        assert running.call(lambda: box["sink"].open) is False
        assert running.call(lambda: box["sink"].write(b"more")) is False
        # The stalled client finds its connection dropped.
        with pytest.raises((ConnectionResetError, EOFError, AssertionError, ssl.SSLError)):
            while True:
                stalled.recv_frame(5 * UNIT)
        other.send("after")
        assert other.recv(timeout=5 * UNIT) == "after"
    assert writes * CHUNK > CAP  # the flood did overflow the cap
    assert peak <= CAP + CHUNK + 14, (peak, CAP)
    assert slowest < 1 * UNIT, slowest
    assert any("not reading" in r.getMessage() for r in caplog.records if r.name == "plezi")


def stall(serve: Any, controller: type, closed: threading.Event) -> None:
    """Serve ``controller`` with a small cap, send it one message from a client that never
    reads, and wait for the server to close the connection (``closed``, set by ``on_close``)."""
    app = plezi.App()
    app.route("/", controller)
    running = serve(app, max_outgoing_buffer=CAP, write_high_water=16 * 1024)
    with RawClient(running.port, rcvbuf=4096) as stalled:
        stalled.send_raw(frame(OP_TEXT, b"go"))
        assert closed.wait(5 * UNIT)


def test_a_flood_from_one_callback_is_bounded_too(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One callback that writes far more than the cap in one go (no loop iteration in between):
    the connection is dropped while the callback runs; later writes return False instead of
    piling up."""
    caplog.set_level(logging.INFO, logger="plezi")
    results: dict[str, Any] = {}
    closed = threading.Event()

    class Burst:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: Any) -> None:
            peak = 0
            accepted = 0
            for _ in range(64):  # 4 MiB
                if self.write(b"q" * CHUNK):  # type: ignore[attr-defined]
                    accepted += 1
                peak = max(peak, self.pending)  # type: ignore[attr-defined]
            results.update(peak=peak, accepted=accepted, open=self.open)  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.set()

    stall(serve, Burst, closed)
    assert results["open"] is False
    assert results["accepted"] < 64
    assert results["peak"] <= CAP + CHUNK + 14, results
    assert any("not reading" in r.getMessage() for r in caplog.records if r.name == "plezi")


# -- closing handshake ---------------------------------------------------------------------


def test_one_reply_larger_than_the_cap_drops_a_client_that_does_not_read(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The single reply to one message is handed to the transport as soon as the read is
    handled; when it leaves more than ``max_outgoing_buffer`` queued for a client that does not
    read, that client is dropped with a log line, as when the cap is passed frame by frame."""
    caplog.set_level(logging.INFO, logger="plezi")
    closed = threading.Event()
    box: dict[str, Any] = {}

    class Big:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: Any) -> None:
            box["accepted"] = self.write(b"B" * (4 * CAP))  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.set()

    stall(serve, Big, closed)
    assert box["accepted"] is True  # queued whole (nothing was queued before it)...
    # ...then the client was dropped for not reading it.
    assert any("not reading" in r.getMessage() for r in caplog.records if r.name == "plezi")


def test_close_handshake_times_out_when_the_client_never_answers(serve: Any) -> None:
    closed = threading.Event()

    class Closer:
        def on_message(self, data: Any) -> None:
            self.close()  # type: ignore[attr-defined]

        def on_close(self) -> None:
            closed.set()

    app = plezi.App()
    app.route("/", Closer)
    close_timeout = 0.3 * UNIT
    running = serve(app, close_timeout=close_timeout)
    with RawClient(running.port) as client:
        client.send_raw(frame(OP_TEXT, b"close please"))
        assert client.recv_close() == 1000
        sent = time.monotonic()
        # Never answer the close frame.
        assert frames_until_eof(client, 5 * UNIT) == []
        waited = time.monotonic() - sent
    assert waited >= 0.5 * close_timeout
    assert waited < close_timeout + 2 * UNIT
    assert closed.wait(5 * UNIT)


def test_the_reaper_visits_open_streams_at_the_pings_pace_and_the_rest_every_tick(
    serve: Any,
) -> None:
    """An open WebSocket's deadlines are the ping's (tens of seconds): the reaper checks it every
    quarter of the shorter of ``ping_interval`` and ``ping_timeout``, not on every tick. An HTTP
    connection, and a WebSocket once it is closing, are checked on every tick (their deadlines
    are seconds away), and a closing WebSocket still ends on time."""
    opened = threading.Event()

    class Closer:
        def on_open(self) -> None:
            opened.set()

        def on_message(self, data: Any) -> None:
            self.close()  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/", Closer)
    close_timeout = 0.3 * UNIT
    running = serve(app, close_timeout=close_timeout, ping_interval=40.0, ping_timeout=20.0)
    server = running.server
    assert server._stream_sweep_interval() == 5.0
    assert server._tick_interval() <= close_timeout / 4

    def visited() -> tuple[bool, bool, bool, bool]:
        """(the WebSocket, the HTTP connection) in a tick's visit between two stream sweeps,
        then the same at a stream sweep."""
        ws = next(iter(server.streams.values()))
        (http,) = (c for c in server.connections if c is not ws)
        now = server.now
        server._streams_due = now + 5.0  # the open streams were just checked
        between = server._due(now)
        at_sweep = server._due(now + 5.0)
        return ws in between, http in between, ws in at_sweep, http in at_sweep

    with (
        RawClient(running.port) as client,
        socket.create_connection(("127.0.0.1", running.port), timeout=5 * UNIT) as http,
    ):
        assert opened.wait(5 * UNIT)
        http.sendall(b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert http.recv(4096).startswith(b"HTTP/1.1 404")  # answered, kept alive
        assert running.call(visited) == (False, True, True, True)
        client.send_raw(frame(OP_TEXT, b"close please"))
        assert client.recv_close() == 1000
        # Closing: its deadline is close_timeout away, so every tick visits it.
        assert running.call(visited) == (True, True, True, True)
        sent = time.monotonic()
        assert frames_until_eof(client, 5 * UNIT) == []  # never answered: cut
        assert time.monotonic() - sent < close_timeout + 2 * UNIT
    assert running.call(lambda: len(server.quick) <= 1)  # the HTTP connection at most


def test_messages_sent_after_the_server_close_do_not_reopen_it(serve: Any) -> None:
    """Between our close frame and the client's, incoming data frames are not answered."""
    box: dict[str, Any] = {}
    opened = threading.Event()

    class Keep(Echo):
        def on_open(self) -> None:
            box["inst"] = self
            opened.set()

    app = plezi.App()
    app.route("/", Keep)
    running = serve(app)
    with RawClient(running.port) as client:
        assert opened.wait(5 * UNIT)
        running.call(lambda: box["inst"].close())
        assert client.recv_close() == 1000
        client.send_raw(frame(OP_TEXT, b"late") + frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        assert frames_until_eof(client, 5 * UNIT) == []


def test_a_closing_connection_still_delivers_what_was_queued(serve: Any) -> None:
    """A protocol error while the client is behind: the server stops reading and closes, but what
    it had already queued, and its close frame, still reach the client (within close_timeout);
    the reaper must not cut the connection at its next tick."""
    box: dict[str, Any] = {}
    flooded = threading.Event()
    count = 16  # 1 MiB, far more than the kernel buffers of a client with a 4 KiB window

    class Flood:
        def on_open(self) -> None:
            small_send_buffer(self)

        def on_message(self, data: Any) -> None:
            box["inst"] = self
            for _ in range(count):
                self.write(b"w" * CHUNK)  # type: ignore[attr-defined]
            flooded.set()

    app = plezi.App()
    app.route("/", Flood)
    # No pause before the cap (reading goes on), and a fast reaper (ping_timeout / 4).
    running = serve(
        app,
        max_outgoing_buffer=8 << 20,
        write_high_water=8 << 20,
        ping_timeout=0.2 * UNIT,
        close_timeout=5 * UNIT,
    )
    with RawClient(running.port, rcvbuf=4096) as client:
        client.send_raw(frame(OP_TEXT, b"flood"))
        assert flooded.wait(5 * UNIT)
        assert running.call(lambda: box["inst"].pending) > 0
        client.send_raw(encode_frame(OP_TEXT, b"unmasked"))  # a protocol error
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: box["inst"].open):
            assert time.monotonic() < deadline
        # Let the reaper run a few times while the client is still behind.
        ticks = 0
        last = running.call(lambda: running.server.now)
        while ticks < 3:
            assert time.monotonic() < deadline
            now = running.call(lambda: running.server.now)
            ticks += now != last
            last = now
        for _ in range(count):
            got = client.recv_frame(5 * UNIT)
            assert (got.opcode, len(got.payload)) == (OP_BINARY, CHUNK)
        assert client.recv_close() == 1002
        assert client.wait_eof() == b""
