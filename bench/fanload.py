"""Fan-out load generator: N WebSocket subscribers, one of them (the sender) publishes.

The server is expected to send every message it receives to all N connections (the sender too).
Deliveries per second are counted at the clients:

* lockstep: the sender sends its next 32-byte message only when the previous one came back to it;
  deliveries/s = N x round trips/s (checked against what the receivers really got);
* burst: the sender writes 2,000 messages back to back; deliveries/s = 2,000 x N / the time until
  every connection has all of them (best of ``--bursts``);
* steady: the sender sends ``--rate`` messages per second, each carrying its send time; 50 probe
  receivers record publish-to-delivery latency (p50, p99).

Receivers are raw uvloop protocols that read promptly and count bytes (every message the server
sends is a 34-byte frame); the sender's lockstep and burst frames are built once. Prints one
JSON line, which also says how many messages were sent and whether any connection got fewer
(``lost``) or more (``extra``).

``--protocol socketio`` speaks Socket.IO 5 over Engine.IO 4's WebSocket transport directly (no
polling first), as python-socketio frames it (checked against the server, not from memory):

* ``GET /socket.io/?EIO=4&transport=websocket`` upgrade; the server sends the Engine.IO open
  packet ``0{"sid":..,"pingInterval":25000,"pingTimeout":20000,..}`` in a text frame;
* the client sends ``40`` (connect to "/"), the server answers ``40{"sid":..}``, after which the
  connection is in the broadcast;
* a message is the event ``42["chat","<32-byte payload>"]`` both ways, one packet per frame;
* the server pings with ``2`` every pingInterval and closes connections that do not answer
  ``3`` within pingTimeout, so every connection answers each ping.

A Socket.IO receiver counts the frames that start with the "chat" event prefix (so a ping is
never counted as a message) and answers pings; both are a ``bytes.count`` per read, not a parse.

``--chat`` sends a ~300-byte JSON chat message instead of the 32-byte payload, and receivers
count frames by reading their headers (compressed frames differ in size); ``--deflate`` (which
implies it) offers ``permessage-deflate`` as Chromium does. Both report ``wire_bytes``: the bytes
the receivers read per delivery (lockstep and burst only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
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
    if len(payload) >= 126:
        return struct.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + mask + masked
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


#: ``--chat``: chat messages as JSON, about 300 bytes each. The text, author and ids vary from
#: message to message as in a real chat (a compressor that keeps context between messages would
#: otherwise shrink a repeated message to a few bytes); the sender cycles through 500 of them.
_WORDS = [
    "the",
    "a",
    "we",
    "it",
    "is",
    "to",
    "of",
    "and",
    "in",
    "on",
    "for",
    "with",
    "this",
    "that",
    "build",
    "test",
    "deploy",
    "chart",
    "tab",
    "page",
    "load",
    "fast",
    "slow",
    "fix",
    "bug",
    "ticket",
    "review",
    "merge",
    "branch",
    "release",
    "demo",
    "customer",
    "meeting",
    "slides",
    "tuesday",
    "friday",
    "morning",
    "lunch",
    "today",
    "tomorrow",
    "yesterday",
    "works",
    "fails",
    "again",
    "still",
    "now",
    "later",
    "thanks",
    "great",
    "sure",
    "maybe",
    "please",
    "could",
    "would",
    "should",
    "will",
    "can",
    "new",
    "old",
    "small",
    "big",
    "quick",
    "server",
    "client",
    "cache",
    "query",
    "index",
    "table",
    "user",
    "login",
    "session",
    "token",
    "error",
    "log",
    "metric",
    "alert",
    "dashboard",
    "flicker",
    "retry",
    "timeout",
    "queue",
    "worker",
    "job",
    "schedule",
    "backup",
    "restore",
    "migrate",
    "schema",
    ").split(",
]


def _text(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(18, 26))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


def _chats(n: int) -> list[bytes]:
    rng = random.Random(7)  # the same messages in every run
    names = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"]
    out = []
    for _ in range(n):
        uid = rng.randint(10000, 99999)
        message = {
            "type": "message",
            "room": "lobby",
            "user": {"id": uid, "name": rng.choice(names), "avatar": f"/u/{uid}.png"},
            "text": _text(rng),
            "sent_at": f"2026-12-04T20:{rng.randint(0, 59):02}:{rng.randint(0, 59):02}Z",
            "id": f"{rng.getrandbits(64):016x}",
        }
        out.append(json.dumps(message, separators=(",", ":")).encode())
    return out


CHATS = _chats(500)
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


class FrameCounter:
    """Counts the final text/binary frames in one connection's byte stream by walking their
    headers (``--chat``: frames of any size, compressed or not)."""

    __slots__ = ("count", "head", "skip")

    def __init__(self) -> None:
        self.count = 0
        self.skip = 0  # payload bytes of the current frame still to come
        self.head = b""  # an incomplete header

    def feed(self, data: bytes) -> None:
        if self.head:
            data = self.head + data
            self.head = b""
        pos, n = self.skip, len(data)
        while pos + 2 <= n:
            b0, size, h = data[pos], data[pos + 1] & 0x7F, 2
            if size == 126:
                if pos + 4 > n:
                    break
                size, h = (data[pos + 2] << 8) | data[pos + 3], 4
            elif size == 127:
                if pos + 10 > n:
                    break
                size, h = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if b0 & 0x80 and b0 & 0x0F in (1, 2):
                self.count += 1
            pos += h + size
        if pos >= n:
            self.skip = pos - n
        else:
            self.skip = 0
            self.head = data[pos:]


# Socket.IO: a "chat" event to the namespace "/" is ``42["chat",<JSON string>]``; the server
# sends it unmasked in one text frame, so every delivery starts with SIO_MARK (47 bytes in all).
SIO_EVENT = b'42["chat","'
SIO_MARK = bytes((0x81, len(SIO_EVENT) + len(PAYLOAD) + 2)) + SIO_EVENT
SIO_PING = b"\x81\x012"  # Engine.IO ping, a text frame "2"; 0x81 starts frames only


def message_frame(payload: bytes, socketio: bool) -> bytes:
    """What the sender writes for a 32-byte ``payload`` (a masked client frame)."""
    return client_frame(SIO_EVENT + payload + b'"]' if socketio else payload)


def read_frame(sock: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
    """One unmasked server frame (handshake only, blocking): its payload and what follows."""
    while True:
        if len(buf) >= 2:
            size, start = buf[1] & 0x7F, 2
            if size == 126 and len(buf) >= 4:
                size, start = struct.unpack("!H", buf[2:4])[0], 4
            if size < 126 and len(buf) >= start + size:
                return buf[start : start + size], buf[start + size :]
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("server closed during handshake")
        buf += chunk


def handshake(host: str, port: int, socketio: bool = False, deflate: bool = False) -> socket.socket:
    sock = socket.create_connection((host, port))
    # Small frames must leave at once: Nagle would hold each one for the previous one's ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/socket.io/?EIO=4&transport=websocket" if socketio else "/"
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{DEFLATE_OFFER if deflate else ''}\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("server closed during handshake")
        data += chunk
    if not data.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"handshake refused: {data[:60]!r}")
    if deflate and b"permessage-deflate" not in data.split(b"\r\n\r\n", 1)[0].lower():
        raise SystemExit("the server declined permessage-deflate")
    extra = data.split(b"\r\n\r\n", 1)[1]
    if socketio:
        opened, extra = read_frame(sock, extra)
        if not opened.startswith(b"0{"):
            raise SystemExit(f"no Engine.IO open packet: {opened[:60]!r}")
        sock.sendall(client_frame(b"40"))
        connected, extra = read_frame(sock, extra)
        if not connected.startswith(b"40{"):
            raise SystemExit(f"Socket.IO connect refused: {connected[:60]!r}")
    if extra:
        raise SystemExit("unexpected data after handshake")
    sock.setblocking(False)
    return sock


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds (-1 when there are none)."""
    if not ordered:
        return -1.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class SocketIOStream:
    """Counts the "chat" events in one connection's byte stream and answers Engine.IO pings.

    ``tail`` keeps the last bytes of the previous read, shorter than either pattern, so a frame
    split across two reads is counted once, when its pattern is complete."""

    KEEP = len(SIO_MARK) - 1
    PONG = client_frame(b"3")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.tail = b""
        self.messages = 0
        self.pings = 0

    def feed(self, data: bytes) -> None:
        data = self.tail + data
        self.messages += data.count(SIO_MARK)
        if SIO_PING in data:  # about every 25 s per connection
            # A ping wholly inside the tail was answered on the previous read.
            pings = data.count(SIO_PING) - self.tail.count(SIO_PING)
            self.pings += pings
            self.transport.write(self.PONG * pings)
        self.tail = data[-self.KEEP :]


