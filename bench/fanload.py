"""Fan-out load generator: N WebSocket subscribers, one of them (the sender) publishes.

The server is expected to send every message it receives to all N connections (the sender too).
Deliveries per second are counted at the clients:

* lockstep: the sender sends its next 32-byte message only when the previous one came back to it;
  deliveries/s = N x round trips/s (checked against what the receivers really got);
* burst: the sender writes 2,000 messages back to back; deliveries/s = 2,000 x N / the time until
  every connection has all of them (best of ``--bursts``);
* steady: the sender sends ``--rate`` messages per second, each carrying its send time; 50 probe
  receivers record publish-to-delivery latency (p50, p99).

To stay cheap, receivers are not read on every message: an epoll timer drains them every few
milliseconds, so one ``recv`` returns many messages; only the sender is read promptly. Prints
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time

import uvloop

PAYLOAD = b"0123456789abcdef0123456789abcdef"  # 32 bytes
FRAME_IN = 2 + len(PAYLOAD)  # what the server sends: an unmasked text frame


def client_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def handshake(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    # Small frames must leave at once: Nagle would hold each one for the previous one's ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("server closed during handshake")
        data += chunk
    if not data.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {data[:60]!r}")
    extra = data.split(b"\r\n\r\n", 1)[1]
    if extra:
        raise SystemExit("unexpected data after handshake")
    sock.setblocking(False)
    return sock


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds (-1 when there are none)."""
    if not ordered:
        return -1.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Receiver(asyncio.Protocol):
    """One subscriber that is not the sender: counts bytes as they come (prompt reading keeps
    the kernel's receive queues short, which is what a real client does). A probe also reads
    the send time in each steady-mode message and records the latency."""

    def __init__(self, group: Receivers, probe: bool = False) -> None:
        self.group = group
        self.received = 0
        self.probe = probe
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.probe and self.group.timing:
            now = time.perf_counter()
            data = self.pending + data
            whole = len(data) - len(data) % FRAME_IN
            for i in range(0, whole, FRAME_IN):
                stamp = data[i + 2 : i + FRAME_IN]
                if stamp.startswith(b"t"):
                    self.group.latencies.append(now - float(stamp[1:]))
            self.pending = data[whole:]
        group = self.group
        if group.waiting is not None and self.received // FRAME_IN >= group.target:
            group.check()


class Receivers:
    """The receivers' process: N-1 subscribers; answers "wait K" on stdin with the time at which
    every receiver had K messages."""

    def __init__(self) -> None:
        self.members: list[Receiver] = []
        self.timing = False
        self.latencies: list[float] = []
        self.target = 0
        self.waiting: asyncio.Future[None] | None = None

    def check(self) -> None:
        if (
            self.waiting is not None
            and not self.waiting.done()
            and all(r.received // FRAME_IN >= self.target for r in self.members)
        ):
            self.waiting.set_result(None)

    async def wait(self, target: int) -> float:
        self.target = target
        self.waiting = asyncio.get_running_loop().create_future()
        self.check()
        await self.waiting
        self.waiting = None
        return time.perf_counter()


async def receivers_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    group = Receivers()
    for _ in range(args.subs - 1):
        sock = handshake(args.host, args.port)
        probe = len(group.members) < 50
        _, receiver = await loop.connect_accepted_socket(
            lambda probe=probe: Receiver(group, probe), sock
        )
        group.members.append(receiver)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cpu0 = time.process_time()
    print("ready", flush=True)
    while line := (await reader.readline()).decode().split():
        if line[0] == "time":
            group.timing = True
            for r in group.members:
                r.pending = b"" if r.received % FRAME_IN == 0 else r.pending
            print("ok", flush=True)
        elif line[0] == "latency":
            group.timing = False
            lat = sorted(group.latencies)
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            print(json.dumps({"p50_ms": p50, "p99_ms": p99, "samples": len(lat)}), flush=True)
        elif line[0] == "wait":
            when = await asyncio.wait_for(group.wait(int(line[1])), 60)
            print(f"{when} {time.process_time() - cpu0}", flush=True)


class Sender(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = 0
        self.lockstep = False
        self.frame = client_frame(PAYLOAD)

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        before = self.received // FRAME_IN
        self.received += len(data)
        if self.lockstep and self.received // FRAME_IN > before:
            self.transport.write(self.frame)

    @property
    def messages(self) -> int:
        return self.received // FRAME_IN


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    # The receivers run in a process of their own, so the sender answers at once when its
    # message comes back instead of waiting behind 999 receiver callbacks.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--receivers",
        "--port",
        str(args.port),
        "--host",
        args.host,
        "--subs",
        str(args.subs),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    if (await child.stdout.readline()).strip() != b"ready":
        raise SystemExit("receivers failed to start")

    async def wait_receivers(target: int) -> tuple[float, float]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(f"wait {target}\n".encode())
        when, cpu = (await asyncio.wait_for(child.stdout.readline(), 70)).split()
        return float(when), float(cpu)

    sender_sock = handshake(args.host, args.port)
    _, sender = await loop.connect_accepted_socket(Sender, sender_sock)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    sender.transport.write(sender.frame)  # every subscriber is known: the handshakes are done
    await wait_receivers(1)
    result: dict[str, float] = {}
    if args.mode in ("lockstep", "both", "all"):
        start = sender.messages
        sender.lockstep = True
        t0 = time.perf_counter()
        sender.transport.write(sender.frame)
        await asyncio.sleep(args.seconds)
        sender.lockstep = False
        rounds, elapsed = sender.messages - start, time.perf_counter() - t0
        await asyncio.sleep(0.05)  # the message in flight
        await wait_receivers(sender.messages)  # every receiver got every round: nothing lost
        result["lockstep"] = rounds * args.subs / elapsed
        result["round_trip_us"] = elapsed / max(rounds, 1) * 1e6
    if args.mode in ("burst", "both", "all"):
        best = 0.0
        burst = sender.frame * args.burst
        for _ in range(args.bursts):
            target = sender.messages + args.burst
            t0 = time.perf_counter()
            sender.transport.write(burst)
            t1, _ = await wait_receivers(target)
            while sender.messages < target:
                await asyncio.sleep(0.001)
            best = max(best, args.burst * args.subs / (max(t1, time.perf_counter()) - t0))
        result["burst"] = best
    if args.mode in ("steady", "all"):
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"time\n")
        await child.stdout.readline()
        start = sender.messages
        t0 = time.perf_counter()
        count = int(args.seconds * args.rate)
        for i in range(count):
            # PERF of the load generator: frames built on the fly, 32-byte payload "t<time>".
            delay = t0 + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp = f"t{time.perf_counter():.6f}".encode().ljust(32)
            sender.transport.write(client_frame(stamp))
        await wait_receivers(start + count)
        child.stdin.write(b"latency\n")
        result.update(json.loads(await child.stdout.readline()))
    _, child_cpu = await wait_receivers(0)
    result["client_cpu"] = (time.process_time() - cpu0 + child_cpu) / (time.perf_counter() - wall0)
    print(json.dumps(result))
    child.stdin.close()
    await child.wait()
    sender.transport.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--mode", choices=("lockstep", "burst", "steady", "both", "all"), default="all")
    p.add_argument("--rate", type=float, default=100, help="steady mode: messages per second")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--receivers", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    uvloop.run(receivers_main(args) if args.receivers else main(args))
