"""Memory per idle WebSocket connection: plezi against its peers, in one run.

    bench/.venv/bin/python bench/idle.py              # 10,000 connections per server

For each server (pinned to core 0): open and close a few hundred connections (so that lazily
built code paths and buffers exist), read the server's RSS (VmRSS of its process tree, from
/proc), open ``--conns`` WebSocket connections and complete their handshakes (raw sockets, this
process, core 1), wait for the RSS to settle, read it again: (RSS delta) / N.

    bench/.venv/bin/python bench/idle.py --deflate    # also with permessage-deflate, and ratios

``--deflate`` measures every server twice: as above, then with each connection offering
``permessage-deflate`` (as Chromium does) and exchanging one ~300-byte JSON message first (the
server's answer is what it compresses), so that whatever compression state a server keeps per
connection exists while the connections sit idle. It prints KiB per connection both ways and
the ratio.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import selectors
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from run import PY, descendants, free_port, settle, wait_port
from run import SERVERS as RUN_SERVERS

HERE = Path(__file__).resolve().parent
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "plezi": RUN_SERVERS["plezi"],
    "websockets": RUN_SERVERS["websockets"],
    "uvicorn+starlette": RUN_SERVERS["uvicorn+starlette"],
    "handwritten echo": lambda port: [
        PY,
        str(HERE / "servers/handwritten.py"),
        "--mode",
        "echo",
        "--port",
        str(port),
    ],
}


def raise_nofile(n: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, n)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: What ``--deflate`` connections send once: a chat message as JSON, ~300 bytes.
CHAT = (
    b'{"type":"message","room":"lobby","user":{"id":48213,"name":"Ada Lovelace"},'
    b'"text":"Has anyone tried the new build? The dashboard loads much faster for me now, '
    b'the chart on the second tab still flickers a bit.","sent_at":"2026-12-04T20:15:07.123Z",'
    b'"id":"01HF8Z3K9Q2W7E5R4T6Y8U0I1O"}'
)
_MASK = b"\x01\x02\x03\x04"
CHAT_FRAME = (
    struct.pack("!BBH", 0x81, 0x80 | 126, len(CHAT))
    + _MASK
    + bytes(b ^ _MASK[i % 4] for i, b in enumerate(CHAT))
)
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def open_many(port: int, n: int, batch: int = 200, deflate: bool = False) -> list[socket.socket]:
    """Open ``n`` WebSocket connections, ``batch`` handshakes in flight at a time (``deflate``:
    offering permessage-deflate, and each exchanging one message once open)."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    request = (
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n"
        + (OFFER if deflate else "")
        + "\r\n"
    )
    while len(socks) < n:
        pending: dict[socket.socket, bytes] = {}
        for _ in range(min(batch, n - len(socks))):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request.format(base64.b64encode(os.urandom(16)).decode()).encode())
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} handshakes did not complete")
            for key, _ in sel.select(1):
                s = key.fileobj  # type: ignore[assignment]
                assert isinstance(s, socket.socket)
                chunk = s.recv(4096)
                if not chunk:
                    raise SystemExit("server closed a connection during the handshake")
                data = pending[s] + chunk
                if b"\r\n\r\n" in data:
                    if not data.startswith(b"HTTP/1.1 101"):
                        raise SystemExit(f"handshake refused: {data[:60]!r}")
                    if deflate and b"permessage-deflate" not in data.partition(b"\r\n\r\n")[0]:
                        raise SystemExit("the server declined permessage-deflate")
                    sel.unregister(s)
                    del pending[s]
                    socks.append(s)
                    if deflate:
                        exchange(s, data.partition(b"\r\n\r\n")[2])
                else:
                    pending[s] = data
    sel.close()
    return socks


def exchange(s: socket.socket, got: bytes) -> None:
    """Send the chat message and wait for the server's answer (any frame that follows)."""
    s.setblocking(True)
    s.settimeout(30)
    s.sendall(CHAT_FRAME)
    while len(got) < 2:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("server closed a connection after a message")
        got += chunk
    s.setblocking(False)


def one(name: str, n: int, deflate: bool = False) -> dict[str, float]:
    port = free_port()
    # (the websockets echo server turns compression off unless told otherwise)
    extra = ["--deflate"] if deflate and name == "websockets" else []
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *SERVERS[name](port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: raise_nofile(n + 1000),
    )
    try:
        wait_port(port)
        for s in open_many(port, 300, deflate=deflate):
            s.close()
        time.sleep(1)
        before = settle(lambda: descendants(proc.pid))
        t0 = time.perf_counter()
        socks = open_many(port, n, deflate=deflate)
        opened = time.perf_counter() - t0
        after = settle(lambda: descendants(proc.pid))
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited while connections were open")
        for s in socks:
            s.close()
        return {
            "before": before,
            "after": after,
            "per_conn": (after - before) * 1024 / n,
            "open_s": opened,
        }
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument(
        "--servers",
        default=None,
        help="comma-separated (default: all; with --deflate: those that support it)",
    )
    p.add_argument(
        "--deflate", action="store_true", help="also measure with permessage-deflate negotiated"
    )
    args = p.parse_args()
    limit = raise_nofile(args.conns + 1000)
    if limit < args.conns + 100:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.conns} connections")
    os.sched_setaffinity(0, {1})
    results = {}
    default = [n for n in SERVERS if not (args.deflate and n == "handwritten echo")]
    names = args.servers.split(",") if args.servers else default
    if args.deflate:
        deflated = {name: one(name, args.conns, deflate=True) for name in names}
    for name in names:
        r = results[name] = one(name, args.conns)
        print(
            f"{name:20} RSS {r['before'] / 1024:7.1f} MiB -> {r['after'] / 1024:7.1f} MiB  "
            f"{r['per_conn'] / 1024:6.2f} KiB/conn  (opened in {r['open_s']:.1f} s)",
            flush=True,
        )
    print(f"\nidle WebSocket connections: {args.conns}; RSS delta / N (KiB per connection)")
    print(f"{'server':20} {'KiB/conn':>9}   plezi uses")
    for name, r in results.items():
        ratio = ""
        if "plezi" in results and name != "plezi":
            ratio = f"{results['plezi']['per_conn'] / r['per_conn']:.2f}x"
        print(f"{name:20} {r['per_conn'] / 1024:>9.2f}   {ratio}")
    if args.deflate:
        print("\nwith permessage-deflate negotiated and one message exchanged (KiB per connection)")
        print(f"{'server':20} {'plain':>9} {'deflate':>9}   deflate/plain")
        for name, r in results.items():
            d = deflated[name]
            print(
                f"{name:20} {r['per_conn'] / 1024:>9.2f} {d['per_conn'] / 1024:>9.2f}   "
                f"{d['per_conn'] / r['per_conn']:.2f}x"
            )


if __name__ == "__main__":
    main()