class Counting(asyncio.Protocol):
    """Counts the chat messages a connection receives: plain WebSocket frames (all of one
    size) or Socket.IO packets."""

    received: int
    messages: int
    sio: SocketIOStream | None
    frames: FrameCounter | None

    def count(self, data: bytes) -> None:
        if self.frames is not None:
            self.received += len(data)
            self.frames.feed(data)
            self.messages = self.frames.count
        elif self.sio is None:
            self.received += len(data)
            self.messages = self.received // FRAME_IN
        else:
            self.sio.feed(data)
            self.messages = self.sio.messages


class Receiver(Counting):
    """One subscriber that is not the sender: counts messages as they come (prompt reading keeps
    the kernel's receive queues short, which is what a real client does). A probe also reads
    the send time in each steady-mode message and records the latency."""

    def __init__(self, group: Receivers, probe: bool = False) -> None:
        self.group = group
        self.received = 0
        self.messages = 0
        self.probe = probe
        self.pending = b""
        self.sio: SocketIOStream | None = None
        self.frames = FrameCounter() if group.chat else None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        if self.group.socketio:
            self.sio = SocketIOStream(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.group.closed += 1

    def data_received(self, data: bytes) -> None:
        self.count(data)
        if self.probe and self.group.timing:
            self.record(data)
        group = self.group
        if group.waiting is not None and self.messages >= group.target:
            group.check()

    def record(self, data: bytes) -> None:
        """The latency of every steady-mode message (payload "t<send time>") completed here."""
        now = time.perf_counter()
        data = self.pending + data
        stamps: list[bytes] = []
        if self.sio is None:
            whole = len(data) - len(data) % FRAME_IN
            stamps = [data[i + 2 : i + FRAME_IN] for i in range(0, whole, FRAME_IN)]
            self.pending = data[whole:]
        else:
            end = len(SIO_MARK) + len(PAYLOAD)
            while (i := data.find(SIO_MARK)) >= 0 and len(data) >= i + end:
                stamps.append(data[i + len(SIO_MARK) : i + end])
                data = data[i + end :]
            # An incomplete event, or a prefix of one that may be completed by the next read.
            self.pending = data[i:] if i >= 0 else data[-SocketIOStream.KEEP :]
        for stamp in stamps:
            if stamp.startswith(b"t"):
                self.group.latencies.append(now - float(stamp[1:]))


class Receivers:
    """The receivers' process: N-1 subscribers; answers "wait K" on stdin with the time at which
    every receiver had K messages, its CPU time so far, the fewest and the most messages any
    receiver counted, and the pings answered."""

    def __init__(self, socketio: bool, chat: bool = False) -> None:
        self.socketio = socketio
        self.chat = chat
        self.members: list[Receiver] = []
        self.closed = 0  # connections the server closed (none should be)
        self.timing = False
        self.latencies: list[float] = []
        self.target = 0
        self.waiting: asyncio.Future[None] | None = None

    def check(self) -> None:
        if (
            self.waiting is not None
            and not self.waiting.done()
            and all(r.messages >= self.target for r in self.members)
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
    socketio = args.protocol == "socketio"
    group = Receivers(socketio, args.chat)
    for _ in range(args.subs - 1):
        sock = handshake(args.host, args.port, socketio, args.deflate)
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
                if group.socketio or r.received % FRAME_IN == 0:
                    r.pending = b""
            print("ok", flush=True)
        elif line[0] == "latency":
            group.timing = False
            lat = sorted(group.latencies)
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            print(json.dumps({"p50_ms": p50, "p99_ms": p99, "samples": len(lat)}), flush=True)
        elif line[0] == "wait":
            try:
                when = await asyncio.wait_for(group.wait(int(line[1])), args.timeout)
            except TimeoutError:
                counts = [r.messages for r in group.members]
                raise SystemExit(
                    f"receivers: waited {args.timeout:g} s for {line[1]} messages each: fewest "
                    f"{min(counts)}, most {max(counts)}, {group.closed} connections closed"
                ) from None
            counts = [r.messages for r in group.members]
            reply = {
                "when": when,
                "cpu": time.process_time() - cpu0,
                "fewest": min(counts),
                "most": max(counts),
                "pings": sum(r.sio.pings for r in group.members if r.sio is not None),
                "bytes": sum(r.received for r in group.members),
            }
            print(json.dumps(reply), flush=True)


class Sender(Counting):
    def __init__(self, socketio: bool, chat: bool = False) -> None:
        self.socketio = socketio
        self.received = 0
        self.messages = 0
        self.sent = 0
        self.lockstep = False
        self.frame = message_frame(PAYLOAD, socketio)
        self.sio: SocketIOStream | None = None
        self.frames = FrameCounter() if chat else None
        # --chat: the messages to cycle through (``frame`` is then the next one)
        self.chats = [client_frame(c) for c in CHATS] if chat else []
        if chat:
            self.frame = self.chats[0]

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        if self.socketio:
            self.sio = SocketIOStream(transport)

    def data_received(self, data: bytes) -> None:
        before = self.messages
        self.count(data)
        if self.lockstep and self.messages > before:
            self.send(self.frame)

    def send(self, frame: bytes, count: int = 1) -> None:
        self.sent += count
        self.transport.write(frame)
        if self.chats:
            self.frame = self.chats[self.sent % len(self.chats)]

    async def caught_up(self, timeout: float) -> None:
        """Until every message sent came back to the sender."""
        deadline = time.perf_counter() + timeout
        while self.messages < self.sent:
            if time.perf_counter() > deadline:
                raise SystemExit(f"sender got {self.messages} of {self.sent} messages back")
            await asyncio.sleep(0.001)


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
        "--protocol",
        args.protocol,
        "--timeout",
        str(args.timeout),
        *(["--chat"] if args.chat else []),
        *(["--deflate"] if args.deflate else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    if (await child.stdout.readline()).strip() != b"ready":
        raise SystemExit("receivers failed to start")

    async def wait_receivers(target: int) -> dict[str, float]:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(f"wait {target}\n".encode())
        reply: dict[str, float] = json.loads(
            await asyncio.wait_for(child.stdout.readline(), args.timeout + 10)
        )
        return reply

    socketio = args.protocol == "socketio"
    sender_sock = handshake(args.host, args.port, socketio, args.deflate)
    _, sender = await loop.connect_accepted_socket(lambda: Sender(socketio, args.chat), sender_sock)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    sender.send(sender.frame)  # every subscriber is known: the handshakes are done
    first = await wait_receivers(1)
    result: dict[str, float] = {}
    if args.mode in ("lockstep", "both", "all"):
        start = sender.messages
        sender.lockstep = True
        t0 = time.perf_counter()
        sender.send(sender.frame)
        await asyncio.sleep(args.seconds)
        sender.lockstep = False
        rounds, elapsed = sender.messages - start, time.perf_counter() - t0
        await sender.caught_up(args.timeout)  # the message in flight
        await wait_receivers(sender.messages)  # every receiver got every round: nothing lost
        result["lockstep"] = rounds * args.subs / elapsed
        result["round_trip_us"] = elapsed / max(rounds, 1) * 1e6
    if args.mode in ("burst", "both", "all"):
        best = 0.0
        burst = (
            b"".join(sender.chats[i % len(sender.chats)] for i in range(args.burst))
            if sender.chats
            else sender.frame * args.burst
        )
        for _ in range(args.bursts):
            target = sender.messages + args.burst
            t0 = time.perf_counter()
            sender.send(burst, args.burst)
            t1 = (await wait_receivers(target))["when"]
            await sender.caught_up(args.timeout)
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
            sender.send(message_frame(stamp, socketio))
        await wait_receivers(start + count)
        child.stdin.write(b"latency\n")
        result.update(json.loads(await child.stdout.readline()))
    await sender.caught_up(args.timeout)
    await wait_receivers(sender.sent)
    await asyncio.sleep(0.05)  # anything delivered twice would have arrived by now
    final = await wait_receivers(0)
    cpu = time.process_time() - cpu0 + final["cpu"]
    result["client_cpu"] = cpu / (time.perf_counter() - wall0)
    # Every connection must have got exactly what was sent (the waits above only ensure "at least").
    result["sent"] = sender.sent
    result["lost"] = sender.sent - min(final["fewest"], sender.messages)
    if args.chat:  # bytes read per delivery, after the handshakes and the first message
        deliveries = (sender.sent - 1) * (args.subs - 1)
        result["wire_bytes"] = (final["bytes"] - first["bytes"]) / max(deliveries, 1)
    result["extra"] = max(final["most"], sender.messages) - sender.sent
    if sender.sio is not None:
        result["pings"] = final["pings"] + sender.sio.pings  # answered, over all connections
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
    p.add_argument("--protocol", choices=("ws", "socketio"), default="ws")
    p.add_argument("--chat", action="store_true", help="~300-byte JSON messages (see above)")
    p.add_argument("--deflate", action="store_true", help="offer permessage-deflate (--chat)")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for deliveries")
    p.add_argument("--receivers", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.chat = args.chat or args.deflate
    if (
        args.chat
        and not args.receivers
        and (args.protocol != "ws" or args.mode in ("steady", "all"))
    ):
        p.error("--chat and --deflate: plain WebSocket, lockstep and burst modes only")
    uvloop.run(receivers_main(args) if args.receivers else main(args))
