"""Hostile HTTP load (issue 18): memory bounded by the limits, fair turns, nothing held after close.

Memory is the server's own: a subprocess (``python app.py``), its ``VmRSS`` read from
``/proc/PID/status``. A watchdog kills a server whose memory runs away (that is the bug these
tests catch: it must fail the test, not take the machine down). Latency tests compare a probe's
round trips during an attack with its own round trips without one, measured in the same test, so
that they hold on a loaded machine.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawhttp import RawHTTP, request_bytes

from helpers import UNIT, Running, Script, wait_for
from plezi import App
from plezi.server.http import HttpProtocol

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/PID/status"
)

MIB = 1024 * 1024

APP_SOURCE = textwrap.dedent(
    """
    import gc
    import json
    import os

    import plezi

    if os.environ.get("HOSTILE_NO_GC"):
        gc.disable()  # memory must come back without the cyclic collector


    class Home:
        def index(self):
            return "Hello"

        def show(self):
            return "object " + self.params["id"]

        def create(self):
            return str(len(self.request.body))


    class Pad:
        def show(self):
            return "x" * int(self.params["id"])


    plezi.route("/pad", Pad)
    plezi.route("/", Home)
    plezi.run(**json.loads(os.environ.get("HOSTILE_OPTIONS", "{}")))
    """
)


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class Watch:
    """Samples a process's RSS in a thread; kills it past ``kill_above`` bytes."""

    def __init__(self, pid: int, kill_above: int) -> None:
        self.pid = pid
        self.kill_above = kill_above
        self.peak = rss(pid)
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                now = rss(self.pid)
            except (OSError, AssertionError):
                return
            self.peak = max(self.peak, now)
            if now > self.kill_above:
                self.killed = True
                os.kill(self.pid, 9)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def app_script(tmp_path: Path, script: Callable[..., Script]) -> Callable[..., Script]:
    """``app_script(*flags, no_gc=False, **options)``: the small app above in a subprocess."""
    path = tmp_path / "app.py"
    path.write_text(APP_SOURCE)

    def start(*flags: str, no_gc: bool = False, **options: Any) -> Script:
        import json

        env = {"HOSTILE_OPTIONS": json.dumps(options)}
        if no_gc:
            env["HOSTILE_NO_GC"] = "1"
        return script(path, *flags, env=env)

    return start


def answered(port: int, target: str = "/", timeout: float = 5 * UNIT) -> float:
    """Seconds a new connection takes to get an answer to ``GET target``."""
    start = time.monotonic()
    with RawHTTP(port, timeout=timeout) as conn:
        assert conn.request("GET", target).status == 200
    return time.monotonic() - start


