"""Hand-written uvloop WebSocket servers: the ceilings plezi is measured against.

--mode write: frame each message once, `transport.write` it per message per connection.
--mode cork:  frame once, queue per connection, write each connection's queue once per loop
              iteration (one `call_soon` flush).
--mode echo:  echo each message back to its sender (the WebSocket echo ceiling).
Only what the benchmarks send is handled: a handshake, masked frames with payloads < 126 bytes
... or longer (16/64-bit lengths), no fragmentation, no control frames.
"""

import argparse
import asyncio
import base64
import hashlib
import struct

import uvloop
from websockets.speedups import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNS: list["Conn"] = []
DIRTY: list["Conn"] = []


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def flush_all() -> None:
    global DIRTY
    dirty, DIRTY = DIRTY, []
    for conn in dirty:
        out = conn.out
        conn.out = []
        conn.transport.write(out[0] if len(out) == 1 else b"".join(out))


class Conn(asyncio.Protocol):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.buf = b""
        self.open = False
        self.out: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self in CONNS:
            CONNS.remove(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            key = buf.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
            CONNS.append(self)
            buf = buf[end + 4 :]
        offset, size = 0, len(buf)
        while size - offset >= 2:
            b0, b1 = buf[offset], buf[offset + 1]
            n, head = b1 & 0x7F, offset + 2
            if n == 126:
                if size - offset < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, head)
                head += 2
            elif n == 127:
                if size - offset < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, head)
                head += 8
            if size - head < 4 + n:
                break
            payload = apply_mask(buf[head + 4 : head + 4 + n], buf[head : head + 4])
            offset = head + 4 + n
            self.message(b0 & 0x0F, payload)
        self.buf = buf[offset:]

    def message(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            self.transport.close()
            return
        out = frame(opcode, payload)
        if self.mode == "echo":
            self.transport.write(out)
        elif self.mode == "write":
            for conn in CONNS:
                conn.transport.write(out)
        else:
            for conn in CONNS:
                if not conn.out:
                    if not DIRTY:
                        asyncio.get_running_loop().call_soon(flush_all)
                    DIRTY.append(conn)
                conn.out.append(out)


async def main(port: int, mode: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(mode), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("write", "cork", "echo"), required=True)
    args = p.parse_args()
    uvloop.run(main(args.port, args.mode))
