"""A WebSocket under an ASGI server: the native connection object over an ASGI "transport".

Theory of operation
-------------------
The controller side of a WebSocket is :class:`plezi.server.websocket.WebSocketConnection`, the
very class the native server uses (over the sans-I/O
:class:`~plezi.protocol.connection.WebSocketSession`: the state, closing, close codes by name,
failing the connection): ordered sync/async callbacks, ``write``/``close``, pub/sub
(the hub and its registry fan frames out to it), ``on_drained``, the outgoing buffer cap and the
slow-consumer policy all behave as they do natively (:class:`ASGIWebSocket` only leaves out the
native server's ping and close timers: the ASGI server pings, and :meth:`ASGITransport.run` bounds
the closing handshake). Only its transport differs: :class:`ASGITransport` stands where the
socket's transport would. An event stream under ASGI runs on a subclass of it
(:mod:`plezi.asgi.sse`).

*Out.* :class:`ASGIWebSocket` queues ASGI messages, not frames: ``write`` queues a
``websocket.send`` with the text or bytes as they are, our close is a ``websocket.close`` (no
frame is built, none is parsed back). Only a published message arrives framed (pub/sub frames it
once for all its subscribers, native or not): its payload is taken out of the frame header
(:func:`~plezi.protocol.frames.unframe`: no validation, no unmasking). The corked messages of one
loop iteration go to the transport's queue together; one task sends it in order; its size (the
payload bytes not yet accepted by ``send``) is the transport's write buffer, so ``pending``,
``pause_writing``/``resume_writing`` (``on_drained``) and the ``max_outgoing_buffer`` cap work as
natively: a client that does not read makes the ASGI server's ``send`` wait, and the queue grow.

*In.* A second task calls ``receive()`` and hands each ``websocket.receive`` to the
connection's ``on_ws_message`` (the reader callback of the native path), after the
``max_message_size`` check (the session fails the connection with 1009; nothing the client sends
after that reaches the controller). ``pause_reading`` (back-pressure, a backlog of async
callbacks) stops it calling ``receive()``. ``websocket.disconnect`` ends the connection.

*End.* When the peer disconnected, or our close was sent (then the peer's answer is awaited up
to ``close_timeout``), or the connection was aborted (slow consumer), both tasks end and the
connection is told it is lost: pub/sub subscriptions end, then ``on_close`` runs. The ASGI
application call returns and the server closes the socket. ASGI has no abort: an aborted
connection's queue is dropped and the call returns at once, without a close frame (uvicorn then
closes the socket, as the native server's abort does).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from ..protocol.close import CloseCode
from ..protocol.connection import CLOSED, OPEN
from ..protocol.frames import OP_CLOSE, OP_TEXT, unframe
from ..server.connection import StreamConnection
from ..server.websocket import WebSocketConnection

if TYPE_CHECKING:
    from ..config import Limits
    from ..http.response import Upgrade
    from ..server.server import Server
    from .types import ASGIMessage, Receive, Send

__all__ = ["ASGITransport", "ASGIWebSocket", "run_connection", "serve_websocket"]

log = logging.getLogger("plezi")


class ASGITransport(asyncio.Transport):
    """The transport of a :class:`WebSocketConnection` under ASGI (see the module docstring)."""

    #: After our close, the peer's answer is awaited (up to ``close_timeout``).
    closing_handshake = True

    def __init__(self, receive: Receive, send: Send, limits: Limits) -> None:
        super().__init__()
        self._receive = receive
        self._send = send
        self._limits = limits
        #: ASGI messages to send, each with the bytes it accounts for.
        self._queue: deque[tuple[ASGIMessage, int]] = deque()
        self._size = 0
        self._high = limits.write_high_water
        self._low = 0
        self._write_paused = False
        self._wake = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        #: No more writes: a close frame was written, or ``close()``/``abort()`` was called.
        self._closing = False
        self._aborted = False
        self._conn: StreamConnection | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- what the connection calls ---------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, StreamConnection)
        self._conn = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._conn is not None
        return self._conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Frames this side built (:class:`ASGIWebSocket` sends messages: see ``send_items``)."""
        self.send_items([bytes(data)])

    def send_items(self, items: list[Any]) -> None:
        """Queue what a connection flushed: ASGI messages, and frames (``bytes``: a published
        message, framed for every subscriber) turned into messages. After a close message,
        nothing more is queued."""
        if self._closing:
            return
        queue = self._queue
        size = 0
        for item in items:
            if type(item) is bytes:
                for opcode, payload in unframe(item):
                    message = _frame_message(opcode, payload)
                    if message is not None:
                        n = len(payload)
                        queue.append((message, n))
                        size += n
                        if opcode == OP_CLOSE:
                            break
            else:
                n = message_size(item)
                queue.append((item, n))
                size += n
            if queue and queue[-1][0]["type"] == "websocket.close":
                self._closing = True
                break
        if queue:
            self._queued(size)

    def _queued(self, size: int) -> None:
        """``size`` more bytes wait in the queue: wake the sender; past ``write_high_water``,
        pause the connection's writing (``on_drained`` once it is sent)."""
        self._size += size
        self._wake.set()
        if self._size > self._high and not self._write_paused and self._conn is not None:
            self._write_paused = True
            self._conn.pause_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        self._closing = self._aborted = True
        self._queue.clear()
        self._size = 0
        if self._writer is not None:
            self._writer.cancel()  # it may be waiting for a client that does not read

    def get_write_buffer_size(self) -> int:
        return self._size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = self._limits.write_high_water if high is None else high
        self._low = low or 0

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    # -- the two tasks ----------------------------------------------------------------------

    async def write_loop(self) -> None:
        """Send the queue in order until a close is sent, the connection is aborted, or the
        ASGI server refuses a message (the client is gone)."""
        queue = self._queue
        while True:
            while queue:
                message, size = queue.popleft()
                if not await self._deliver(message):
                    return
                self._size -= size
                if message["type"] == "websocket.close":
                    return
                if self._write_paused and self._size <= self._low and self._conn is not None:
                    self._write_paused = False
                    self._conn.resume_writing()
            if self._closing:
                if not self._aborted:  # (aborted before this task started: nothing to end)
                    await self._deliver(self._last_message())
                return
            self._wake.clear()
            await self._wake.wait()

    def _last_message(self) -> ASGIMessage:
        """What ends the connection when it is closed with nothing left to send."""
        return {"type": "websocket.close", "code": CloseCode.NORMAL}

    async def _deliver(self, message: ASGIMessage) -> bool:
        try:
            await self._send(message)
        except Exception as exc:  # noqa: BLE001 - servers raise OSError, RuntimeError ...
            log.debug("ASGI send failed (the client is gone): %r", exc)
            self._closing = True
            return False
        return True

    async def read_loop(self) -> None:
        """Hand the client's messages to the connection until it disconnects."""
        conn = self._conn
        assert isinstance(conn, WebSocketConnection)  # a stream's transport has its own loop
        max_size = self._limits.max_message_size
        while True:
            if not self._reading.is_set():
                await self._reading.wait()
            try:
                message = await self._receive()
            except Exception as exc:  # noqa: BLE001 - a server may raise once the client left
                log.debug("WebSocket receive failed (the client is gone): %r", exc)
                return
            kind = message["type"]
            if kind == "websocket.disconnect":
                # The ASGI server did the closing handshake: the session records its outcome.
                conn.close_rcvd = (
                    message.get("code", CloseCode.NORMAL),
                    message.get("reason") or "",
                )
                if conn.close_by is None:
                    conn.close_by = "remote"
                return
            if kind != "websocket.receive":
                continue
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if conn.reader.closed:
                continue  # the connection failed: nothing more reaches the controller
            if _too_big(data, max_size):
                conn.fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
            else:
                conn.on_ws_message(data)

    async def run(self) -> None:
        """Run both tasks until the connection ends (see the module docstring); then tell the
        connection it is lost (``on_close``), also when this call is cancelled."""
        reader = asyncio.ensure_future(self.read_loop())
        writer = self._writer = asyncio.ensure_future(self.write_loop())
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and not self._aborted and self.closing_handshake:
                # We closed: wait (bounded) for the peer's close to complete the handshake.
                await asyncio.wait((reader,), timeout=self._limits.close_timeout)
        finally:
            self._closing = True
            for task in (reader, writer):
                task.cancel()
            if self._conn is not None:
                # Before the wait below: a shutdown that runs meanwhile (an ASGI server that
                # cancelled this call, then sent lifespan.shutdown) finds the connection gone.
                self._conn.connection_lost(None)
            await asyncio.wait((reader, writer))
            for task in (reader, writer):
                if not task.cancelled() and task.exception() is not None:
                    log.error("ASGI connection task failed", exc_info=task.exception())
            self._release()

    def _release(self) -> None:
        """Break the reference cycle of an ended connection (this transport and the
        connection), so that both are freed by reference counting rather than by the cyclic
        garbage collector, which may not run for long."""
        self._conn = None
        self._writer = None
        self._queue.clear()