def send_until_blocked(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send ``data`` for at most ``seconds`` (the server stops reading: that is the point);
    returns the bytes sent."""
    sock.settimeout(0.2)
    sent = 0
    deadline = time.monotonic() + seconds
    view = memoryview(data)
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent : sent + 65536])
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


def non_reading_socket(port: int) -> socket.socket:
    """A client with a small receive buffer, so that the server's replies pile up there."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


# -- 1. pipelined requests and unread replies -----------------------------------------------


def test_pipelined_file_requests_that_are_never_read_keep_memory_bounded(
    tmp_path: Path, app_script: Callable[..., Script]
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "big.bin").write_bytes(os.urandom(MIB))
    s = app_script("--public", str(public))
    pipeline = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n" * 2000
    # While the attacker sits on 2,000 unread megabytes, another client is served.
    assert_unread_pipeline_is_bounded(s, pipeline, send_for=2 * UNIT, growth=100 * MIB)


def assert_unread_pipeline_is_bounded(
    s: Script, pipeline: bytes, *, send_for: float, growth: int
) -> None:
    """A client sends ``pipeline`` and never reads the replies: other clients keep being
    answered within 2 s, and the server's RSS grows by less than ``growth``."""
    pid = s.proc.pid
    base = rss(pid)
    watch = Watch(pid, kill_above=base + 400 * MIB)
    try:
        attacker = non_reading_socket(s.port)
        send_until_blocked(attacker, pipeline, send_for)
        for _ in range(10):
            assert answered(s.port) < 2 * UNIT
        assert not watch.killed, f"RSS passed {watch.kill_above >> 20} MiB"
        assert watch.peak - base < growth, (base >> 20, watch.peak >> 20)
        attacker.close()
    finally:
        watch.stop()
    assert not watch.killed


def test_many_small_pipelined_requests_never_read_keep_memory_bounded(
    app_script: Callable[..., Script],
) -> None:
    s = app_script()
    # About a page each (as a chat's home page): 200 MB of replies, 6 MB of requests.
    pipeline = b"GET /pad/1000 HTTP/1.1\r\nHost: t\r\n\r\n" * 200_000
    assert_unread_pipeline_is_bounded(s, pipeline, send_for=3 * UNIT, growth=50 * MIB)


def test_a_large_file_is_sent_whole_and_in_order_with_pipelined_requests(
    tmp_path: Path, app_script: Callable[..., Script]
) -> None:
    """Streaming the file must not change what a reading client gets."""
    public = tmp_path / "public"
    public.mkdir()
    data = os.urandom(3 * MIB + 123)
    (public / "big.bin").write_bytes(data)
    s = app_script("--public", str(public))
    with RawHTTP(s.port) as conn:
        conn.send(
            request_bytes("GET", "/big.bin")
            + request_bytes("GET", "/42")
            + request_bytes("GET", "/big.bin", {"Range": "bytes=100-200099"})
            + request_bytes("HEAD", "/big.bin")
            + request_bytes("GET", "/")
        )
        whole = conn.read_response()
        assert (whole.status, whole.body == data) == (200, True)
        assert conn.read_response().body == b"object 42"
        part = conn.read_response()
        assert (part.status, part.body == data[100:200100]) == (206, True)
        head = conn.read_response(head=True)
        assert head.header("content-length") == str(len(data))
        assert conn.read_response().body == b"Hello"


# -- 2. fair turns ----------------------------------------------------------------------------


def probe_latencies(port: int, seconds: float) -> list[float]:
    """Round trips of one keep-alive client asking every 50 ms (the issue's probe asked every
    100 ms: twice the samples here)."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    with RawHTTP(port, timeout=10 * UNIT) as conn:
        while time.monotonic() < deadline:
            start = time.monotonic()
            assert conn.request("GET", "/").status == 200
            out.append(time.monotonic() - start)
            time.sleep(0.05)  # the probe's own pace, not a synchronization
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def test_a_pipelining_client_does_not_stall_the_others(app_script: Callable[..., Script]) -> None:
    """Threshold: the probe's p99 during the attack stays under 50 ms plus its p99 without the
    attack (on an idle machine both are about a millisecond; before the fix, seconds)."""
    s = app_script()
    control = probe_latencies(s.port, 3 * UNIT)  # as long as the attack: as many spikes
    # The attacker is a process of its own: in this one, its threads would take the GIL from
    # the probe and its delays would be counted as the server's.
    attacker = subprocess.Popen([sys.executable, "-c", _PIPELINER, str(s.port)])
    try:
        attacked = probe_latencies(s.port, 3 * UNIT)
    finally:
        attacker.kill()
        attacker.wait(10)
    assert p99(attacked) < p99(control) + 0.05 * UNIT, (p99(control), p99(attacked))


#: Pipelined ``GET /42`` in batches of 1,000, replies read by a second thread, until killed.
_PIPELINER = """
import socket, sys, threading
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def read():
    while sock.recv(1 << 20):
        pass
threading.Thread(target=read, daemon=True).start()
batch = b"GET /42 HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" * 1000
while True:
    sock.sendall(batch)
"""


# -- 3. memory returns when connections end ---------------------------------------------------


def upload(port: int, size: int) -> None:
    with RawHTTP(port, timeout=30 * UNIT) as conn:
        conn.send(request_bytes("POST", "/", {"Content-Length": str(size)}))
        chunk = b"x" * MIB
        left = size
        while left:
            conn.send(chunk[: min(left, MIB)])
            left -= min(left, MIB)
        assert conn.read_response().body == str(size).encode()


def test_finished_uploads_give_their_memory_back_without_the_cyclic_gc(
    app_script: Callable[..., Script],
) -> None:
    s = app_script(no_gc=True)
    pid = s.proc.pid
    upload(s.port, 20 * MIB)  # the allocator's first growth is not what is measured
    base = rss(pid)
    watch = Watch(pid, kill_above=base + 800 * MIB)
    try:
        for _ in range(10):
            upload(s.port, 20 * MIB)
    finally:
        watch.stop()
    assert not watch.killed
    # The connections are closed: their bodies must be gone, with the collector disabled.
    wait_for(
        lambda: rss(pid) - base < 60 * MIB,
        f"the uploads' memory to come back (peak {watch.peak >> 20} MiB over the base)",
        timeout=5,
    )


def test_closed_connections_are_freed_at_once(serve: Callable[..., Running]) -> None:
    """No cycle keeps a closed connection's protocol alive (counted with the collector off)."""

    class Home:
        def index(self) -> str:
            return "Hello"

    app = App()
    app.route("/", Home)
    r = serve(app)
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = r.call(_count_protocols)
        for _ in range(20):
            with RawHTTP(r.port) as conn:
                assert conn.request("GET", "/").status == 200
                conn.send(request_bytes("POST", "/", {"Content-Length": "100000"}))
        wait_for(lambda: not r.call(lambda: len(r.server.connections)), "the closes", timeout=5)
        assert r.call(_count_protocols) <= before
    finally:
        if was_enabled:
            gc.enable()


def _count_protocols() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is HttpProtocol)


