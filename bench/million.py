"""Many WebSocket connections on one machine: open rate, memory per connection, broadcast time.

    bench/.venv/bin/python bench/million.py                          # 50,000 connections
    bench/.venv/bin/python bench/million.py --connections 1000000    # ~67 workers, ~67 clients
    bench/.venv/bin/python bench/million.py --handshakes --connections 10000 \\
        --servers plezi,socketify,iodine,websockets                  # one server process each

No process here may hold more than the hard open-file limit (20,000 on the project machines), so
the server runs with ``--workers`` (about ``--per-worker`` connections each, 15,000 by default)
and the connections come from as many client processes (this file with ``--client``), each
opening ``--per-client`` connections at most from source addresses of its own (127.1.I.1,
127.1.I.2 ... for client I, ``--per-address`` connections each: a connection bound to a source
address takes one of its ~28,000 ephemeral ports, and binding gets slow as they fill up).

Measured (``bench/servers/plezi_million.py``: every connection subscribes to one channel, a
message received is published to it):
* open rate: connections whose WebSocket handshake completed, per second, from the first
  connection attempt to the last ``101`` (the clients' own process start excluded);
* server memory per connection: the RSS of the server's processes (master and workers, /proc)
  after the connections are open minus before, over N;
* kernel memory per connection: /proc/meminfo ``Slab`` plus /proc/net/sockstat TCP ``mem``
  (socket buffers), after minus before, over N. Both ends are on this machine, so this counts a
  server socket AND a client socket per connection; other processes' activity adds noise;
* broadcast: one client sends a message; the time until the last connection received it
  (CLOCK_MONOTONIC is one clock for every process), ``--broadcasts`` times; with the kernel's
  TCP retransmissions and time under TCP memory pressure during them (``tcp_counters``).

``--handshakes`` measures the open rate and memory per connection of ONE server process of each
of ``--servers`` (names from bench/run.py), no broadcast.

``--netns`` (root) runs it all in a network namespace of its own whose TCP established hash has
a bucket per socket (``in_network_namespace``): the operator's tuning for a million connections
(on a dedicated server, the ``thash_entries`` boot parameter), without a reboot.

Bounded: every wait has a deadline, and the whole run stops after ``--timeout`` seconds. Every
process started here (server, workers, clients) is killed at the end, on an error, on Ctrl+C and
on SIGTERM. Needs: Linux, memory (about 3 KiB server + 10 KiB kernel + 5 KiB client per
connection: ~18 GiB for a million), ``fs.file-max`` above 2 x N, the loopback range 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run import SERVERS, cpu_seconds, cpu_split, descendants, free_port, rss_kib, settle

HERE = Path(__file__).resolve().parent
PY = sys.executable
PAGE = os.sysconf("SC_PAGE_SIZE")
#: The upgrade request every client connection sends. One key for all: a server only hashes it
#: into its answer (RFC 6455 asks clients for a random one; the load does not need it).
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
#: The broadcast message's prefix (clients count the messages that start with it).
TAG = b"b "


def raise_nofile() -> int:
    """The soft open-file limit raised to the hard one (every process here needs it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- a client process ---------------------------------------------------------------------------


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (mask key 0: the payload goes as it is), payload < 126 bytes."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


class Client(asyncio.Protocol):
    """One WebSocket connection: the handshake, then pongs to pings and a count of broadcasts.
    The server's frames are parsed just enough for that (they are never masked)."""

    __slots__ = ("buf", "head", "owner", "transport")

    def __init__(self, owner: Clients) -> None:
        self.owner = owner
        self.head: bytes | None = b""
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(UPGRADE)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        # The usual read once open: one whole unmasked text frame of < 126 bytes (a broadcast):
        # parsed in a few steps (the load generator's CPU counts against the broadcast time).
        if (
            self.head is None
            and not self.buf
            and 2 < len(data) < 128
            and data[1] == len(data) - 2
            and data[0] == 0x81
            and data.startswith(TAG, 2)
        ):
            self.owner.received(data[2:])
            return
        if self.head is not None:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return
            self.head = None
            if not head.startswith(b"HTTP/1.1 101"):
                self.owner.refused(self, head[:40])
                return
            self.owner.opened(self)
            data = head[end + 4 :]
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, start = buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if size < start + length:
                break
            opcode = buf[pos] & 0x0F
            payload = buf[start : start + length]
            pos = start + length
            if opcode == 9 and self.transport is not None:
                self.transport.write(frame(payload, 10))
            elif opcode in (1, 2) and payload.startswith(TAG):
                self.owner.received(payload)
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self)


