"""Test clients for the WebSocket integration tests.

:func:`connect` opens a well-behaved client (the ``websockets`` package's sync client).
:class:`RawClient` is a raw TCP socket that speaks the handshake and the framing by hand, so a test
can send anything (malformed frames, one byte at a time, never answer a close) and see exactly what
the server puts on the wire. Its frame parser is written here, independently of ``plezi.protocol``,
so that the server's framing is checked against a second implementation.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _connect

import plezi
from helpers import UNIT
from plezi.protocol.frames import OP_CLOSE, OP_PING, OP_TEXT, encode_frame

__all__ = ["Echo", "Frame", "RawClient", "connect", "echo_app", "masked", "small_send_buffer"]

MASK = b"abcd"


def masked(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
) -> bytes:
    """A client frame (masked with ``mask`` unless it is ``None``), encoded by plezi."""
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)


class Echo:
    """A controller that writes every message back."""

    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


def echo_app() -> plezi.App:
    """An app with :class:`Echo` at ``/``."""
    app = plezi.App()
    app.route("/", Echo)
    return app


def connect(url: str, **kwargs: Any) -> ClientConnection:
    """A ``websockets`` sync client with test-friendly defaults (no proxy, no compression)."""
    kwargs.setdefault("open_timeout", 5 * UNIT)
    kwargs.setdefault("close_timeout", 5 * UNIT)
    return _connect(url, proxy=None, compression=None, **kwargs)


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE, f"not a close frame: {self}"
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def text(self) -> str:
        assert self.opcode == OP_TEXT, f"not a text frame: {self}"
        return self.payload.decode()


class RawClient:
    """A WebSocket client on a plain blocking socket (see the module docstring)."""

    def __init__(
        self,
        port: int,
        path: str = "/",
        *,
        extra: bytes = b"",
        rcvbuf: int = 0,
        timeout: float = 5 * UNIT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect(), so that the TCP window is negotiated small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        if tls is not None:  # the same frames inside TLS records
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        # ``extra`` (frames) goes out in the same send as the request: the server gets them with
        # the upgrade.
        sock.sendall(request + extra)
        while b"\r\n\r\n" not in self.buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"EOF during the handshake: {self.buf!r}")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response_head = head.decode("latin-1")
        status = self.response_head.split("\r\n", 1)[0]
        assert status.startswith("HTTP/1.1 101"), self.response_head

    # -- sending ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        mask: bytes | None = MASK,
    ) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask))

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode())

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        payload = b"" if code is None else struct.pack("!H", code) + reason
        self.send(OP_CLOSE, payload)

    # -- receiving --------------------------------------------------------------------------

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for data ({self.buf[:50]!r})") from None
            if not chunk:
                raise EOFError(f"EOF with {len(self.buf)} byte(s) of an incomplete frame")
            self.buf += chunk

    def recv_frame(self, timeout: float = 5 * UNIT) -> Frame:
        """The next frame from the server (which must not be masked)."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "the server sent a masked frame"
        assert not b0 & 0x70, "the server set an RSV bit"
        length, hlen = b1 & 0x7F, 2
        if length == 126:
            self._fill(4, deadline)
            length, hlen = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif length == 127:
            self._fill(10, deadline)
            length, hlen = struct.unpack_from("!Q", self.buf, 2)[0], 10
        self._fill(hlen + length, deadline)
        payload = self.buf[hlen : hlen + length]
        self.buf = self.buf[hlen + length :]
        return Frame(bool(b0 & 0x80), b0 & 0x0F, payload)

    def recv_message(self, timeout: float = 5 * UNIT) -> Frame:
        """The next data frame, answering nothing and skipping pings."""
        while True:
            frame = self.recv_frame(timeout)
            if frame.opcode != OP_PING:
                return frame

    def recv_close(self, timeout: float = 5 * UNIT) -> int | None:
        """Expect the next frame to be a close frame; return its code."""
        frame = self.recv_frame(timeout)
        assert frame.opcode == OP_CLOSE, f"expected a close frame, got {frame}"
        return frame.close_code

    def wait_eof(self, timeout: float = 5 * UNIT) -> bytes:
        """Read until the server closes TCP; return what came before the EOF (usually nothing).

        A reset counts as closed (the server aborted the connection)."""
        deadline = time.monotonic() + timeout
        rest = self.buf
        self.buf = b""
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise AssertionError("the server did not close the connection") from None
            except ConnectionResetError:
                return rest
            if not chunk:
                return rest
            rest += chunk

    def reset(self) -> None:
        """Close abruptly: a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def small_send_buffer(controller: Any) -> None:
    """Shrink the kernel send buffer of the server side of ``controller``'s connection, so that
    what the server queues stays in plezi's buffers, whatever the machine's TCP autotuning."""
    sock = controller._pl_conn.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