def _too_big(data: str | bytes, limit: int) -> bool:
    """Whether ``data`` is over ``limit`` bytes (UTF-8 for text; encoded only when it may be)."""
    if isinstance(data, bytes) or len(data) > limit or 4 * len(data) <= limit:
        return len(data) > limit
    return len(data.encode("utf-8", "surrogatepass")) > limit


def message_size(message: ASGIMessage) -> int:
    """The bytes an ASGI message accounts for in the outgoing buffer: its text (UTF-8) or bytes,
    a close's reason."""
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or message.get("reason") or b""
    if type(data) is str and not data.isascii():
        return len(data.encode())
    return len(data)


def _frame_message(opcode: int, payload: bytes) -> ASGIMessage | None:
    """The ASGI message for a frame this side built; ``None`` for a ping or pong (the ASGI
    server pings its clients itself)."""
    if opcode == OP_TEXT:
        return {"type": "websocket.send", "text": payload.decode()}
    if opcode == OP_CLOSE:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else CloseCode.NORMAL
        return {"type": "websocket.close", "code": code, "reason": payload[2:].decode()}
    if opcode & 8:
        return None
    return {"type": "websocket.send", "bytes": payload}


class ASGIWebSocket(WebSocketConnection):
    """The native connection as ASGI messages (see the module docstring), without the native
    server's timers: under ASGI the server pings its WebSockets, and :meth:`ASGITransport.run`
    bounds the closing handshake."""

    __slots__ = ()

    transport: ASGITransport

    def send(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Queue one ``websocket.send``: ``str`` as text, bytes-like as bytes. ``False`` once
        closing; ``TypeError`` for anything else, ``UnicodeEncodeError`` for a lone surrogate
        (as natively)."""
        if self.state != OPEN:
            return False
        message: ASGIMessage
        if isinstance(data, str):
            text = str(data)
            size = len(text) if text.isascii() else len(text.encode())
            message = {"type": "websocket.send", "text": text}
        elif isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
            size = len(payload)
            message = {"type": "websocket.send", "bytes": payload}
        else:
            raise TypeError(f"write() takes str or bytes-like data, not {type(data).__name__}")
        self._sent += 1
        self.queue_frame(message, size)
        return True

    def _close_item(self, frame: bytes, code: int | None, reason: str) -> Any:
        return {"type": "websocket.close", "code": code or CloseCode.NORMAL, "reason": reason}

    def flush(self) -> None:
        """Hand everything queued to the transport at once, as ASGI messages."""
        out = self._out
        if out is None:
            return
        items = out if isinstance(out, list) else [out]
        self._out = None
        size, self._out_size = self._out_size, 0
        transport = self.transport
        if self.state == CLOSED or transport.is_closing():
            return
        transport.send_items(items)
        self._flushed += size
        if self._write_paused:
            self._over_limit(0, queuing=False)

    def check_timeout(self, now: float) -> None:
        pass


async def serve_websocket(server: Server, upgrade: Upgrade, receive: Receive, send: Send) -> None:
    """Run an accepted WebSocket (``websocket.accept`` already sent) until it ends."""
    transport = ASGITransport(receive, send, server.limits)
    await run_connection(
        transport, ASGIWebSocket(server, transport, upgrade.controller, upgrade.route)
    )


async def run_connection(transport: ASGITransport, conn: StreamConnection) -> None:
    """Start ``conn`` (``on_open``) over ``transport`` and run both until the connection ends
    (then ``on_close``)."""
    transport.set_protocol(conn)
    conn.start(b"")
    await transport.run()


def accept_message(upgrade: Upgrade) -> dict[str, Any]:
    """The ``websocket.accept`` message: the headers and cookies ``pre_connect`` set; a
    ``Sec-WebSocket-Protocol`` header becomes the ASGI ``subprotocol``."""
    from .scope import asgi_headers

    pairs: list[tuple[str, str]] = []
    subprotocol: str | None = None
    response = upgrade.controller._pl_response
    if response is not None:
        for name, value in response.headers.items():
            if name.lower() == "sec-websocket-protocol":
                subprotocol = value
            else:
                pairs.append((name, value))
        pairs.extend(("set-cookie", cookie) for cookie in response.cookies)
    return {"type": "websocket.accept", "subprotocol": subprotocol, "headers": asgi_headers(pairs)}
