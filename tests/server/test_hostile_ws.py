"""Hostile WebSocket clients against a server in a subprocess: fair turns, floods, and the memory
of closed connections (issue 18).

A probe client echoes a short message every 10 ms beside each attack; its round trips are
compared with a control measured in the same test, before the attack, so that the bounds hold
on a loaded machine. The server is ``hostile_ws_app.py``, which runs with the cyclic garbage
collector off and reports the connection objects alive (``GET /live``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawhttp import RawHTTP
from test_sse import EventStream
from wsclient import RawClient, masked

from helpers import UNIT, Script, wait_for
from plezi.protocol.frames import OP_BINARY, OP_CONT, OP_PING, OP_TEXT
from plezi.protocol.reader import MAX_EMPTY_FRAGMENTS
from plezi.server.websocket import MAX_CONTROL_FRAMES

APP = Path(__file__).with_name("hostile_ws_app.py")


def live(port: int) -> dict[str, Any]:
    """What ``GET /live`` reports (connection objects alive, channels, RSS)."""
    with RawHTTP(port) as http:
        response = http.request("GET", "/live")
    assert response.status == 200, response
    result: dict[str, Any] = json.loads(response.body)
    return result


# -- the probe --------------------------------------------------------------------------------


def probe(port: int, seconds: float) -> list[float]:
    """Round trips (seconds) of one short echo every 10 ms for ``seconds``."""
    times: list[float] = []
    with RawClient(port) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.monotonic()
            client.send_text("probe")
            assert client.recv_message(timeout=10 * UNIT).text == "probe"
            times.append(time.monotonic() - start)
            time.sleep(0.01)  # the probe's own pace, not a synchronization
    return times


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Attacker:
    """One client sending ``blob`` again and again (and reading and dropping what comes back)
    until stopped or disconnected; remembers the close code the server sent, if any."""

    def __init__(self, port: int, blob: bytes, prefix: bytes = b"") -> None:
        self.client = RawClient(port, extra=prefix)
        self.blob = blob
        self.stop = threading.Event()
        self.sent = 0
        self.received = bytearray()
        #: Set when the server ended the connection (not the test).
        self.ended = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, daemon=True),
        ]

    def __enter__(self) -> Attacker:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for thread in self._threads:
            thread.join(10 * UNIT)
        self.client.close()

    def _send(self) -> None:
        sock = self.client.sock
        sock.settimeout(30 * UNIT)
        try:
            while not self.stop.is_set():
                sock.sendall(self.blob)
                self.sent += len(self.blob)
        except OSError:
            pass  # the server hung up (or the test stopped us)

    def _recv(self) -> None:
        sock = self.client.sock
        self.received += self.client.buf
        try:
            while not self.stop.is_set():
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                # Keep the start only: enough for the close frame of a flood of pings.
                if len(self.received) < 1 << 16:
                    self.received += chunk
        except OSError:
            pass
        if not self.stop.is_set():
            self.ended.set()

    def close_code(self) -> int | None:
        """The code of the first close frame the server sent (frames before it skipped)."""
        data = bytes(self.received)
        pos = 0
        while pos + 2 <= len(data):
            opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
            hlen = 2
            if length == 126:
                length, hlen = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                length, hlen = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if opcode == 8:
                return int.from_bytes(data[pos + hlen : pos + hlen + 2], "big")
            pos += hlen + length
        return None


def measure_under_attack(
    server: Script, blob: bytes, prefix: bytes = b"", *, refused: bool = False
) -> tuple[float, float, Attacker]:
    """The probe's p99 without an attack (control), then during one; and the attacker (which
    the server must have disconnected, if ``refused``)."""
    control = p99(probe(server.port, 1.0))
    with Attacker(server.port, blob, prefix) as attacker:
        # The attack is on once the server is busy with it (or has refused it).
        wait_for(
            lambda: attacker.sent >= 4 * len(blob) or attacker.ended.is_set(),
            "the attack to start",
            timeout=10,
        )
        attacked = p99(probe(server.port, 2.0 * UNIT))
        if refused:
            assert attacker.ended.wait(10 * UNIT), "the attack was not stopped"
    print(f"probe p99: control {control * 1000:.1f} ms, under attack {attacked * 1000:.1f} ms")
    return control, attacked, attacker


def fair(control: float, attacked: float) -> bool:
    """The probe kept its pace: 50 ms on a quiet machine, more if the control says it is busy."""
    return attacked < max(0.05, 3 * control) * UNIT


@pytest.fixture
def server(script: Callable[..., Script]) -> Script:
    return script(APP)


# -- fair turns -------------------------------------------------------------------------------


def test_a_flood_of_tiny_messages_does_not_stall_the_other_clients(server: Script) -> None:
    """Thousands of pipelined one-byte messages in every read: the server echoes them all, in
    turns, while the probe's echoes keep their pace."""
    blob = masked(OP_TEXT, b"x") * 150_000
    control, attacked, attacker = measure_under_attack(server, blob)
    assert not attacker.ended.is_set(), "a legitimate flood must not be disconnected"
    assert attacker.received.startswith(b"\x81\x01x"), "the flood is echoed"
    assert fair(control, attacked), (control, attacked)


