"""The sans-I/O WebSocket connection: frames in, messages out, the close handshake, bytes to send.

Theory of operation
-------------------
A :class:`WebSocketSession` is one WebSocket connection with the I/O left out. It owns the
:class:`~.reader.WebSocketReader` (bytes in), the frames waiting to be sent (bytes out), the
state (``OPEN`` -> ``CLOSING`` -> ``CLOSED``) and everything RFC 6455 says about closing:

* *We close* (:meth:`send_close`): our close frame is queued, the state becomes ``CLOSING``
  (``close_by == "local"``); the peer's close frame, when it comes, completes the handshake.
* *The peer closes*: its frame is recorded (``close_rcvd``, ``close_by == "remote"`` when it
  spoke first) and answered with a close frame echoing its code (RFC 6455 section 5.5.1).
* *We fail the connection* (bad input found by the reader, or a policy of the caller:
  :meth:`fail`): a close frame with that code is queued and nothing more is parsed
  (``close_by == "error"``); nobody waits for the peer's answer.
* *The close timeout*: the caller stamps when closing began (its own clock, passed in) and asks
  :meth:`close_expired`.
* The caller reports the transport's end with :meth:`connection_closed` (``CLOSED``).

Data after our close frame is never sent; data after the peer's close frame is never parsed
(the reader stops there). Pings are answered with pongs; more than ``MAX_CONTROL_FRAMES`` pings
and pongs within a second fail the connection with 1008.

Used standalone (tests, a client), messages are collected for :meth:`events_received` and the
bytes to send are taken with :meth:`data_to_send`. The server's connection
(:mod:`plezi.server.websocket`) and the ASGI one (:mod:`plezi.asgi.websocket`) are thin I/O
shells that subclass it: they override :meth:`on_ws_message` (the controller's callback),
:meth:`queue_frame` (corking, flow control), and the two hooks :meth:`peer_closed` and
:meth:`protocol_error` (to answer after the controller's pending callbacks). PERF: a subclass,
not a wrapper, so the hot paths (the echo, the pub/sub fan-out) read ``state`` and ``_out`` as
slots of one object, and the reader calls the shell's ``on_ws_message`` with no hop between.
"""

from __future__ import annotations

import time
from typing import Any, Final

from mypy_extensions import mypyc_attr, trait

from .close import CloseCode
from .deflate import DeflateParams, compressed_frame
from .frames import OP_BINARY, OP_TEXT, binary_frame, close_frame, pong_frame, text_frame
from .reader import MessageSink, WebSocketReader

__all__ = [
    "CLOSED",
    "CLOSING",
    "MAX_CONTROL_FRAMES",
    "OPEN",
    "SESSION_SLOTS",
    "SessionLogic",
    "WebSocketSession",
]

#: The states of a :class:`WebSocketSession`. PERF: plain ints (the fan-out compares them per
#: subscriber).
OPEN: Final = 0
CLOSING: Final = 1
CLOSED: Final = 2

#: Pings and pongs a peer may send within one second; one more fails the connection with 1008.
#: Clients ping to keep a connection alive or to measure latency, a few times a minute up to a
#: few a second.
MAX_CONTROL_FRAMES: Final = 100


#: ``__slots__`` of :class:`SessionLogic`: empty, named rather than written out, so that mypy
#: does not check the trait's assignments against it (the concrete classes declare the slots).
_NO_SLOTS: tuple[str, ...] = ()