class Clients:
    """A client process: opens ``count`` connections from the ``source`` addresses in turn,
    reports on stdout (one
    JSON object a line), takes commands on stdin (``send SEQ``, ``quit``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.open: list[Client] = []
        #: Connections started whose handshake has not ended (answered, refused or failed).
        self.waiting = 0
        self.failures = 0
        self.closed = 0
        self.got: dict[bytes, int] = {}
        self.done = asyncio.Event()
        self.first = 0.0
        self.last = 0.0
        self.sources = [(address, 0) for address in args.source.split(",")]
        self.started = 0

    def say(self, **event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def opened(self, conn: Client) -> None:
        self.open.append(conn)
        self.waiting -= 1
        self.last = time.monotonic()

    def refused(self, conn: Client, head: bytes) -> None:
        self.waiting -= 1
        self.failures += 1
        if self.failures <= 3:
            self.say(event="refused", head=head.decode(errors="replace"))
        if conn.transport is not None:
            conn.transport.close()

    def lost(self, conn: Client) -> None:
        if conn.head is None:
            self.closed += 1
        else:  # closed before its handshake was answered
            conn.head = None
            self.waiting -= 1
            self.failures += 1

    def received(self, payload: bytes) -> None:
        count = self.got.get(payload, 0) + 1
        self.got[payload] = count
        if count == len(self.open):
            self.say(event="got", seq=payload[len(TAG) :].decode(), t=time.monotonic())

    async def connect_one(self) -> None:
        args = self.args
        self.started += 1
        source = self.sources[self.started % len(self.sources)]
        try:
            await self.loop.create_connection(
                lambda: Client(self), args.host, args.port, local_addr=source
            )
        except OSError as exc:
            self.waiting -= 1
            self.failures += 1
            if self.failures <= 3:
                self.say(event="error", error=str(exc))

    async def open_all(self) -> None:
        """Open connections, ``inflight`` handshakes at a time, until ``count`` are open."""
        target, inflight = self.args.count, self.args.inflight
        self.first = time.monotonic()
        deadline = self.first + self.args.open_timeout
        next_report = self.first + 1
        tasks: set[asyncio.Task[None]] = set()
        while len(self.open) < target and time.monotonic() < deadline:
            if self.failures > max(100, target // 100):
                break
            room = min(inflight - self.waiting, target - len(self.open) - self.waiting)
            for _ in range(max(0, room)):
                self.waiting += 1
                task = self.loop.create_task(self.connect_one())
                tasks.add(task)  # a strong reference until it is done
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.002)
            if time.monotonic() >= next_report:
                next_report += 1
                self.say(event="progress", opened=len(self.open), failures=self.failures)
        self.say(
            event="open",
            opened=len(self.open),
            failures=self.failures,
            first=self.first,
            last=self.last,
        )

    def command(self, line: str) -> None:
        word, _, rest = line.strip().partition(" ")
        if word == "send" and self.open:
            t = time.monotonic()
            transport = self.open[0].transport
            assert transport is not None
            transport.write(frame(TAG + rest.encode()))
            self.say(event="sent", seq=rest, t=t)
        elif word in ("quit", ""):
            self.done.set()

    async def run(self) -> None:
        reader = asyncio.StreamReader()
        await self.loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
        )
        await self.open_all()

        async def commands() -> None:
            while not self.done.is_set():
                line = await reader.readline()
                self.command(line.decode())

        task = self.loop.create_task(commands())
        await self.done.wait()
        task.cancel()
        for conn in self.open:
            if conn.transport is not None:
                conn.transport.abort()


async def run_clients(args: argparse.Namespace) -> None:
    await Clients(args).run()


def client_main(args: argparse.Namespace) -> None:
    limit = raise_nofile()
    if args.count > limit - 50:
        raise SystemExit(f"client: {args.count} connections need more than {limit} files")
    try:
        import uvloop
    except ImportError:
        asyncio.run(run_clients(args))
    else:
        uvloop.run(run_clients(args))


# -- the coordinator ----------------------------------------------------------------------------


class Processes:
    """Every process this run started, killed (with its process group) at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=raise_nofile, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self, grace: float = 15) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group too: workers a master started, whatever became of the master
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def kernel_bytes() -> int:
    """Slab plus TCP socket buffers (pages), in bytes: what connections cost the kernel."""
    slab = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            slab = int(line.split()[1]) * 1024
    tcp_pages = 0
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            tcp_pages = int(fields[fields.index("mem") + 1])
    return slab + tcp_pages * PAGE


