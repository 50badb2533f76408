"""``plezi.route("/metrics", "metrics")`` and ``plezi.stats()``: the figures after real traffic.

A real server on port 0; real WebSocket, SSE and HTTP clients; the scrape read over HTTP and
parsed with ``prometheus_client``'s own text parser. Process-wide counters (publishes,
deliveries) are compared as differences, since other tests of this process publish too.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rawhttp import RawHTTP, request_bytes
from wsclient import connect, masked

import plezi
from helpers import UNIT, Running, start_script, start_server, wait_for
from plezi.protocol.frames import OP_TEXT
from promclient import open_on_both_workers, scrape, value, wait_for_both_workers
from sseclient import EventStream


class Room:
    """Subscribes every connection (WebSocket or SSE) to ``room``; echoes WebSocket messages."""

    def on_open(self) -> None:
        self.subscribe("room")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


class Hello:
    def index(self) -> str:
        return "hello"


class Private:
    def pre_connect(self) -> bool:
        return False

    def on_message(self, data: Any) -> None:
        pass


@pytest.fixture
def running() -> Iterator[Running]:
    app = plezi.App()
    app.route("/room", Room)
    app.route("/hello", Hello)
    app.route("/private", Private)
    app.route("/metrics", "metrics")
    r = start_server(app, ping_interval=0)
    yield r
    r.stop()


def test_scrape_after_websocket_sse_http_publish_and_refusals(running: Running) -> None:
    before = scrape(running.url)
    published = value(before, "plezi_publishes_total")
    delivered = value(before, "plezi_deliveries_total")

    with connect(running.ws_url + "/room") as ws, EventStream(running.port, "/room") as stream:
        for i in range(3):
            ws.send(f"m{i}")
            assert ws.recv(timeout=5 * UNIT) == f"m{i}"
        stream.open()
        wait_for(
            lambda: running.call(lambda: len(running.server.streams)) == 2, "both streams open"
        )
        wait_for(lambda: running.call(_room_count) == 2, "both subscribed")
        plezi.publish("room", "hello")
        assert ws.recv(timeout=5 * UNIT) == "hello"
        assert stream.event().data == "hello"
        for _ in range(2):
            assert httpx.get(running.url + "/hello", trust_env=False).text == "hello"
        # Refused: by pre_connect (403), a bad handshake (400), a foreign Origin (403).
        assert _upgrade(running.port, "/private").status == 403
        assert _upgrade(running.port, "/room", version="8").status in (400, 426)
        running.server.config.allowed_origins = ("https://good.example",)
        assert _upgrade(running.port, "/room", origin="https://evil.example").status == 403
        running.server.config.allowed_origins = ()

        after = scrape(running.url)
        assert value(after, "plezi_processes") == 1
        assert value(after, "plezi_connections", kind="websocket") == 1
        assert value(after, "plezi_connections", kind="sse") == 1
        assert value(after, "plezi_connections", kind="http") >= 1  # the scrape's own
        assert value(after, "plezi_messages_received_total", kind="websocket") == 3
        assert value(after, "plezi_messages_sent_total", kind="websocket") == 3
        # 3 echoes of 2 bytes and "hello", each behind a 2-byte frame header.
        assert value(after, "plezi_bytes_sent_total", kind="websocket") == 3 * 4 + 7
        assert value(after, "plezi_bytes_sent_total", kind="sse") == len(b"data: hello\n\n")
        assert value(after, "plezi_publishes_total") - published == 1
        assert value(after, "plezi_deliveries_total") - delivered == 2
        assert value(after, "plezi_connections_refused_total", reason="pre_connect") == 1
        assert value(after, "plezi_connections_refused_total", reason="handshake") == 1
        assert value(after, "plezi_connections_refused_total", reason="origin") == 1
        assert value(after, "plezi_connections_refused_total", reason="capacity") == 0
        assert value(after, "plezi_pubsub_connected", engine="memory") == 1
        # Latency per route: the two GETs (and the first scrape, timed once it was answered).
        assert value(after, "plezi_request_duration_seconds_count", route="/hello") == 2
        assert value(after, "plezi_request_duration_seconds_bucket", route="/hello", le="+Inf") == 2
        assert value(after, "plezi_request_duration_seconds_sum", route="/hello") > 0
        assert value(after, "plezi_request_duration_seconds_count", route="/metrics") == 1

    # The same figures as a dict, and ended connections still counted.
    wait_for(lambda: running.call(lambda: len(running.server.streams)) == 0, "streams closed")
    stats = running.call(plezi.stats)
    assert stats["connections"]["websocket"] == 0
    assert stats["connections"]["sse"] == 0
    assert stats["messages_received"]["websocket"] == 3
    assert stats["messages_sent"] == {"websocket": 3, "sse": 0}
    assert stats["bytes_sent"]["websocket"] >= 3 * 4 + 7  # plus the close frame
    assert stats["refused"]["pre_connect"] == 1
    assert stats["requests"]["/hello"]["count"] == 2
    assert stats["publishes"] == value(after, "plezi_publishes_total")
    assert stats["pubsub"]["engine"] == "memory"


def test_slow_consumer_disconnected_is_counted() -> None:
    """A client that reads nothing while the server writes past the cap is dropped, and
    counted."""

    class Flood:
        def on_message(self, data: Any) -> None:
            for _ in range(200):
                self.write("x" * 10_000)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/", Flood)
    r = start_server(app, max_outgoing_buffer=200_000, write_high_water=64_000)
    try:
        raw = RawHTTP(r.port)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.send(_upgrade_bytes("/"))
        assert raw.read_response(head=True).status == 101
        raw.send(masked(OP_TEXT, b"go"))
        wait_for(lambda: r.call(lambda: r.server.stats.slow_disconnected) == 1, "the drop counted")
        assert r.call(plezi.stats)["slow_consumers"] == {"dropped": 0, "disconnected": 1}
        raw.close()
    finally:
        r.stop()


def _room_count() -> int:
    from plezi.pubsub.hub import hub

    return hub.registry.count("room")


def _upgrade_bytes(path: str, *, version: str = "13", origin: str | None = None) -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": version,
    }
    if origin is not None:
        headers["Origin"] = origin
    return request_bytes("GET", path, headers)


def _upgrade(port: int, path: str, **options: Any) -> Any:
    with RawHTTP(port) as raw:
        raw.send(_upgrade_bytes(path, **options))
        return raw.read_response()


CLUSTER_APP = """
import os

