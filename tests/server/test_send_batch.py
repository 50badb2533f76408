"""The batched flush: a payload each for many sockets in one call (``server/_sendmany.c``).

The helper is tested on its own, on real socket pairs, in both of its ways (the io_uring ring
for batches of 4 or more, ``send()`` below that or when ``PLEZI_NO_IO_URING=1``), including what
it reports of a full socket and of a closed peer; then on a real server, where it carries
publishes and echo replies to many connections at once, one of them a client that stops
reading. Where plezi runs as pure Python there is no helper (``SEND_ALL`` is ``None``) and
connections write through their transports: the server-level tests run there too.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from wsclient import RawClient, masked, small_send_buffer

import plezi
from helpers import UNIT
from plezi.protocol.frames import OP_TEXT
from plezi.server.connection import OUTBOX
from plezi.server.state import SEND_ALL

needs_helper = pytest.mark.skipif(SEND_ALL is None, reason="pure Python: no C helper")


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Sixteen connected stream socket pairs: (the end we send on, the end we read)."""
    made = [socket.socketpair() for _ in range(16)]
    for sender, _ in made:
        sender.setblocking(False)
    yield made
    for a, b in made:
        a.close()
        b.close()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(5 * UNIT)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def fill(sock: socket.socket) -> None:
    """Send until the socket's buffer takes no more."""
    while True:
        try:
            sock.send(b"\0" * 65536)
        except BlockingIOError:
            return


@needs_helper
@pytest.mark.parametrize("count", [1, 2, 3, 4, 16])
def test_every_payload_goes_out_whole_by_either_way(
    pairs: list[tuple[socket.socket, socket.socket]], count: int
) -> None:
    assert SEND_ALL is not None
    chosen = pairs[:count]
    payloads = [f"payload {i} ".encode() * (i + 1) for i in range(count)]
    for _ in range(3):  # the ring is reused from one batch to the next
        assert SEND_ALL([s.fileno() for s, _ in chosen], payloads) is None
        for (_, reader), payload in zip(chosen, payloads, strict=True):
            assert read_exactly(reader, len(payload)) == payload


@needs_helper
@pytest.mark.parametrize("count", [3, 16])
def test_a_full_socket_and_a_closed_peer_are_reported_for_their_item_alone(
    pairs: list[tuple[socket.socket, socket.socket]], count: int
) -> None:
    """Below 4 items by ``send()``, from 4 through the ring: the same answers."""
    assert SEND_ALL is not None
    chosen = pairs[:count]
    full, gone = 0, count - 1
    fill(chosen[full][0])
    chosen[gone][1].close()
    payload = b"x" * 1000
    results = SEND_ALL([s.fileno() for s, _ in chosen], [payload] * count)
    assert results is not None
    assert results[full] == -errno.EAGAIN
    assert results[gone] == -errno.EPIPE  # and no SIGPIPE: the test process lives on
    assert results[1:gone] == [len(payload)] * (count - 2)
    for _, reader in chosen[1:gone]:
        assert read_exactly(reader, len(payload)) == payload