def cpu_now(server_pid: int, clients: list[subprocess.Popen[bytes]]) -> tuple[float, ...]:
    """CPU seconds so far: the server's processes (user, kernel) and the clients' (together)."""
    return (*cpu_split(server_pid), sum(cpu_seconds(c.pid) for c in clients))


def cpu_since(
    before: tuple[float, ...], server_pid: int, clients: list[subprocess.Popen[bytes]]
) -> tuple[float, ...]:
    """CPU seconds since ``before`` (a ``cpu_now``): server user, server kernel, clients."""
    return tuple(a - b for a, b in zip(cpu_now(server_pid, clients), before, strict=True))


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters that say a broadcast was slowed by more than its work: segments
    retransmitted (``RetransSegs``, tail-loss probes included: a client that takes seconds to
    read leaves the server's sends unacknowledged), retransmission timeouts (``TCPTimeouts``)
    and milliseconds spent under TCP memory pressure (``TCPMemoryPressuresChrono``: socket
    buffers over ``net.ipv4.tcp_mem``'s middle value, when the kernel trims them; counted when
    the pressure ends). Counted for the whole machine (its network namespace)."""
    values: dict[str, int] = {}
    for path, prefix in (("/proc/net/snmp", "Tcp:"), ("/proc/net/netstat", "TcpExt:")):
        rows = [line.split() for line in Path(path).read_text().splitlines()]
        rows = [row for row in rows if row[:1] == [prefix]]
        for names, numbers in zip(rows[::2], rows[1::2], strict=True):
            values.update(zip(names[1:], map(int, numbers[1:]), strict=True))
    keys = ("RetransSegs", "TCPTimeouts", "TCPMemoryPressuresChrono")
    return {key: values.get(key, 0) for key in keys}


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no server on port {port}")


class Events:
    """The clients' stdout lines, parsed, from one reader thread per client."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()

    def follow(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    self.queue.put((index, json.loads(line)))
                except ValueError:
                    self.queue.put((index, {"event": "noise", "line": line.decode()}))
            self.queue.put((index, {"event": "exit"}))

        threading.Thread(target=read, daemon=True).start()

    def until(
        self, done: Callable[[int, dict[str, Any]], bool], deadline: float, what: str
    ) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out waiting for {what}")
            try:
                index, event = self.queue.get(timeout=min(left, 1))
            except queue.Empty:
                continue
            if event["event"] == "exit":
                raise SystemExit(f"client {index} exited while waiting for {what}")
            if event["event"] in ("error", "refused", "noise"):
                print(f"  client {index}: {event}", flush=True)
            if done(index, event):
                return


def start_clients(
    procs: Processes, events: Events, args: argparse.Namespace, port: int, total: int
) -> list[subprocess.Popen[bytes]]:
    count = max(args.clients, math.ceil(total / args.per_client))
    pin = ["taskset", "-c", "1"] if args.handshakes else []
    clients = []
    for i in range(count):
        share = total // count + (1 if i < total % count else 0)
        addresses = math.ceil(share / args.per_address)
        source = ",".join(f"127.{1 + i // 250}.{i % 250}.{a}" for a in range(1, addresses + 1))
        cmd = [*pin, PY, __file__, "--client", "--port", str(port), "--source", source]
        cmd += ["--count", str(share), "--inflight", str(args.inflight)]
        cmd += ["--open-timeout", str(args.timeout)]
        proc = procs.start(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        events.follow(i, proc)
        clients.append(proc)
    return clients


def open_connections(
    events: Events, clients: list[subprocess.Popen[bytes]], total: int, deadline: float
) -> dict[str, float]:
    """Wait until every client opened its share; the open rate over the whole span."""
    opened: dict[int, dict[str, Any]] = {}
    last_print = [time.monotonic()]
    progress: dict[int, int] = {}

    def done(index: int, event: dict[str, Any]) -> bool:
        if event["event"] == "progress":
            progress[index] = event["opened"]
            if time.monotonic() - last_print[0] >= 5:
                last_print[0] = time.monotonic()
                print(f"  {sum(progress.values()):,} open", flush=True)
        elif event["event"] == "open":
            opened[index] = event
        return len(opened) == len(clients)

    events.until(done, deadline, "the connections to open")
    count = sum(e["opened"] for e in opened.values())
    failures = sum(e["failures"] for e in opened.values())
    first = min(e["first"] for e in opened.values())
    last = max(e["last"] for e in opened.values())
    if count < total:
        print(f"  only {count:,} of {total:,} opened ({failures} failures)", flush=True)
    return {"opened": count, "failures": failures, "seconds": last - first}


def broadcast(
    events: Events, clients: list[subprocess.Popen[bytes]], seq: int, deadline: float
) -> float:
    """One client sends; seconds until every client's every connection received it."""
    sent: list[float] = []
    got: dict[int, float] = {}

    def done(index: int, event: dict[str, Any]) -> bool:
        if event["event"] == "sent" and event["seq"] == str(seq):
            sent.append(event["t"])
        elif event["event"] == "got" and event["seq"] == str(seq):
            got[index] = event["t"]
        return bool(sent) and len(got) == len(clients)

    stdin = clients[0].stdin
    assert stdin is not None
    stdin.write(f"send {seq}\n".encode())
    stdin.flush()
    events.until(done, deadline, f"broadcast {seq} to reach every connection")
    return max(got.values()) - sent[0]


def measure_server(
    args: argparse.Namespace, name: str, cmd: list[str], total: int, broadcasts: int
) -> dict[str, float]:
    procs, events = Processes(), Events()
    deadline = time.monotonic() + args.timeout
    log = open(args.log, "ab") if args.log else subprocess.DEVNULL  # noqa: SIM115
    try:
        server = procs.start(cmd, stdout=log, stderr=log)
        wait_port(args.port_used, deadline)
        if args.workers > 1:  # every worker up: the master's own RSS, then each worker's
            expect = args.workers + 1
            while len(descendants(server.pid)) < expect and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)
        server_before = settle(lambda: descendants(server.pid), 5, within_kib=256)
        kernel_before = kernel_bytes()
        cpu_before = cpu_split(server.pid)
        clients = start_clients(procs, events, args, args.port_used, total)
        result = open_connections(events, clients, total, deadline)
        cpu_after = cpu_split(server.pid)
        server_user, server_kernel = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
        server_after = settle(lambda: descendants(server.pid), within_kib=256)
        kernel_after = kernel_bytes()
        client_rss = rss_kib([c.pid for c in clients])
        client_cpu = sum(cpu_seconds(c.pid) for c in clients)
        n = max(1, result["opened"])
        result.update(
            rate=result["opened"] / max(result["seconds"], 1e-9),
            server_kib=(server_after - server_before) / n,
            kernel_kib=(kernel_after - kernel_before) / 1024 / n,
            client_kib=client_rss / n,
            client_us=client_cpu * 1e6 / n,
            server_mib=server_after / 1024,
            cpu_us=(server_user + server_kernel) * 1e6 / n,
            user_us=server_user * 1e6 / n,
        )
        # Where a broadcast's time goes: the CPU the server's processes and the clients' used
        # over all of them (the load generator shares the machine; see bench/README).
        cpu0 = cpu_now(server.pid, clients)
        tcp0 = tcp_counters()
        times = [broadcast(events, clients, i, deadline) for i in range(1, broadcasts + 1)]
        if times:
            tcp1 = tcp_counters()
            result["retransmitted"] = (tcp1["RetransSegs"] - tcp0["RetransSegs"]) / len(times)
            result["rto"] = (tcp1["TCPTimeouts"] - tcp0["TCPTimeouts"]) / len(times)
            pressure = tcp1["TCPMemoryPressuresChrono"] - tcp0["TCPMemoryPressuresChrono"]
            result["pressure_s"] = pressure / 1000 / len(times)
            result["broadcast_s"] = statistics.median(times)
            result["broadcast_max_s"] = max(times)
            user, kernel, clients_cpu = cpu_since(cpu0, server.pid, clients)
            result["broadcast_server_s"] = (user + kernel) / len(times)
            result["broadcast_server_user_s"] = user / len(times)
            result["broadcast_clients_s"] = clients_cpu / len(times)
        if args.hold:
            # What holding the connections costs with nothing sent: the reaper's sweeps, pings
            # and their pongs (every ``ping_interval`` of silence), the cluster's own traffic.
            cpu0 = cpu_now(server.pid, clients)
            t0 = time.monotonic()
            time.sleep(max(0.0, min(args.hold, deadline - t0 - 30)))
            held = time.monotonic() - t0
            user, kernel, clients_cpu = cpu_since(cpu0, server.pid, clients)
            result["hold_s"] = held
            result["hold_server"] = (user + kernel) / held
            result["hold_server_user"] = user / held
            result["hold_clients"] = clients_cpu / held
        for c in clients:
            if c.stdin is not None and c.poll() is None:
                try:
                    c.stdin.write(b"quit\n")
                    c.stdin.flush()
                except BrokenPipeError:
                    pass
        return result
    finally:
        procs.stop_all()
        if args.log:
            log.close()  # type: ignore[union-attr]


def report(name: str, r: dict[str, float]) -> None:
    line = (
        f"{name:16} {int(r['opened']):>9,} open in {r['seconds']:6.1f} s = "
        f"{r['rate']:>8,.0f}/s  server {r['server_kib']:5.2f} KiB/conn "
        f"(RSS {r['server_mib']:,.0f} MiB)  kernel {r['kernel_kib']:5.2f} KiB/conn (both ends)"
        f"  clients {r['client_kib']:4.1f} KiB/conn  CPU per handshake: server "
        f"{r['cpu_us']:.0f} us ({r['user_us']:.0f} us user), clients {r['client_us']:.0f} us"
    )
    if "broadcast_s" in r:
        line += (
            f"  broadcast to all {r['broadcast_s']:.2f} s (median; worst "
            f"{r['broadcast_max_s']:.2f}), CPU per broadcast: server "
            f"{r['broadcast_server_s']:.2f} s ({r['broadcast_server_user_s']:.2f} s user), "
            f"clients {r['broadcast_clients_s']:.2f} s; kernel per broadcast: "
            f"{r['retransmitted']:,.0f} segments retransmitted ({r['rto']:,.0f} timeouts), "
            f"{r['pressure_s']:.1f} s under TCP memory pressure"
        )
    if "hold_s" in r:
        line += (
            f"  held {r['hold_s']:.0f} s idle: server {r['hold_server']:.1%} of a core "
            f"({r['hold_server_user']:.1%} user; {r['hold_server'] * 1e6 / r['opened']:.2f} us "
            f"per connection per second), clients {r['hold_clients']:.1%}"
        )
    print(line, flush=True)


#: Linux's ceiling for a network namespace's own TCP established hash (2^24 buckets).
_EHASH_MAX = 1 << 24


def in_network_namespace(args: argparse.Namespace) -> int:
    """``--netns``: run this same command, less ``--netns``, in a network namespace of its own
    whose TCP established hash has a bucket per socket of the run (both ends: 2 x N, a power of
    two). The kernel sizes the first namespace's hash at boot from the memory (262,144 buckets
    on the project machines): at a million connections, every packet's socket lookup walks a
    chain of ~8. ``net.ipv4.tcp_child_ehash_entries`` sizes the hash of namespaces created
    after it is set; it is put back at once, and the namespace is deleted at the end. Needs
    root and iproute2's ``ip``."""
    name = f"plezi-million-{os.getpid()}"
    buckets = min(_EHASH_MAX, 1 << (2 * args.connections - 1).bit_length())
    knob = Path("/proc/sys/net/ipv4/tcp_child_ehash_entries")
    try:
        before = knob.read_text().strip()
        knob.write_text(str(buckets))
        try:
            subprocess.run(["ip", "netns", "add", name], check=True)
        finally:
            knob.write_text(before)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--netns needs Linux, root and iproute2's ip: {exc}") from exc
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        print(f"in network namespace {name}: a TCP established hash of {buckets:,} buckets")
        argv = [a for a in sys.argv[1:] if a != "--netns"]
        command = ["ip", "netns", "exec", name, sys.executable, __file__, *argv]
        return subprocess.run(command, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=50_000)
    p.add_argument("--workers", type=int, help="default: connections / --per-worker")
    p.add_argument("--per-worker", type=int, default=15_000)
    p.add_argument("--per-client", type=int, default=15_000)
    p.add_argument("--clients", type=int, default=1, help="client processes, at least")
    p.add_argument("--per-address", type=int, default=2000, help="connections per source address")
    p.add_argument("--inflight", type=int, default=256, help="handshakes in flight per client")
    p.add_argument("--broadcasts", type=int, default=3)
    p.add_argument(
        "--ping",
        type=float,
        help="the server's ping_interval (plezi's --ping; default 40 s: a million silent "
        "connections are then pinged ~25,000 times a second, during the broadcasts too)",
    )
    p.add_argument(
        "--hold", type=float, default=0, help="then hold the connections idle this many seconds"
    )
    p.add_argument(
        "--netns",
        action="store_true",
        help="run in a network namespace with a TCP hash sized for the run (root; see below)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    p.add_argument("--log", help="append the servers' output to this file")
    p.add_argument("--handshakes", action="store_true", help="one process of each --servers")
    p.add_argument("--servers", default="plezi,socketify,iodine,websockets")
    # a client process (started by the coordinator)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--source", default="127.0.0.2", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--open-timeout", type=float, default=600, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client_main(args)
        return
    if args.netns:
        sys.exit(in_network_namespace(args))
    if args.per_client > raise_nofile() - 100:
        p.error(f"--per-client {args.per_client} does not fit the open-file limit")
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if not 0 < args.per_address <= high - low - 1000:
        p.error(f"--per-address {args.per_address}: a source address has {high - low} ports")
    if args.per_client > 250 * args.per_address:
        p.error("--per-client: at most 250 x --per-address")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # finally: blocks clean up
    if args.handshakes:
        args.workers = 1
        print(
            f"handshake rate: {args.connections:,} connections to one server process each "
            "(server on core 0, clients on core 1)"
        )
        for name in args.servers.split(","):
            args.port_used = free_port()
            cmd = ["taskset", "-c", "0", *SERVERS[name](args.port_used)]
            report(name, measure_server(args, name, cmd, args.connections, 0))
        return
    workers = args.workers or max(1, math.ceil(args.connections / args.per_worker))
    args.workers = workers
    args.port_used = free_port()
    cmd = [PY, str(HERE / "servers/plezi_million.py"), "--port", str(args.port_used)]
    cmd += ["--bind", "127.0.0.1", "--workers", str(workers)]
    if args.ping is not None:
        cmd += ["--ping", str(args.ping)]
    clients = math.ceil(args.connections / args.per_client)
    print(
        f"{args.connections:,} connections: plezi with {workers} worker(s), {clients} client "
        f"process(es), {os.cpu_count()} cores",
        flush=True,
    )
    report("plezi", measure_server(args, "plezi", cmd, args.connections, args.broadcasts))


if __name__ == "__main__":
    main()