def test_the_turns_keep_the_order_of_messages(server: Script) -> None:
    """Parsing in turns splits a read, never reorders it: 5,000 numbered messages in one send
    come back in order."""
    count = 5000
    with RawClient(server.port) as client:
        client.send_raw(b"".join(masked(OP_TEXT, str(i).encode()) for i in range(count)))
        got = [client.recv_message().text for _ in range(count)]
    assert got == [str(i) for i in range(count)]


# -- floods -----------------------------------------------------------------------------------


def test_a_ping_flood_is_closed_with_1008_and_does_not_stall_the_others(server: Script) -> None:
    blob = masked(OP_PING, b"p" * 16) * 50_000
    control, attacked, attacker = measure_under_attack(server, blob, refused=True)
    assert attacker.close_code() == 1008
    assert fair(control, attacked), (control, attacked)


def test_pings_under_the_rate_limit_each_get_their_pong(server: Script) -> None:
    """A burst of pings under ``MAX_CONTROL_FRAMES`` is no flood: each is answered, in order
    (the Autobahn suite expects a pong per ping), and the connection stays open."""
    burst = MAX_CONTROL_FRAMES
    with RawClient(server.port) as client:
        client.send_raw(b"".join(masked(OP_PING, b"%d" % i) for i in range(burst)))
        client.send_text("after")
        pongs = []
        while (frame := client.recv_frame()).opcode != OP_TEXT:
            pongs.append(frame.payload)
        assert frame.text == "after"
    assert pongs == [b"%d" % i for i in range(burst)]


def test_pings_without_reading_the_pongs_are_bounded(server: Script) -> None:
    """A client that pings as fast as it can and never reads: cut (1008) before it was sent
    more pongs than the rate limit allows."""
    with RawClient(server.port, rcvbuf=4096) as client:
        ping = masked(OP_PING, b"p" * 125)
        try:
            for _ in range(200):
                client.send_raw(ping * (MAX_CONTROL_FRAMES // 10))
        except OSError:
            pass  # the server hung up
        data = client.wait_eof(10 * UNIT)
    # (The close frame itself may be lost: the server's close meets pings still arriving, and
    # the reset that follows drops what the client had not read.)
    pongs = data.count(b"\x8a\x7d" + b"p" * 125)
    assert pongs <= MAX_CONTROL_FRAMES, pongs


def test_an_empty_continuation_flood_is_closed_with_1008(server: Script) -> None:
    first = masked(OP_BINARY, b"a", fin=False)
    blob = masked(OP_CONT, b"", fin=False) * 100_000
    control, attacked, attacker = measure_under_attack(server, blob, prefix=first, refused=True)
    assert attacker.close_code() == 1008
    assert fair(control, attacked), (control, attacked)


def test_empty_fragments_up_to_the_limit_make_a_message(server: Script) -> None:
    with RawClient(server.port) as client:
        client.send_raw(
            masked(OP_TEXT, b"a", fin=False)
            + masked(OP_CONT, b"", fin=False) * MAX_EMPTY_FRAGMENTS
            + masked(OP_CONT, b"b")
        )
        assert client.recv_message().text == "ab"


# -- memory of closed connections -------------------------------------------------------------


def open_and_kill(port: int, websockets: int, streams: int) -> tuple[int, dict[str, Any]]:
    """Open WebSockets and event streams (each subscribed to a channel of its own), kill them
    all, wait until the server has seen them go (their subscriptions gone); the RSS while they
    were open, and what ``/live`` says once they are gone."""
    # A quarter of them with an ``async`` on_close.
    clients = [RawClient(port, "/" if i % 4 else "/async") for i in range(websockets)]
    events = [EventStream(port) for _ in range(streams)]
    for stream in events:
        stream.open()
    for client in clients:  # every on_open has run: the subscriptions exist
        client.send_text("hi")
        assert client.recv_message().text == "hi"
    opened = live(port)
    assert opened["connections"] == websockets + streams, opened
    assert opened["channels"] == websockets + streams, opened
    for client in clients:
        client.reset()
    for stream in events:
        stream.close()
    wait_for(lambda: live(port)["channels"] == 0, "the channels to go", timeout=10)
    return opened["rss"], live(port)


def test_closed_connections_are_freed_without_the_cyclic_collector(server: Script) -> None:
    """WebSockets and event streams, killed by their clients, leave no connection object, no
    controller and no subscription behind, with the cyclic garbage collector off; so a second
    and a third wave of clients reuse the memory of the first instead of adding to it."""
    before = live(server.port)
    assert before["gc_enabled"] is False
    assert before["connections"] == 0
    waves = [open_and_kill(server.port, 300, 100) for _ in range(3)]
    mib = [(round(peak / 2**20, 1), round(after["rss"] / 2**20, 1)) for peak, after in waves]
    print(f"RSS: {before['rss'] / 2**20:.1f} MiB before; (open, closed) per wave: {mib} MiB")
    for _, after in waves:
        assert after["connections"] == 0, after
        assert after["controllers"] == 0, after
    # Each controller holds 64 KiB: every wave kept alive would add 25 MiB.
    first_peak, (_, last) = waves[0][0], waves[2]
    assert last["rss"] < first_peak + 10 * 2**20, mib