def queued(out: Any, item: Any) -> Any:
    """The write queue ``out`` with ``item`` at its end. A queue is ``None`` (nothing to send),
    its one item alone, or a list from the second item on.

    PERF: a connection sent one message in a loop iteration (a publish: the common case) makes
    no list, and one with nothing to send holds none (an empty list is 72 bytes, 2% of a held
    connection; a list's first ``append`` also allocates its item array)."""
    if out is None:
        return item
    if isinstance(out, list):
        out.append(item)
        return out
    return [out, item]


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class SessionLogic(MessageSink):
    """What :class:`WebSocketSession` does, on any class with its attributes (see the module
    docstring): a mypyc trait, so that the server's connection can be a
    :class:`~plezi.server.connection.StreamConnection` and a session at once. PERF: compiled,
    a class has one real base and any number of traits; the connection's real base holds the
    hot attributes, read at fixed offsets."""

    __slots__ = _NO_SLOTS

    deflate: DeflateParams | None
    state: int
    reader: WebSocketReader
    #: What waits to be sent: a queue of :func:`queued` (``None``, one item, or a list).
    _out: Any
    _out_size: int
    close_sent: tuple[int | None, str] | None
    close_rcvd: tuple[int | None, str] | None
    close_by: str | None
    _ctl_count: int
    _ctl_since: int
    _events: list[str | bytes] | None

    def _init_session(
        self,
        max_message_size: int | None,
        require_mask: bool,
        turn_seconds: float | None,
        deflate: DeflateParams | None,
    ) -> None:
        """Set the session's own attributes (a trait has no ``__init__``). ``state``, ``_out``
        and ``_out_size`` are the concrete class's to set (the server's connection has them
        from its stream base already)."""
        #: The agreed ``permessage-deflate`` parameters, or ``None`` (no compression).
        self.deflate = deflate
        self.reader = WebSocketReader(
            self,
            max_message_size=max_message_size,
            require_mask=require_mask,
            turn_seconds=turn_seconds,
            deflate=deflate is not None,
        )
        #: ``(code, reason)`` of the close frame we queued (``code`` None: no status), and of
        #: the peer's; who started closing: ``"local"``, ``"remote"``, ``"error"`` (we failed
        #: the connection) or None.
        self.close_sent = None
        self.close_rcvd = None
        self.close_by = None
        #: Pings and pongs received since ``_ctl_since`` (monotonic nanoseconds: an ``int``, as a
        #: float attribute of a trait is beyond mypyc): see ``_control``.
        self._ctl_count = 0
        self._ctl_since = 0
        #: Messages received, for :meth:`events_received` (a subclass delivers them instead).
        self._events = None

    # -- bytes in ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> bool:
        """Parse the next bytes from the peer; ``True`` when the reader's turn is over and
        ``receive_data(b"")`` must be called later (see :class:`~.reader.WebSocketReader`)."""
        return self.reader.feed(data)

    def events_received(self) -> list[str | bytes]:
        """The messages received since the last call (when :meth:`on_ws_message` is not
        overridden)."""
        events, self._events = self._events or [], None
        return events

    # -- bytes out --------------------------------------------------------------------------

    def queue_frame(self, frame: Any, size: int | None = None) -> None:
        """Queue an outgoing frame (``size``: its length, when ``frame`` is not bytes).
        Nothing is queued once closing: nothing may follow our close frame."""
        if self.state != OPEN:
            return
        self._out = queued(self._out, frame)
        self._out_size += len(frame) if size is None else size

    def compressed_frame(self, data: str | bytes | bytearray | memoryview) -> bytes:
        """The frame of one message (``str``: text, bytes-like: binary), compressed when
        ``permessage-deflate`` was agreed and it pays (see :func:`.deflate.compressed_frame`),
        else plain. Each message is compressed on its own (no context takeover)."""
        if isinstance(data, str):
            payload = data.encode()
            opcode = OP_TEXT
        else:
            payload = data if isinstance(data, bytes) else bytes(data)
            opcode = OP_BINARY
        if self.deflate is not None:
            frame = compressed_frame(opcode, payload, self.deflate.server_max_window_bits)
            if frame is not None:
                return frame
        return text_frame(data) if isinstance(data, str) else binary_frame(payload)

    def data_to_send(self) -> bytes:
        """Take every byte waiting to be sent."""
        out = self._out
        if out is None:
            return b""
        self._out = None
        self._out_size = 0
        return b"".join(out) if isinstance(out, list) else bytes(out)

    # -- closing ----------------------------------------------------------------------------

    @property
    def close_expected(self) -> bool:
        """Whether the transport should be closed once what is queued is sent: the handshake
        is complete, we answered the peer's close, or the connection failed."""
        return self.close_rcvd is not None or self.close_by == "error"

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "", now: float = 0.0) -> bool:
        """Start the closing handshake: queue our close frame (``ValueError`` for a code that
        may not be sent) and become ``CLOSING`` at ``now``. ``False`` when not open."""
        if self.state != OPEN:
            return False
        frame = close_frame(code, reason)
        self.queue_frame(self._close_item(frame, code, reason), len(frame))
        self.close_sent = (code, reason)
        self.close_by = "local"
        self._closing(now)
        return True

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (a policy of the caller, such as a rate): the
        reader stops, :meth:`protocol_error` is called as for bad input."""
        self.reader.fail(code, reason)

    def answer_close(self, code: int | None, now: float = 0.0) -> None:
        """Queue the close frame that answers the peer's close (echoing ``code``) or fails the
        connection (with ``code``), unless ours was sent already; the state is then
        ``CLOSING`` (stamped at ``now`` if it was not already)."""
        if self.state == OPEN:
            # Not through ``queue_frame``: a shell's policies (a slow consumer's messages
            # dropped) never drop the frame that ends the connection.
            frame = close_frame(code) if code is not None else close_frame()
            self._out = queued(self._out, self._close_item(frame, code, ""))
            self._out_size += len(frame)
            self.close_sent = (code, "")
            self._closing(now)

    def _close_item(self, frame: bytes, code: int | None, reason: str) -> Any:
        """What is queued for our close frame: the frame (the ASGI shell queues the message
        its server wants instead)."""
        return frame

    # PERF: the time closing began (``_closing_at``) is the concrete class's (a float attribute
    # shared by a trait and a compiled base class is beyond mypyc), and so are these two.

    def _closing(self, now: float) -> None:
        """Become ``CLOSING`` at ``now``."""
        raise NotImplementedError

    def close_expired(self, now: float, timeout: float) -> bool:
        """Whether closing began more than ``timeout`` before ``now`` (the caller then drops
        the connection: the peer did not answer, or did not take our last bytes)."""
        raise NotImplementedError

    def connection_closed(self) -> None:
        """The transport is gone: ``CLOSED``; what was not sent is dropped."""
        self.state = CLOSED
        self._out = None
        self._out_size = 0

    # -- hooks a shell overrides -------------------------------------------------------------

    def peer_closed(self, code: int | None) -> None:
        """The peer's close frame arrived (``close_rcvd`` is set): answer it. A shell may
        defer the answer (its controller's pending callbacks first)."""
        self.answer_close(code)

    def protocol_error(self, code: int, reason: str) -> None:
        """The connection fails with ``code`` (``reason``: a fixed text for a log line, never
        peer data): queue the close frame. A shell may log, and defer it."""
        self.answer_close(code)

    # -- the reader's callbacks -------------------------------------------------------------

    def on_ws_message(self, data: str | bytes) -> None:
        """A complete message (a shell overrides this: the controller's callback)."""
        if self._events is None:
            self._events = []
        self._events.append(data)

    def on_ws_ping(self, payload: bytes) -> None:
        # Every ping gets its pong (the Autobahn suite expects one each, though RFC 6455 section
        # 5.5.3 would allow answering the last only): the rate limit and the shell's outgoing
        # buffer cap bound what a peer that pings without reading makes us queue.
        if self.state == OPEN and not self._control():
            self.queue_frame(pong_frame(payload))

    def on_ws_pong(self, payload: bytes) -> None:
        # Only counted against the control frame rate.
        self._control()

    def _control(self) -> bool:
        """Count a ping or pong; ``True`` (and the connection failing with 1008) when it is
        one more than ``MAX_CONTROL_FRAMES`` within a second."""
        now = time.monotonic_ns()
        if now - self._ctl_since >= 1_000_000_000:
            self._ctl_since = now
            self._ctl_count = 1
            return False
        self._ctl_count += 1
        if self._ctl_count <= MAX_CONTROL_FRAMES:
            return False
        self.fail(
            CloseCode.POLICY_VIOLATION, f"more than {MAX_CONTROL_FRAMES} pings/pongs in a second"
        )
        return True

    def on_ws_close(self, code: int | None, reason: str) -> None:
        self.close_rcvd = (code, reason)
        if self.close_by is None:
            self.close_by = "remote"
        self.peer_closed(code)

    def on_ws_error(self, code: int, reason: str) -> None:
        if self.close_by is None:
            self.close_by = "error"
        self.protocol_error(code, reason)


#: The attributes of a session (:class:`SessionLogic`), for the classes that are one.
SESSION_SLOTS: Final = (
    "_ctl_count",
    "_ctl_since",
    "_events",
    "close_by",
    "close_rcvd",
    "close_sent",
    "deflate",
    "reader",
)


@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketSession(SessionLogic):
    """One WebSocket connection, sans-I/O (see the module docstring).

    ``max_message_size``, ``require_mask`` (``True``: the server side) and ``turn_seconds`` go to
    the :class:`~.reader.WebSocketReader`. ``deflate``: the ``permessage-deflate`` parameters
    agreed in the handshake (see :mod:`.deflate`), or ``None``.
    """

    __slots__ = (*SESSION_SLOTS, "_closing_at", "_out", "_out_size", "state")

    def __init__(
        self,
        *,
        max_message_size: int | None = 2**20,
        require_mask: bool = True,
        turn_seconds: float | None = None,
        deflate: DeflateParams | None = None,
    ) -> None:
        #: ``OPEN``, ``CLOSING`` (a close frame was queued, or the connection is failing or
        #: being dropped), ``CLOSED`` (the transport is gone).
        self.state = OPEN
        #: When the state became ``CLOSING``, on the caller's clock.
        self._closing_at = 0.0
        #: Frames waiting to be sent (see :func:`queued`), and their size in bytes.
        self._out: Any = None
        self._out_size = 0
        self._init_session(max_message_size, require_mask, turn_seconds, deflate)

    def _closing(self, now: float) -> None:
        """Become ``CLOSING`` at ``now``."""
        self.state = CLOSING
        self._closing_at = now

    def close_expired(self, now: float, timeout: float) -> bool:
        """Whether closing began more than ``timeout`` before ``now`` (the caller then drops
        the connection: the peer did not answer, or did not take our last bytes)."""
        return self.state == CLOSING and now - self._closing_at > timeout
