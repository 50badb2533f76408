"""A raw-socket client of Server-Sent Events streams, for the tests.

:class:`EventStream` sends the request by hand and reads the events with the test suite's own
event-stream parser (the HTML standard's algorithm, in ``tests/protocol/test_protocol_sse.py``),
so the server's framing is checked against a second implementation.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from rawhttp import RawHTTP, RawResponse, request_bytes

from helpers import UNIT
from protocol.test_protocol_sse import parse_events

__all__ = ["STREAM", "Event", "EventStream", "first_event"]

STREAM = {"Accept": "text/event-stream"}


@dataclass
class Event:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class EventStream(RawHTTP):
    """A raw TCP connection that asks for an event stream and parses what comes back."""

    def __init__(
        self,
        port: int,
        target: str = "/",
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        before: bytes = b"",
        after: bytes = b"",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before the connection: it sets the TCP window
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.timeout = 5 * UNIT
        self.sock.settimeout(self.timeout)
        self.sock.connect(("127.0.0.1", port))
        if tls is not None:  # an event stream over TLS: the same bytes inside
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buf = b""
        self.eof = False
        #: Comment blocks (keep-alives) seen so far.
        self.comments = 0
        self.send(before + request_bytes("GET", target, {**STREAM, **(headers or {})}) + after)

    def open(self) -> RawResponse:
        """Read the stream's head and check it is an event stream."""
        response = self.read_response(head=True)
        assert response.status == 200, (response, self.buf)
        assert response.header("content-type") == "text/event-stream"
        return response

    def first(self) -> Event:
        """Read the stream's head (see :meth:`open`) and its first event."""
        self.open()
        return self.event()

    def block(self, timeout: float = 5 * UNIT) -> bytes | None:
        """The next block (up to a blank line); ``None`` at the end of the stream."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no complete block in time: {self.buf!r}"
            if not self._fill(left):
                assert not self.buf, f"stream ended mid-block: {self.buf!r}"
                return None
        raw, _, self.buf = self.buf.partition(b"\n\n")
        return raw

    def event(self, timeout: float = 5 * UNIT) -> Event:
        """The next event (comments are counted and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            raw = self.block(max(0.0, deadline - time.monotonic()))
            assert raw is not None, "the stream ended"
            event = self._parse(raw)
            if event is not None:
                return event

    def events(self, count: int) -> list[Event]:
        return [self.event() for _ in range(count)]

    def ended(self, timeout: float = 5 * UNIT) -> list[Event]:
        """The events left before the stream ends; fails if it does not end in time."""
        found = []
        deadline = time.monotonic() + timeout
        while (raw := self.block(max(0.0, deadline - time.monotonic()))) is not None:
            event = self._parse(raw)
            if event is not None:
                found.append(event)
        return found

    def _parse(self, raw: bytes) -> Event | None:
        """One block, read by the test parser of ``plezi.protocol.sse``; ``None`` (counted) for
        a comment."""
        parsed = parse_events(raw + b"\n\n")
        if not parsed:
            assert raw.startswith(b":"), raw
            self.comments += 1
            return None
        (fields,) = parsed
        retry = fields.get("retry")
        return Event(
            fields["data"],
            fields.get("event", "message"),
            fields.get("id"),
            int(retry) if retry is not None else None,
        )


def first_event(port: int, target: str = "/", **options: Any) -> Event:
    """Open a stream, check its head and return its first event."""
    with EventStream(port, target, **options) as stream:
        return stream.first()