def test_concurrent_uploads_past_max_body_buffer_get_503(serve: Callable[..., Running]) -> None:
    class Home:
        def create(self) -> str:
            return str(len(self.request.body))  # type: ignore[attr-defined]

    app = App()
    app.route("/", Home)
    r = serve(app, max_body_size=MIB, max_body_buffer=2 * MIB)
    a, b, c = RawHTTP(r.port), RawHTTP(r.port), RawHTTP(r.port)
    try:
        head = request_bytes("POST", "/", {"Content-Length": str(MIB)})
        a.send(head + b"x" * 1000)
        b.send(head + b"x" * 1000)
        c.send(head)
        third = c.read_response()
        assert third.status == 503
        assert third.header("connection") == "close"
        a.send(b"x" * (MIB - 1000))
        assert a.read_response().body == str(MIB).encode()
        # The first upload is done: its share is free again.
        with RawHTTP(r.port) as d:
            assert d.request("POST", "/", body=b"y" * MIB).body == str(MIB).encode()
        b.send(b"x" * (MIB - 1000))
        assert b.read_response().body == str(MIB).encode()
        # A chunked body is counted as it arrives.
        with RawHTTP(r.port) as e, RawHTTP(r.port) as g, RawHTTP(r.port) as f:
            e.send(request_bytes("POST", "/", {"Content-Length": str(MIB)}) + b"x")
            g.send(request_bytes("POST", "/", {"Content-Length": str(MIB // 2)}) + b"x")
            f.send(request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}))
            f.send_quietly(b"%x\r\n" % (MIB // 2 + 10) + b"z" * (MIB // 2 + 10) + b"\r\n")
            assert f.read_response().status == 503
        # Closed with their bodies half sent: their shares come back too.
        wait_for(lambda: r.call(lambda: r.server.body_buffered) == 0, "the shares", timeout=5)
    finally:
        for conn in (a, b, c):
            conn.close()


# -- 4. slow bodies ---------------------------------------------------------------------------


@pytest.fixture
def echo_app() -> App:
    class Home:
        def index(self) -> str:
            return "Hello"

        def create(self) -> str:
            return str(len(self.request.body))  # type: ignore[attr-defined]

    app = App()
    app.route("/", Home)
    return app


def test_a_body_sent_a_byte_at_a_time_gets_408(
    serve: Callable[..., Running], echo_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    r = serve(echo_app, header_timeout=0.5 * UNIT, min_body_rate=100)
    with RawHTTP(r.port) as conn:
        conn.send(request_bytes("POST", "/", {"Content-Length": "1000"}))
        deadline = time.monotonic() + 10 * UNIT
        # One byte every 0.1 s: never a pause long enough for the stall timeout.
        while time.monotonic() < deadline and conn.send_quietly(b"x"):
            if conn.closed_within(0.1):
                break
        response = conn.read_response()
    assert response.status == 408
    assert any("request body too slow" in rec.getMessage() for rec in caplog.records)


def test_a_body_at_the_minimum_rate_is_read(serve: Callable[..., Running], echo_app: App) -> None:
    r = serve(echo_app, header_timeout=0.5 * UNIT, min_body_rate=100)
    with RawHTTP(r.port) as conn:
        conn.send(request_bytes("POST", "/", {"Content-Length": "200"}))
        for _ in range(10):  # 20 bytes every 0.1 s: twice the minimum
            conn.send(b"x" * 20)
            assert not conn.closed_within(0.1)
        assert conn.read_response().body == b"200"


def test_min_body_rate_is_a_flag() -> None:
    from plezi.launch.flags import config_from_args

    assert config_from_args(["--min-body-rate", "2k"]).limits.min_body_rate == 2048
    assert config_from_args([]).limits.min_body_rate == 1024


# -- 5. repeated header names -----------------------------------------------------------------


def test_repeated_header_names_are_joined_in_linear_time(serve: Callable[..., Running]) -> None:
    class Home:
        def index(self) -> str:
            headers = self.request.headers  # type: ignore[attr-defined]
            return str(len(headers.get("a", "")) + len(headers)) + " " + headers.get("b", "")

    app = App()
    app.route("/", Home)
    r = serve(app, max_header_size=4 * MIB)
    count = 100_000

    def timed(lines: bytes) -> tuple[float, bytes]:
        with RawHTTP(r.port, timeout=60 * UNIT) as conn:
            start = time.monotonic()
            conn.send(b"GET / HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n")
            body = conn.read_response().body
            return time.monotonic() - start, body

    same_time, same = timed(b"a: xy\r\n" * count + b"b: 1\r\nb: 2\r\n")
    distinct_time, _ = timed(b"".join(b"a%d: xy\r\n" % i for i in range(count)))
    assert same == b"%d 1, 2" % (len(", ".join(["xy"] * count)) + 3)
    # Quadratic joining took 10 to 20 times the distinct case here; linear, about as long.
    assert same_time < 2 * distinct_time + 0.1 * UNIT, (same_time, distinct_time)


def test_repeated_trailer_names_are_joined(serve: Callable[..., Running]) -> None:
    class Home:
        def create(self) -> str:
            return self.request.headers.get("x", "")  # type: ignore[attr-defined]

    app = App()
    app.route("/", Home)
    r = serve(app)
    with RawHTTP(r.port) as conn:
        conn.send(
            request_bytes("POST", "/", {"Transfer-Encoding": "chunked", "X": "0"})
            + b"3\r\nabc\r\n0\r\nX: 1\r\nX: 2\r\n\r\n"
        )
        assert conn.read_response().body == b"0, 1, 2"


# -- 6. small things --------------------------------------------------------------------------


@pytest.fixture
def hello(serve: Callable[..., Running], echo_app: App) -> Running:
    return serve(echo_app, max_header_size=16 * 1024)


def test_refusals_carry_the_status_phrase(hello: Running) -> None:
    with RawHTTP(hello.port) as conn:
        conn.send(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        r = conn.read_response()
        assert r.status == 414
        assert r.body == r.reason.encode() + b"\n"
    with RawHTTP(hello.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.body) == (400, b"Bad Request\n")
    with RawHTTP(hello.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"y" * 20_000 + b"\r\n\r\n")
        r = conn.read_response()
        assert r.status == 431
        assert r.body == r.reason.encode() + b"\n"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("a:99999999999", 400),
        ("a:65536", 400),
        ("a:000065535", 400),
        ("a:65535", 200),
        ("a:0", 200),
        ("a:", 200),
        ("[::1]:8080", 200),
        ("[::1]:80800", 400),
    ],
)
def test_host_port_must_be_in_range(hello: Running, host: str, status: int) -> None:
    with RawHTTP(hello.port) as conn:
        conn.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert conn.read_response().status == status


def test_a_chunk_larger_than_max_body_is_refused_on_sight(
    serve: Callable[..., Running], echo_app: App
) -> None:
    r = serve(echo_app, max_body_size=MIB)
    for size_line in (b"1000000000000", b"1000000000000;ext=1", b"100001"):
        with RawHTTP(r.port, timeout=3 * UNIT) as conn:
            conn.send(request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}))
            conn.send(size_line + b"\r\nabc")
            assert conn.read_response().status == 413
    with RawHTTP(r.port, timeout=3 * UNIT) as conn:  # the size line split over two reads
        conn.send(request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}) + b"10000")
        assert not conn.closed_within(0.2)
        conn.send(b"00000\r\nabc")
        assert conn.read_response().status == 413
    with RawHTTP(r.port) as conn:  # up to the limit: read
        conn.send(request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}))
        conn.send(b"%x\r\n" % MIB + b"z" * MIB + b"\r\n0\r\n\r\n")
        assert conn.read_response().body == str(MIB).encode()


