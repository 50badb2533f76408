"""The same question as ``count_cost.py`` (what counting costs per echo message), asked of the
real server: uvloop, a TCP socket, the 101, ``data_received`` per message. The client runs in a
child process (plain sockets, lockstep: one 32-byte message, wait for its echo), which callgrind
does not follow, so only the server's instructions are counted.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/count_cost_server.py 5000       # and: 0

Per message: (instructions at N - at 0) / N. The kernel's share of each message (the read and
write system calls, loopback TCP) is not counted, so the real share of counting is smaller.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from plezi import App, ServerConfig
from plezi.launch.run import new_event_loop
from plezi.server.server import Server

CLIENT = r"""
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += sock.recv(4096)
frame = bytes([0x81, 0x80 | 32]) + b"\0\0\0\0" + b"x" * 32  # masked with a zero key
for _ in range(n):
    sock.sendall(frame)
    got = 0
    while got < 34:
        got += len(sock.recv(4096))
sock.close()
"""


class Echo:
    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]

    def on_close(self) -> None:
        SERVER.request_shutdown()


app = App()
app.route("/", Echo)
SERVER = Server(app, ServerConfig(port=0, bind="127.0.0.1"))


async def main(n: int) -> None:
    await SERVER.start()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(n), str(SERVER.port)])
    assert SERVER._stop is not None
    await SERVER._stop.wait()
    await SERVER.shutdown()
    await asyncio.get_running_loop().run_in_executor(None, client.wait)


if __name__ == "__main__":
    new_event_loop().run_until_complete(main(int(sys.argv[1])))