import plezi


class Pid:
    def on_open(self):
        self.write(str(os.getpid()))

    def on_message(self, data):
        self.write(data)


plezi.route("/ws", Pid)
plezi.route("/metrics", "metrics")
"""


def test_workers_scrape_covers_the_whole_cluster(tmp_path: Path) -> None:
    """Under ``--workers 2`` each scrape (whichever worker answers it) counts the connections
    and messages of both workers."""
    path = tmp_path / "cluster_metrics.py"
    path.write_text(CLUSTER_APP)
    script = start_script(path, "--workers", "2", env={"PL_REDIS_URL": "", "REDIS_URL": ""})
    try:
        with contextlib.ExitStack() as clients:
            opened = open_on_both_workers(clients, lambda: script.ws_url + "/ws")
            for i, ws in enumerate(opened):
                ws.send(f"m{i}")
                assert ws.recv(timeout=10 * UNIT) == f"m{i}"
            wait_for_both_workers(script.url)
            for _ in range(4):  # several scrapes: both workers answer some (SO_REUSEPORT)
                samples = scrape(script.url)
                assert value(samples, "plezi_processes") == 2
                assert value(samples, "plezi_connections", kind="websocket") == len(opened)
                assert value(samples, "plezi_messages_received_total", kind="websocket") == len(
                    opened
                )
                # Each connection: its pid on open and one echo.
                assert value(samples, "plezi_messages_sent_total", kind="websocket") == 2 * len(
                    opened
                )
                assert value(samples, "plezi_pubsub_connected", engine="cluster") == 2
    finally:
        code, log = script.stop()
    assert code == 0, log


def test_request_times_buckets_are_cumulative_and_routes_with_one_path_add_up() -> None:
    from plezi.web.latency import BUCKETS, RequestTimes
    from plezi.web.routes import ControllerRoute

    first, second = ControllerRoute("/hello", Hello), ControllerRoute("/hello", Hello)
    times = RequestTimes()
    times.observe(first, 0.00005)  # the first bucket (0.1 ms)
    times.observe(second, 0.2)  # the 0.25 s bucket
    times.observe(None, 60.0)  # past every bound: +Inf only
    snapshot = times.snapshot()
    hello = snapshot["/hello"]
    assert hello["count"] == 2
    assert hello["sum"] == pytest.approx(0.20005)
    expected = [1 if bound < 0.25 else 2 for bound in BUCKETS] + [2]
    assert hello["buckets"] == expected
    assert snapshot[""] == {"buckets": [0] * len(BUCKETS) + [1], "count": 1, "sum": 60.0}