def test_refused_origin_lines_are_throttled(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    class Chat:
        def on_message(self, data: str) -> None:
            pass

    app = App()
    app.route("/ws", Chat)
    r = serve(app)
    r.server.config.allowed_origins = ("https://good.example",)
    caplog.set_level(logging.INFO, logger="plezi")
    for _ in range(30):
        with RawHTTP(r.port) as conn:
            conn.send(
                request_bytes(
                    "GET",
                    "/ws",
                    {
                        "Upgrade": "websocket",
                        "Connection": "Upgrade",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                        "Origin": "https://evil.example",
                    },
                )
            )
            assert conn.read_response().status == 403
    lines = [rec for rec in caplog.records if "allowed_origins" in rec.getMessage()]
    assert 1 <= len(lines) <= 3, [rec.getMessage() for rec in lines]


def test_link_out_of_the_public_folder_lines_are_throttled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from plezi.http.static import PublicFolder

    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    public = tmp_path / "public"
    public.mkdir()
    (public / "link.txt").symlink_to(outside)
    folder = PublicFolder(public)
    caplog.set_level(logging.INFO, logger="plezi")
    for _ in range(100):
        assert folder.lookup("/link.txt") is None
    lines = [rec.getMessage() for rec in caplog.records if "out of the folder" in rec.getMessage()]
    assert 1 <= len(lines) <= 2, lines


def test_send_file_streams_a_large_file_with_the_controllers_headers(
    serve: Callable[..., Running], tmp_path: Path
) -> None:
    data = os.urandom(2 * MIB + 7)
    (tmp_path / "big.bin").write_bytes(data)

    class Files:
        def show(self) -> bool:
            self.response.headers["X-Kind"] = "download"  # type: ignore[attr-defined]
            self.cookies["seen"] = "1"  # type: ignore[attr-defined]
            return self.send_file(str(tmp_path / self.params["id"]))  # type: ignore[attr-defined, no-any-return]

    app = App()
    app.route("/f", Files)
    r = serve(app)
    with RawHTTP(r.port) as conn:
        got = conn.request("GET", "/f/big.bin")
        assert (got.status, got.body == data) == (200, True)
        assert got.header("x-kind") == "download"
        assert (got.header("set-cookie") or "").startswith("seen=1")
        assert got.header("content-type") == "application/octet-stream"
        head = conn.request("HEAD", "/f/big.bin")
        assert (head.header("content-length"), head.body) == (str(len(data)), b"")


class _Transport:
    """Just what HttpProtocol uses of a transport (for feeding it exact reads)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def test_chunk_data_that_looks_like_size_lines_is_never_refused(echo_app: App) -> None:
    """The on-sight check reads size lines back from the data: whatever the read boundaries,
    chunk data full of huge hex "size lines" must not be taken for one."""
    from plezi import Limits, ServerConfig
    from plezi.server.server import Server

    trap = b"\r\nfffffffffff\r\n1000000000000;x\r\n" * 3
    body = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(trap), trap, len(trap) + 1, trap + b"\n")
    request = request_bytes("POST", "/", {"Transfer-Encoding": "chunked"}) + body
    server = Server(
        echo_app, ServerConfig(port=0, bind="127.0.0.1", limits=Limits(max_body_size=1000))
    )
    for cut in range(1, len(request)):
        for second in (cut, min(len(request), cut + 7)):
            proto = HttpProtocol(server)
            transport = _Transport()
            proto.connection_made(transport)  # type: ignore[arg-type]
            for piece in (request[:cut], request[cut:second], request[second:]):
                if piece:
                    proto.data_received(piece)
            assert transport.out.startswith(b"HTTP/1.1 200 "), (cut, bytes(transport.out[:40]))
            assert transport.out.endswith(b"%d" % (2 * len(trap) + 1))
