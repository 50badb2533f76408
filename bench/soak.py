"""Soak test: thousands of WebSocket connections held for minutes, periodic broadcasts, random
disconnects; reports the server's RSS over time, errors and lost messages.

    .venv/bin/python bench/soak.py --conns 3000 --minutes 10

Two processes: the server (this file with ``serve``: a plezi app that keeps the set of open
controllers and writes a numbered broadcast to each of them from a ``call_later`` timer, started by
the first ``on_open``; no pub/sub needed) and the load (this file without ``serve``: raw asyncio
protocols speaking WebSocket with ``plezi.protocol``, answering pings, checking every broadcast's
number). Each second the load closes ``--churn`` random connections (half with a close handshake,
half by a TCP reset) and opens as many new ones, and ``--echo`` random clients send a message the
server echoes back. At the end the server is stopped with SIGTERM: every client still connected
must get close 1001 and the server must exit 0.

Counted as lost: a gap in a client's broadcast numbers, an echo never answered, a client behind
the last broadcast at the end. Counted as errors: failed handshakes, unexpected closes or close
codes, duplicated or reordered broadcasts, ERROR lines or tracebacks in the server's log.

Not part of the test suite (it runs for minutes); see docs/soak.md. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server ----------------------------------------------------------------------------------


def serve(argv: list[str]) -> None:
    """The soak server: ``/`` is the WebSocket (and ``GET /`` its statistics as JSON)."""
    import gc

    import plezi

    interval = float(os.environ.get("SOAK_INTERVAL", "1.0"))
    payload = "x" * int(os.environ.get("SOAK_PAYLOAD", "64"))
    clients: set[Any] = set()
    state = {"seq": 0, "timer": None, "refused_writes": 0, "opened": 0, "closed": 0}

    def broadcast() -> None:
        state["seq"] += 1
        message = f"b {state['seq']} {time.time():.6f} {payload}"
        for client in list(clients):
            if not client.write(message):
                state["refused_writes"] += 1
        loop = asyncio.get_running_loop()
        state["timer"] = loop.call_later(interval, broadcast)

    class Soak:
        def on_open(self) -> None:
            clients.add(self)
            state["opened"] += 1
            if state["timer"] is None:
                state["timer"] = asyncio.get_running_loop().call_later(interval, broadcast)

        def on_message(self, data: str | bytes) -> None:
            self.write(data)  # type: ignore[attr-defined]

        def on_close(self) -> None:
            clients.discard(self)
            state["closed"] += 1

        def index(self) -> dict[str, Any]:
            return {
                "clients": len(clients),
                "seq": state["seq"],
                "opened": state["opened"],
                "closed": state["closed"],
                "refused_writes": state["refused_writes"],
                "gc": gc.get_count(),
            }

    raise_fd_limit(65536)
    plezi.route("/", Soak)
    plezi.run(argv)


# -- the load --------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.errors: collections.Counter[str] = collections.Counter()
        self.lost_broadcasts = 0
        self.received = 0
        self.latencies: list[float] = []
        self.echo_sent = 0
        self.echo_back = 0
        self.opened = 0
        self.closed_by_us = 0
        self.going_away = 0


class Client(asyncio.Protocol):
    """One WebSocket connection (see the module docstring)."""

    def __init__(self, load: Load) -> None:
        from plezi.protocol import WebSocketReader

        self.load = load
        self.stats = load.stats
        self.reader = WebSocketReader(self, max_message_size=1 << 20, require_mask=False)
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.leaving = False  # we closed (or reset) it on purpose
        self.last_seq = 0
        self.echoes: dict[str, float] = {}
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(
            b"GET / HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY.encode() + b"\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        if not self.open:
            self.head += data
            head, sep, rest = self.head.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.stats.errors["handshake refused"] += 1
                self.leaving = True
                self.transport.close()  # type: ignore[union-attr]
                self.ready.set_result(False)
                return
            self.open = True
            self.head = b""
            self.load.clients.add(self)
            self.stats.opened += 1
            self.ready.set_result(True)
            data = rest
        if data:
            self.reader.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.clients.discard(self)
        if not self.ready.done():
            self.stats.errors["connection lost during the handshake"] += 1
            self.ready.set_result(False)
        elif self.open and not self.leaving:
            self.stats.errors["unexpected disconnect"] += 1
        self.open = False

    # plezi.protocol.FrameHandler
    def on_ws_message(self, data: str | bytes) -> None:
        assert isinstance(data, str)
        kind, _, rest = data.partition(" ")
        if kind == "b":
            seq_text, sent_text, _payload = rest.split(" ", 2)
            seq = int(seq_text)
            self.stats.received += 1
            self.stats.latencies.append(time.time() - float(sent_text))
            if self.last_seq:
                if seq > self.last_seq + 1:
                    self.stats.lost_broadcasts += seq - self.last_seq - 1
                elif seq <= self.last_seq:
                    self.stats.errors["broadcast duplicated or out of order"] += 1
            self.last_seq = seq
            self.load.max_seq = max(self.load.max_seq, seq)
        elif kind == "e":
            if self.echoes.pop(rest, None) is not None:
                self.stats.echo_back += 1
            else:
                self.stats.errors["unexpected echo"] += 1
        else:
            self.stats.errors["unexpected message"] += 1

    def on_ws_ping(self, payload: bytes) -> None:
        self.send(0x0A, payload)

    def on_ws_pong(self, payload: bytes) -> None:
        pass

    def on_ws_close(self, code: int | None, reason: str) -> None:
        if code == 1001 and self.load.stopping:
            self.stats.going_away += 1
        elif not self.leaving:
            self.stats.errors[f"closed by the server with {code}"] += 1
        if not self.leaving:
            self.leaving = True
            self.send(0x08, b"" if code is None else code.to_bytes(2, "big"))
        self.transport.close()  # type: ignore[union-attr]

    def on_ws_error(self, code: int, reason: str) -> None:
        self.stats.errors[f"protocol error from the server: {reason}"] += 1
        self.leaving = True
        self.transport.abort()  # type: ignore[union-attr]

    # sending
    def send(self, opcode: int, payload: bytes) -> None:
        from plezi.protocol import encode_frame

        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_frame(opcode, payload, mask=os.urandom(4)))

    def echo(self, token: str) -> None:
        self.echoes[token] = time.monotonic()
        self.stats.echo_sent += 1
        self.send(0x01, f"e {token}".encode())

    def leave(self, graceful: bool) -> None:
        self.leaving = True
        self.echoes.clear()  # (not lost: this client is going)
        self.load.clients.discard(self)
        self.stats.closed_by_us += 1
        if graceful:
            self.send(0x08, (1000).to_bytes(2, "big"))  # the server answers, then closes TCP
        else:
            self.transport.abort()  # type: ignore[union-attr]  # a TCP reset


class Load:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.port = port
        self.stats = Stats()
        self.clients: set[Client] = set()
        self.all: list[Client] = []
        self.max_seq = 0
        self.stopping = False
        self.connecting = asyncio.Semaphore(200)

    async def connect(self) -> None:
        async with self.connecting:
            loop = asyncio.get_running_loop()
            try:
                _t, client = await loop.create_connection(
                    lambda: Client(self), "127.0.0.1", self.port
                )
            except OSError as exc:
                self.stats.errors[f"connect failed: {exc.strerror or exc}"] += 1
                return
            self.all.append(client)
            try:
                await asyncio.wait_for(client.ready, 30)
            except TimeoutError:
                self.stats.errors["handshake timed out"] += 1

    def lost_echoes(self, older_than: float) -> int:
        now = time.monotonic()
        return sum(1 for c in self.all for sent in c.echoes.values() if now - sent > older_than)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def http_stats(port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return dict(json.loads(data.partition(b"\r\n\r\n")[2]))


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


async def run_load(args: argparse.Namespace, port: int, server: subprocess.Popen[bytes]) -> dict:
    load = Load(args, port)
    stats = load.stats
    started = time.monotonic()
    await asyncio.gather(*(load.connect() for _ in range(args.conns)))
    print(f"{len(load.clients)} connections open in {time.monotonic() - started:.1f}s", flush=True)

    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.minutes * 60
    begin = time.monotonic()
    next_report = begin
    echo_counter = 0
    print(
        f"{'t(s)':>6} {'conns':>6} {'RSS MiB':>8} {'fds':>6} {'bcast':>6} {'recv':>9} "
        f"{'lost':>5} {'echo':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}",
        flush=True,
    )
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        # churn: some leave (half gracefully, half by reset), as many arrive
        leaving = random.sample(sorted(load.clients, key=id), min(args.churn, len(load.clients)))
        for i, client in enumerate(leaving):
            client.leave(graceful=i % 2 == 0)
        for client in random.sample(
            sorted(load.clients, key=id), min(args.echo, len(load.clients))
        ):
            echo_counter += 1
            client.echo(str(echo_counter))
        await asyncio.gather(*(load.connect() for _ in range(args.conns - len(load.clients))))
        if time.monotonic() >= next_report:
            next_report += args.report
            window, stats.latencies = stats.latencies, []
            sample = {
                "t": round(time.monotonic() - begin, 1),
                "conns": len(load.clients),
                "rss_kib": rss_kib(server.pid),
                "fds": open_fds(server.pid),
                "broadcasts": load.max_seq,
                "received": stats.received,
                "lost": stats.lost_broadcasts + load.lost_echoes(10),
                "echo": f"{stats.echo_back}/{stats.echo_sent}",
                "p50_ms": round(percentile(window, 50) * 1000, 2),
                "p99_ms": round(percentile(window, 99) * 1000, 2),
                "max_ms": round(max(window, default=0) * 1000, 2),
                "errors": sum(stats.errors.values()),
            }
            samples.append(sample)
            print(
                f"{sample['t']:>6.0f} {sample['conns']:>6} {sample['rss_kib'] / 1024:>8.1f} "
                f"{sample['fds']:>6} {sample['broadcasts']:>6} {sample['received']:>9} "
                f"{sample['lost']:>5} {sample['echo']:>7} {sample['p50_ms']:>7} "
                f"{sample['p99_ms']:>7} {sample['max_ms']:>7} {sample['errors']:>6}",
                flush=True,
            )

    # the end: let the last broadcasts and echoes arrive, then compare
    await asyncio.sleep(2 * args.interval + 1)
    server_stats = await http_stats(port)
    behind = [c for c in load.clients if c.last_seq < server_stats["seq"] - 1]
    tail_lost = sum(server_stats["seq"] - 1 - c.last_seq for c in behind)
    lost_echoes = load.lost_echoes(0)
    final_rss = rss_kib(server.pid)

    # graceful shutdown: every client still connected gets close 1001, the server exits 0
    load.stopping = True
    still_open = len(load.clients)
    stop_started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    while load.clients and time.monotonic() - stop_started < 30:
        await asyncio.sleep(0.05)
    code = await asyncio.get_running_loop().run_in_executor(None, server.wait, 60)
    stop_seconds = time.monotonic() - stop_started

    return {
        "conns": args.conns,
        "minutes": args.minutes,
        "interval_s": args.interval,
        "churn_per_s": args.churn,
        "echo_per_s": args.echo,
        "samples": samples,
        "server_stats": server_stats,
        "final_rss_kib": final_rss,
        "broadcasts_sent": server_stats["seq"],
        "broadcast_messages_received": stats.received,
        "lost_broadcasts_gaps": stats.lost_broadcasts,
        "lost_broadcasts_tail": tail_lost,
        "clients_behind_at_end": len(behind),
        "echo_sent": stats.echo_sent,
        "echo_received": stats.echo_back,
        "lost_echoes": lost_echoes,
        "connections_opened": stats.opened,
        "closed_by_load": stats.closed_by_us,
        "open_at_shutdown": still_open,
        "got_1001_at_shutdown": stats.going_away,
        "shutdown_seconds": round(stop_seconds, 2),
        "server_exit_code": code,
        "errors": dict(stats.errors),
    }


def start_server(
    args: argparse.Namespace,
) -> tuple[subprocess.Popen[bytes], int, Path, threading.Thread]:
    log_path = HERE / "results" / f"soak-server-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_path.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, __file__, "serve", "--port", "0", "--bind", "127.0.0.1"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    env = {
        **os.environ,
        "SOAK_INTERVAL": str(args.interval),
        "SOAK_PAYLOAD": str(args.payload),
    }
    log = open(log_path, "wb")  # noqa: SIM115 - written for the whole run, closed by copy()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        log.write(line)
        if b"listening on" in line:
            port = int(line.split(b"listening on ")[1].split()[0].rsplit(b":", 1)[1])
            break
    else:
        raise SystemExit(f"the server did not start; see {log_path}")

    def copy() -> None:  # the rest of the server's log, until it exits
        assert proc.stderr is not None
        for line in proc.stderr:
            log.write(line)
        log.close()

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    return proc, port, log_path, copier


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--conns", type=int, default=3000, help="connections held (default 3000)")
    p.add_argument("--minutes", type=float, default=10, help="duration (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between broadcasts")
    p.add_argument("--payload", type=int, default=64, help="broadcast payload bytes")
    p.add_argument("--churn", type=int, default=20, help="random disconnects per second")
    p.add_argument("--echo", type=int, default=50, help="echo probes per second")
    p.add_argument("--report", type=float, default=30, help="seconds between report lines")
    args = p.parse_args()

    limit = raise_fd_limit(args.conns * 2 + 1024)
    if limit < args.conns + 256:
        raise SystemExit(f"open-file limit {limit} is too low for {args.conns} connections")
    proc, port, log_path, copier = start_server(args)
    print(f"server pid {proc.pid} on port {port}; its log: {log_path}", flush=True)
    try:
        from plezi.launch.run import new_event_loop

        loop = new_event_loop()
        result = loop.run_until_complete(run_load(args, port, proc))
        loop.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    copier.join(10)
    server_log = log_path.read_text(errors="replace")
    result["server_log_errors"] = sum(
        1 for line in server_log.splitlines() if " ERROR " in line or "Traceback" in line
    )
    result["server_log_warnings"] = sum(
        1 for line in server_log.splitlines() if " WARNING " in line
    )
    out = HERE / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print(f"full results: {out}")
    failed = (
        result["errors"]
        or result["server_log_errors"]
        or result["lost_broadcasts_gaps"]
        or result["lost_broadcasts_tail"]
        or result["lost_echoes"]
        or result["server_exit_code"] != 0
        or result["got_1001_at_shutdown"] != result["open_at_shutdown"]
    )
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
