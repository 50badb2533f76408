"""Instructions per HTTP request or WebSocket message, counted by valgrind's callgrind.

    bench/.venv/bin/python bench/callgrind.py                       # plezi: hello, x16, echo
    bench/.venv/bin/python bench/callgrind.py --servers plezi,bare --scenarios hello

Instruction counts do not depend on what else the machine runs, so they measure a change to the
Python code on a busy machine, where wall-clock figures cannot. For each server and scenario the
server runs twice under callgrind (``PYTHONHASHSEED=0``), once serving ``--requests`` and once
``2 x --requests`` (after the same warm-up), each time counting what runs inside uvloop's
``uv_run`` (the imports before it vary from run to run): the difference of the two totals over
``--requests`` is the cost of one request, start-up and shutdown cancelled out (repeat runs
agree within 0.3%).
The second run's costs are also split by the binary they run in (the interpreter, uvloop,
httptools, libc ...). System calls are not counted (callgrind sees user space only).

Scenarios, from one client connection in this process:
* ``hello``: ``GET /``, wait for the response, again;
* ``x16``: 16 pipelined ``GET /`` in one write, wait for the 16 responses, again (per request);
* ``echo``: a 32-byte WebSocket text message, wait for it to come back, again (per message);
* ``handshake`` (not by default): connect, WebSocket handshake, close frame, wait for the
  server's close, again (per connection; ``--requests 500`` is plenty).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from run import SERVERS as RUN_SERVERS
from run import free_port

#: The servers measured: run.py's commands, "bare" for its bare uvloop+httptools protocol.
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "plezi": RUN_SERVERS["plezi"],
    "bare": RUN_SERVERS["bare uvloop+httptools"],
}
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_responses(sock: socket.socket, count: int, buf: bytes) -> bytes:
    """Read ``count`` HTTP responses (each with a Content-Length); return what follows."""
    while count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
            size = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= size:
                buf, count = buf[size:], count - 1
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the server closed the connection")
        buf += chunk
    return buf


def http(port: int, requests: int, depth: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        buf = b""
        for _ in range(requests // depth):
            sock.sendall(REQUEST * depth)
            buf = read_responses(sock, depth, buf)


def upgrade(sock: socket.socket) -> None:
    """The WebSocket handshake on ``sock``."""
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head


def handshakes(port: int, count: int) -> None:
    """``count`` connections, one after the other: connect, handshake, close (a close frame
    first, so that the server's close is the ordinary one)."""
    close = bytes((0x88, 0x82)) + b"\0\0\0\0" + (1000).to_bytes(2, "big")
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            upgrade(sock)
            sock.sendall(close)
            while sock.recv(4096):  # until the server closes
                pass


def echo(port: int, messages: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        upgrade(sock)
        payload = b"x" * 32
        frame = bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload  # mask key 0
        for _ in range(messages):
            sock.sendall(frame)
            got = b""
            while len(got) < 2 + len(payload):
                got += sock.recv(4096)


SCENARIOS: dict[str, Callable[[int, int], None]] = {
    "hello": lambda port, n: http(port, n, 1),
    "x16": lambda port, n: http(port, n, 16),
    "echo": echo,
    "handshake": handshakes,
}


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited under valgrind")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not start under valgrind")


def one_run(server: str, scenario: str, count: int, warmup: int, out: Path) -> Path:
    """Serve ``warmup`` + ``count`` under callgrind; the callgrind output file."""
    port = free_port()
    target = out / f"{server}-{scenario}-{count}.cg"
    env = {"PYTHONHASHSEED": "0", **os.environ}
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            # Only what runs inside the event loop: the imports before it vary by a few
            # million instructions from run to run; the loop's work by 0.3%.
            "--toggle-collect=uv_run",
            f"--callgrind-out-file={target}",
            *SERVERS[server](port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        wait_port(port, proc)
        SCENARIOS[scenario](port, warmup)
        SCENARIOS[scenario](port, count)
        time.sleep(0.5)  # the connection's close is handled before shutdown, every run alike
        proc.send_signal(signal.SIGINT if server == "bare" else signal.SIGTERM)
        proc.wait(300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return target


def totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def self_cost_by_object(path: Path) -> dict[str, int]:
    """Self cost (instructions) per binary: cost lines under ``ob=``, not the inclusive cost
    lines that follow a ``calls=`` line."""
    names: dict[str, str] = {}
    costs: dict[str, int] = defaultdict(int)
    current, after_call = "?", False

    def name_of(value: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), value)

    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("ob="):
            current = name_of(line[3:])
        elif line.startswith("cob="):
            name_of(line[4:])  # defines a name that later lines may use by number
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if len(fields) >= 2 and not after_call:
                costs[current] += int(fields[1])
            after_call = False
    return dict(costs)


def short(obj: str) -> str:
    name = Path(obj).name
    for key, label in (
        ("libpython", "interpreter (libpython)"),
        ("python3", "interpreter (python3)"),
        ("loop.cpython", "uvloop"),
        ("libuv", "uvloop"),
        ("parser.cpython", "httptools"),
        ("libc.so", "libc"),
        ("ld-linux", "libc"),
    ):
        if key in name:
            return label
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", default="plezi")
    p.add_argument("--scenarios", default="hello,x16,echo")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=320)
    p.add_argument("--keep", help="keep the callgrind files in this folder")
    args = p.parse_args()
    out = Path(args.keep or tempfile.mkdtemp(prefix="plezi-cg-"))
    out.mkdir(parents=True, exist_ok=True)
    n = args.requests
    for server in args.servers.split(","):
        for scenario in args.scenarios.split(","):
            if server == "bare" and scenario in ("echo", "handshake"):
                continue
            small = one_run(server, scenario, n, args.warmup, out)
            large = one_run(server, scenario, 2 * n, args.warmup, out)
            per = (totals(large) - totals(small)) / n
            small_by, large_by = self_cost_by_object(small), self_cost_by_object(large)
            split: dict[str, float] = defaultdict(float)
            for obj in large_by:
                split[short(obj)] += (large_by[obj] - small_by.get(obj, 0)) / n
            parts = ", ".join(
                f"{name} {cost:,.0f}"
                for name, cost in sorted(split.items(), key=lambda kv: -kv[1])
                if cost >= per / 100
            )
            print(f"{server:6} {scenario:6} {per:>10,.0f} instructions per request  ({parts})")
            sys.stdout.flush()
    if not args.keep:
        for f in out.iterdir():
            f.unlink()
        out.rmdir()


if __name__ == "__main__":
    main()
