"""A raw HTTP/1.1 test client: a plain TCP socket and a response parser written here.

httpx normalizes what it sends (``..`` segments, header names, framing) and hides connection
reuse, so the tests that need to put exact bytes on the wire (malformed requests, pipelining,
keep-alive on one socket, slow clients) use :class:`RawHTTP`. Every read is bounded by a socket
timeout; nothing here sleeps to wait for the server.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

from helpers import UNIT

__all__ = ["RawHTTP", "RawResponse", "request_bytes"]


@dataclass
class RawResponse:
    status: int
    reason: str
    #: Lower-case name -> every value sent under it, in order.
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode()


def request_bytes(
    method: str = "GET",
    target: str = "/",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    close: bool = False,
) -> bytes:
    """One well-formed HTTP/1.1 request (``Content-Length`` added when there is a body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body and not any(
        k.lower() in ("content-length", "transfer-encoding") for k in headers or {}
    ):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawHTTP:
    """One TCP connection to the server under test."""

    def __init__(self, port: int, *, timeout: float = 5 * UNIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readable(self) -> bool:
        """Whether the server has sent something (or closed), without waiting: a client that
        plays a slow or endless sender stops sending then."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def send_quietly(self, data: bytes) -> bool:
        """Send, returning ``False`` instead of raising when the server already hung up."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _fill(self, timeout: float | None = None) -> bool:
        """Read once more into the buffer; ``False`` at end of stream."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_response(self, *, head: bool = False) -> RawResponse:
        """Read exactly one response (its body framed by ``Content-Length`` or by the close)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed mid-response: {self.buf!r}")
        raw_head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", lines[0]
        response = RawResponse(int(status), reason)
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep, f"malformed response header {line!r}"
            response.headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = response.header("content-length")
        if head or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        if length is None:
            while self._fill():
                pass
            response.body, self.buf = self.buf, b""
            return response
        size = int(length)
        while len(self.buf) < size:
            if not self._fill():
                raise AssertionError(f"connection closed mid-body: {self.buf!r}")
        response.body, self.buf = self.buf[:size], self.buf[size:]
        return response

    def request(self, *args: object, **kwargs: object) -> RawResponse:
        """Send :func:`request_bytes` and read the response."""
        head = args[0] == "HEAD" if args else kwargs.get("method") == "HEAD"
        self.send(request_bytes(*args, **kwargs))  # type: ignore[arg-type]
        return self.read_response(head=head)

    def closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection within ``seconds`` (bytes sent meanwhile
        are kept in :attr:`buf`)."""
        deadline = time.monotonic() + seconds
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except TimeoutError:
                return False
        return True

    def rest_until_closed(self, seconds: float = 5 * UNIT) -> bytes:
        """Everything the server sends until it closes; fails if it does not close in time."""
        assert self.closed_within(seconds), f"the server kept the connection open: {self.buf!r}"
        rest, self.buf = self.buf, b""
        return rest
