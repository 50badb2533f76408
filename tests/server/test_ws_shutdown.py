"""Graceful shutdown with open WebSockets: on_shutdown (its writes delivered), close 1001, on_close,
a bounded wait, exit 0; in process and as a real subprocess receiving SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from wsclient import RawClient, connect

import plezi
from helpers import ROOT, UNIT, Events, wait_for
from plezi.protocol.frames import OP_TEXT

GOODBYE = "Server shutting down. Goodbye."


def expect_goodbye_then_1001(ws: Any, goodbye: str) -> None:
    assert ws.recv(timeout=5 * UNIT) == goodbye
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=5 * UNIT)
    assert info.value.rcvd is not None, "no close frame from the server"
    assert info.value.rcvd.code == 1001


def test_in_process_shutdown_sends_on_shutdown_then_1001_then_on_close(serve: Any) -> None:
    tally = Events()

    class Room:
        def on_open(self) -> None:
            self.write(f"hello {self.id}")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

        def on_shutdown(self) -> None:
            tally.add("shutdown")
            self.write(f"bye {self.id}")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/", Room)
    running = serve(app)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(running.ws_url + "/")) for _ in range(3)]
        ids = [ws.recv(timeout=5 * UNIT).removeprefix("hello ") for ws in clients]
        started = time.monotonic()
        running.stop()
        stopped = time.monotonic() - started
        for ws, id_ in zip(clients, ids, strict=True):
            expect_goodbye_then_1001(ws, f"bye {id_}")
    assert tally.events.count("shutdown") == 3
    assert tally.events.count("close") == 3
    # Every shutdown ran before any close, and nothing waited for the shutdown timeout.
    assert tally.events[:3] == ["shutdown"] * 3
    assert stopped < 2 * UNIT


def test_async_on_shutdown_that_awaits_still_gets_its_write_out_first(serve: Any) -> None:
    """An ``async`` on_shutdown that waits for as long as the test says (a future the test
    resolves once the server is shutting down): its writes still come before the 1001."""
    tally = Events()
    box: dict[str, asyncio.Future[None]] = {}

    class Slow:
        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

        async def on_shutdown(self) -> None:
            box["saving"] = asyncio.get_running_loop().create_future()
            tally.add("saving")
            await box["saving"]
            self.write("saved your work")  # type: ignore[attr-defined]
            await asyncio.sleep(0)
            self.write("goodbye")  # type: ignore[attr-defined]
            tally.add("shutdown")

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/", Slow)
    running = serve(app)
    with connect(running.ws_url + "/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "hi"
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        tally.wait_for("saving")
        # on_shutdown is waiting; it ends only when the test says so, from the server's loop.
        running.call(lambda: box["saving"].set_result(None))
        assert ws.recv(timeout=5 * UNIT) == "saved your work"
        expect_goodbye_then_1001(ws, "goodbye")
        stopper.join(10 * UNIT)
        assert not stopper.is_alive()
    assert tally.events == ["saving", "shutdown", "close"]


def test_shutdown_waits_for_an_async_on_message_in_flight(serve: Any) -> None:
    """on_shutdown is queued behind a running async on_message; both writes arrive, in order,
    before the 1001."""
    tally = Events()
    busy = threading.Event()
    box: dict[str, asyncio.Future[None]] = {}

    class Busy:
        async def on_message(self, data: str) -> None:
            box["job"] = asyncio.get_running_loop().create_future()
            busy.set()
            await box["job"]
            self.write("job done")  # type: ignore[attr-defined]

        def on_shutdown(self) -> None:
            self.write("bye")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/", Busy)
    running = serve(app)
    with connect(running.ws_url + "/") as ws:
        ws.send("start the job")
        assert busy.wait(5 * UNIT)
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        # The server is shutting down; the job ends later.
        wait_for(lambda: running.call(lambda: running.server.shutting_down), "the shutdown", 5)
        running.call(lambda: box["job"].set_result(None))
        assert ws.recv(timeout=5 * UNIT) == "job done"
        expect_goodbye_then_1001(ws, "bye")
        stopper.join(10 * UNIT)
        assert not stopper.is_alive()
    assert tally.events == ["close"]


def test_a_client_ignoring_the_close_does_not_outlive_shutdown_timeout(serve: Any) -> None:
    tally = Events()

    class Room:
        def on_message(self, data: str) -> None:
            self.write(data)  # type: ignore[attr-defined]

        def on_shutdown(self) -> None:
            self.write("bye")  # type: ignore[attr-defined]

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/", Room)
    shutdown_timeout = 0.5 * UNIT
    # close_timeout is longer than the shutdown timeout: the shutdown timeout must win.
    running = serve(app, shutdown_timeout=shutdown_timeout, close_timeout=30 * UNIT)
    port = running.port
    with RawClient(port) as stubborn:
        started = time.monotonic()
        stopper = threading.Thread(target=running.stop)
        stopper.start()
        got = stubborn.recv_message()
        assert (got.opcode, got.payload) == (OP_TEXT, b"bye")
        assert stubborn.recv_close() == 1001
        # The listener is closed once the shutdown has begun.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=UNIT):
            pass
        # Never answer: the server cuts the connection after shutdown_timeout.
        assert stubborn.wait_eof(10 * UNIT) == b""
        stopper.join(10 * UNIT)
        elapsed = time.monotonic() - started
    assert not stopper.is_alive()
    assert elapsed >= 0.5 * shutdown_timeout
    assert elapsed < shutdown_timeout + 2 * UNIT
    assert tally.events == ["close"]


def test_an_async_callback_that_never_ends_does_not_block_shutdown(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An async on_message stuck forever: the shutdown still ends within its bound, the stuck
    callback is cancelled, on_close still runs, and no task is left pending on the loop."""
    caplog.set_level(logging.INFO)
    tally = Events()
    busy = threading.Event()

    class Stuck:
        async def on_message(self, data: str) -> None:
            busy.set()
            await asyncio.get_running_loop().create_future()  # never resolved

        def on_close(self) -> None:
            tally.add("close")

    app = plezi.App()
    app.route("/", Stuck)
    shutdown_timeout = 0.5 * UNIT
    running = serve(app, shutdown_timeout=shutdown_timeout)
    with connect(running.ws_url + "/") as ws:
        ws.send("go")
        assert busy.wait(5 * UNIT)
        started = time.monotonic()
        running.stop()
        elapsed = time.monotonic() - started
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5 * UNIT)
    assert elapsed < shutdown_timeout + 2 * UNIT
    assert tally.events == ["close"]
    destroyed = [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert destroyed == []


# -- real processes and signals ----------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_websocket_sample_says_goodbye_on_signal(script: Any, sig: int) -> None:
    proc = script(ROOT / "examples" / "websocket_sample.py")
    with connect(proc.ws_url + "/") as one, connect(proc.ws_url + "/") as two:
        for ws in (one, two):
            ws.send("hi")
            assert ws.recv(timeout=5 * UNIT) == "echo: hi"
        started = time.monotonic()
        proc.proc.send_signal(sig)
        for ws in (one, two):
            expect_goodbye_then_1001(ws, GOODBYE)
        proc.proc.wait(10 * UNIT)
        elapsed = time.monotonic() - started
    code, err = proc.stop()
    assert code == 0, err
    assert elapsed < 5 * UNIT
    assert "Traceback" not in err


def test_a_stubborn_client_does_not_keep_a_signalled_process_alive(script: Any) -> None:
    proc = script(ROOT / "examples" / "websocket_sample.py", "--shutdown-timeout", str(0.5 * UNIT))
    with RawClient(proc.port) as stubborn:
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert stubborn.recv_message().payload == GOODBYE.encode()
        assert stubborn.recv_close() == 1001
        assert stubborn.wait_eof(10 * UNIT) == b""
        proc.proc.wait(10 * UNIT)
        elapsed = time.monotonic() - started
    code, err = proc.stop()
    assert code == 0, err
    assert elapsed < 0.5 * UNIT + 3 * UNIT
    assert "Traceback" not in err