@needs_helper
def test_a_payload_larger_than_the_socket_buffer_is_sent_in_part(
    pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    assert SEND_ALL is not None
    sender, _ = pairs[0]
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"y" * (4 << 20)
    fds = [s.fileno() for s, _ in pairs[:4]]
    results = SEND_ALL(fds, [big, b"a", b"b", b"c"])
    assert results is not None
    assert 0 < results[0] < len(big)
    assert results[1:] == [1, 1, 1]


@needs_helper
def test_a_bad_item_sends_nothing(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    assert SEND_ALL is not None
    fds = [s.fileno() for s, _ in pairs[:5]]
    with pytest.raises(TypeError):
        SEND_ALL(fds, [b"a", b"b", "c", b"d", b"e"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        SEND_ALL([*fds[:4], -1], [b"a"] * 5)
    with pytest.raises(ValueError):
        SEND_ALL(fds, [b"a"] * 4)
    reader = pairs[0][1]
    reader.setblocking(False)
    with pytest.raises(BlockingIOError):
        reader.recv(1)


_CHILD = """
import os, socket, sys
from plezi.server import _sendmany

def batch(tag):
    pairs = [socket.socketpair() for _ in range(8)]
    payloads = [tag + bytes([i]) for i in range(8)]
    assert _sendmany.send_all([a.fileno() for a, _ in pairs], payloads) is None
    assert [b.recv(64) for _, b in pairs] == payloads

print(_sendmany.mechanism())
batch(b"parent before ")
pid = os.fork()
if pid == 0:
    batch(b"child ")  # its own ring: the parent's queues are not its to use
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
batch(b"parent after ")
print("ok")
"""


@needs_helper
@pytest.mark.parametrize("no_ring", ["", "1"])
def test_each_process_and_the_fallback_send_on_their_own(no_ring: str) -> None:
    """A forked child (a ``--workers`` worker) makes its own ring and the parent keeps its;
    ``PLEZI_NO_IO_URING=1`` makes every batch go by ``send()``. A subprocess, as forking this
    multi-threaded test run is not safe."""
    env = {"PLEZI_NO_IO_URING": no_ring, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * UNIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mechanism, result = done.stdout.split()
    # This kernel has io_uring (CI runs here): a machine without it would print "send".
    assert mechanism == ("send" if no_ring else "io_uring")
    assert result == "ok"


# -- on a real server --------------------------------------------------------------------------


def read_texts(client: RawClient, count: int) -> list[bytes]:
    return [client.recv_message(10 * UNIT).payload for _ in range(count)]


def room_app(conns: list[Any], opened: threading.Semaphore) -> plezi.App:
    """Every connection to ``/room`` subscribes to ``room`` and is kept in ``conns``; one opened
    with ``?slow=1`` gets a small send buffer on the server's side."""

    class Room:
        def on_open(self) -> None:
            if self.params.get("slow"):  # type: ignore[attr-defined]
                small_send_buffer(self)
            conns.append(self._pl_conn)  # type: ignore[attr-defined]
            self.subscribe("room")  # type: ignore[attr-defined]
            opened.release()

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/room", Room)
    return app


def test_a_publish_to_many_reaches_all_in_order_when_one_client_stops_reading(
    serve: Any,
) -> None:
    """Twelve subscribers; one reads nothing until the end, with small buffers on both ends,
    so that its socket fills, the batch's send to it comes back short and the rest waits in
    its transport while later publishes go on. Every subscriber gets every message, whole and
    in order, the stalled one too once it reads."""
    opened = threading.Semaphore(0)
    conns: list[Any] = []
    app = room_app(conns, opened)
    # Writing never pauses here: the stalled client's bytes wait in its transport, below the
    # high-water mark, and only the transport's buffer tells that they do.
    running = serve(app, write_high_water=4 << 20, max_outgoing_buffer=16 << 20)
    count = 200
    body = "m" * 3000
    clients = [RawClient(running.port, "/room") for _ in range(11)]
    slow = RawClient(running.port, "/room?slow=1", rcvbuf=4096)
    try:
        for _ in range(12):
            assert opened.acquire(timeout=5 * UNIT)
        for i in range(count):
            # One publish per loop iteration: one batch each.
            running.call(lambda i=i: plezi.publish("room", f"{i:04d}{body}"))
        # Compiled, the first batch found each connection's socket; pure, none has one.
        fds = running.call(lambda: [conn._fd for conn in conns])
        assert all(fd >= 0 for fd in fds) if SEND_ALL is not None else set(fds) == {-1}
        backlog = running.call(lambda: conns[-1].transport.get_write_buffer_size())
        assert backlog > 0  # the stalled client's rest does wait in its transport

        def room_then_publish() -> None:
            # The stalled socket gets room the transport has not used yet (it writes when the
            # loop next polls): a send straight to it now would overtake what waits there.
            sock = conns[-1].transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            plezi.publish("room", "last")
            # Now, rather than later in this iteration: the publish, then the flush.
            pending = OUTBOX.pending
            assert pending is not None
            pending()
            assert running.server.flusher.waiting == 12
            running.server.flusher.flush()

        running.call(room_then_publish)
        expected = [*(f"{i:04d}{body}".encode() for i in range(count)), b"last"]
        for client in clients:
            assert read_texts(client, count + 1) == expected
        assert read_texts(slow, count + 1) == expected
    finally:
        for client in [*clients, slow]:
            client.close()


def test_replies_of_many_connections_in_one_iteration_arrive_whole_and_in_order(
    serve: Any,
) -> None:
    """Sixteen clients each send 100 messages in one write; the replies of all of them leave in
    the same batches. One client resets its connection with replies still due, which costs
    the others nothing."""

    class Echo:
        def on_message(self, data: Any) -> None:
            self.write(data)  # type: ignore[attr-defined]

    app = plezi.App()
    app.route("/", Echo)
    running = serve(app)
    clients = [RawClient(running.port) for _ in range(16)]
    try:
        for n, client in enumerate(clients):
            burst = b"".join(masked(OP_TEXT, f"{n} {i}".encode()) for i in range(100))
            client.send_raw(burst)
        clients[3].reset()
        for n, client in enumerate(clients):
            if n != 3:
                got = [f.payload for f in (client.recv_message(10 * UNIT) for _ in range(100))]
                assert got == [f"{n} {i}".encode() for i in range(100)]
        # And the server goes on serving.
        clients[0].send_raw(masked(OP_TEXT, b"after"))
        assert clients[0].recv_message(5 * UNIT).payload == b"after"
        deadline = time.monotonic() + 5 * UNIT
        while running.call(lambda: len(running.server.streams)) != 15:
            assert time.monotonic() < deadline, "the reset connection was never dropped"
            time.sleep(0.01)
    finally:
        for client in clients:
            client.close()


def test_tls_connections_never_take_the_batch_and_their_publishes_arrive(
    serve: Any, tls_files: tuple[str, str]
) -> None:
    """A TLS socket carries records, not our bytes: its connections write through their
    transports (no socket for the batch), and a publish to several of them arrives intact."""
    opened = threading.Semaphore(0)
    conns: list[Any] = []
    running = serve(room_app(conns, opened), tls_cert=tls_files[0], tls_key=tls_files[1])
    ctx = ssl.create_default_context(cafile=tls_files[0])
    clients = [RawClient(running.port, "/room", tls=ctx) for _ in range(5)]
    try:
        for _ in range(5):
            assert opened.acquire(timeout=5 * UNIT)
        for i in range(20):
            running.call(lambda i=i: plezi.publish("room", f"tls {i}"))
        assert running.call(lambda: [conn._fd for conn in conns]) == [-1] * 5
        for client in clients:
            assert read_texts(client, 20) == [f"tls {i}".encode() for i in range(20)]
    finally:
        for client in clients:
            client.close()


def test_an_iteration_past_the_bound_goes_through_the_transport_then_batches_again(
    serve: Any,
) -> None:
    """Ten 3,000-byte publishes in one iteration put 30 KiB on each of six connections, past
    the batch's 16 KiB bound: each writes them through its transport (which then owns its
    order). The small publishes of the next iterations join the batch again once the transport
    is empty; every subscriber gets everything in order."""
    opened = threading.Semaphore(0)
    conns: list[Any] = []
    running = serve(room_app(conns, opened))
    clients = [RawClient(running.port, "/room") for _ in range(6)]
    body = "b" * 3000
    try:
        for _ in range(6):
            assert opened.acquire(timeout=5 * UNIT)
        running.call(lambda: plezi.publish("room", "first"))

        def big() -> None:
            for i in range(10):
                plezi.publish("room", f"{i}{body}")

        running.call(big)
        expected = [b"first", *(f"{i}{body}".encode() for i in range(10))]
        for client in clients:
            assert read_texts(client, 11) == expected
        # Read only now: the publishes are flushed a loop iteration or two after ``big``. They
        # went through the transports when compiled (``_backlog`` says a transport may hold
        # bytes), as always when pure.
        assert running.call(lambda: [conn._backlog for conn in conns]) == [True] * 6
        for i in range(3):
            running.call(lambda i=i: plezi.publish("room", f"small {i}"))
        for client in clients:
            assert read_texts(client, 3) == [f"small {i}".encode() for i in range(3)]
        if SEND_ALL is not None:
            # The transports were empty: the small ones went by the batch.
            assert running.call(lambda: [conn._backlog for conn in conns]) == [False] * 6
    finally:
        for client in clients:
            client.close()


class FailingTransport(asyncio.Transport):
    """A connection's transport whose ``is_closing`` raises (every flush asks it first); the
    rest is the real transport's. The one fault injected here: a real transport does not fail
    so on demand."""

    def __init__(self, real: asyncio.Transport) -> None:
        super().__init__()
        self.real = real

    def is_closing(self) -> bool:
        raise RuntimeError("injected: this transport fails")

    def write(self, data: Any) -> None:
        self.real.write(data)

    def get_write_buffer_size(self) -> int:
        return self.real.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)

    def abort(self) -> None:
        self.real.abort()

    def close(self) -> None:
        self.real.close()


def test_a_connection_whose_write_raises_is_dropped_and_the_others_go_on(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Six subscribers, the third with a transport that raises when written: a publish reaches
    the five others (the batch is not held up), the failing one is logged and dropped, and
    the next publishes reach the five: none of them is left with a queue no flush takes."""
    caplog.set_level(logging.ERROR, logger="plezi")
    opened = threading.Semaphore(0)
    conns: list[Any] = []
    running = serve(room_app(conns, opened))
    clients = [RawClient(running.port, "/room") for _ in range(6)]
    try:
        for _ in range(6):
            assert opened.acquire(timeout=5 * UNIT)
        # Subscription order is the order of opening: the failing one is in the middle.
        failing = conns[2]
        running.call(lambda: setattr(failing, "transport", FailingTransport(failing.transport)))
        for message in ("one", "two", "three"):
            running.call(lambda message=message: plezi.publish("room", message))
        for n, client in enumerate(clients):
            if n != 2:
                assert read_texts(client, 3) == [b"one", b"two", b"three"]
        assert clients[2].wait_eof() == b""
        assert "error while writing to a connection; dropping it" in caplog.text
        assert "injected: this transport fails" in caplog.text
    finally:
        for client in clients:
            client.close()
