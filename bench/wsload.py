"""A cheap WebSocket echo load generator: raw uvloop protocols, no WebSocket library.

Each of ``--conns`` connections keeps exactly one message in flight: it sends a pre-built masked
frame, counts bytes until the whole echo frame is back, and sends the next. Prints one JSON line:
messages per second over ``--seconds`` (after a warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time

import uvloop


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def server_frame_size(n: int) -> int:
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


class Echo(asyncio.Protocol):
    def __init__(self, frame: bytes, expect: int, ready: asyncio.Future[None], stats: list[int]):
        self.frame, self.expect, self.ready, self.stats = frame, expect, ready, stats
        self.handshake = True
        self.buf = b""
        self.got = 0

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.handshake:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"handshake failed: {self.buf[:80]!r}")
            self.handshake = False
            data = self.buf[end + 4 :]
            self.buf = b""
            self.ready.set_result(None)
            self.transport.write(self.frame)
            if not data:
                return
        self.got += len(data)
        while self.got >= self.expect:
            self.got -= self.expect
            self.stats[0] += 1
            self.transport.write(self.frame)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    payload = (b"x" * args.size) if args.binary else (b"a" * args.size)
    frame = client_frame(payload, 2 if args.binary else 1)
    expect = server_frame_size(args.size)
    stats = [0]
    readies = []
    for _ in range(args.conns):
        ready = loop.create_future()
        await loop.create_connection(
            lambda r=ready: Echo(frame, expect, r, stats), args.host, args.port
        )
        readies.append(ready)
    await asyncio.wait_for(asyncio.gather(*readies), 10)
    await asyncio.sleep(args.warmup)
    start_count, start = stats[0], time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.sleep(args.seconds)
    count, elapsed = stats[0] - start_count, time.perf_counter() - start
    cpu = (time.process_time() - cpu0) / elapsed
    print(json.dumps({"msgs_per_s": count / elapsed, "client_cpu": cpu}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--binary", action="store_true")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--warmup", type=float, default=1)
    uvloop.run(main(p.parse_args()))
