"""Incremental WebSocket frame parser for the receiving side (RFC 6455 section 5).

:class:`WebSocketReader` is sans-I/O: the caller feeds it the bytes read from the
connection, in chunks of any size, and it calls a :class:`FrameHandler` back
with complete messages, control frames and protocol errors.
"""

from __future__ import annotations

import codecs
import struct
import time
import typing
from typing import Final

from mypy_extensions import mypyc_attr, trait

from .close import CloseCode, is_valid_close_code
from .deflate import DeflateError, Inflater, MessageTooBig
from .frames import apply_mask

__all__ = [
    "MAX_EMPTY_FRAGMENTS",
    "TURN_SECONDS",
    "FrameHandler",
    "MessageSink",
    "WebSocketReader",
]

_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")

# PERF: payloads larger than this are unmasked through a memoryview slice (no
# copy of the masked bytes); below it, a plain slice is cheaper than creating
# the views (measured crossover with websockets.speedups: about 8 KiB).
_VIEW_THRESHOLD: Final = 8192

# Parts of a fragmented message kept apart before they are joined into one (see
# ``WebSocketReader._continue``).
_JOIN_EVERY: Final = 64

#: What a server passes as ``turn_seconds`` (see :class:`WebSocketReader`): one connection's
#: turn lasts about 10 ms, then the others get theirs. Measured (bench/fanout.py, burst of
#: 2,000 messages to 1,000 subscribers): 1 ms cut the burst into ~30 turns, each flushing one
#: write per subscriber (34M deliveries/s, against 72M before turns existed); 5 ms gave 60M,
#: 10 ms 75M. A probe beside a flood of tiny messages waits about a turn: p99 18-20 ms (the
#: target is 50 ms).
TURN_SECONDS: Final = 0.01

# PERF: with turns, the clock is read once per this many bytes parsed in one read, never per
# frame; a read of up to this size (one or a few frames: the usual case) costs nothing more.
# Between two reads of the clock: at most 4096 / 6 frames (an empty masked frame is 6 bytes).
_TURN_STEP: Final = 4096

#: Empty continuation frames without FIN accepted in one message; one more fails the
#: connection with 1008. They add nothing to the message, so its size limit does not bound
#: them (a client could send them forever), and no real sender needs more than a handful.
MAX_EMPTY_FRAGMENTS: Final = 1024
# MEMORY: a reader with nothing buffered and no fragmented message in progress (almost every
# one, almost always) holds these two shared empty objects, not an empty bytearray and an
# empty list of its own (~112 bytes per connection). They are never mutated: ``_buf`` is
# appended to only while it holds bytes, ``_frag_parts`` only while a fragmented message is
# in progress, and each gets a new object of its own when that begins.
_NO_BYTES: Final = bytearray()
_NO_PARTS: Final[list[typing.Any]] = []


def _first_byte_error(b0: int, deflate: bool = False) -> str | None:
    """Return why a frame whose first header byte is ``b0`` is invalid, if it is (``deflate``:
    permessage-deflate was negotiated, so RSV1 marks the first frame of a compressed message)."""
    opcode = b0 & 0x0F
    if deflate and b0 & 0x70 == 0x40 and opcode in (1, 2):
        return None
    if b0 & 0x70:
        if deflate and b0 & 0x70 == 0x40 and opcode < 8:
            return "RSV1 set on a continuation frame"
        if deflate and b0 & 0x70 == 0x40:
            return "RSV1 set on a control frame"
        return "reserved bits set without a negotiated extension"
    if 3 <= opcode <= 7 or opcode >= 11:
        return "reserved opcode"
    if opcode >= 8 and not b0 & 0x80:
        return "fragmented control frame"
    return None


# PERF: every context-free check on the first header byte (RSV bits, reserved
# opcodes, control frame without FIN) done once, at import, for all 256 values;
# parsing a frame then costs one tuple index instead of three tests.
_FIRST_BYTE_ERRORS: Final[tuple[str | None, ...]] = tuple(_first_byte_error(b) for b in range(256))
#: The same with permessage-deflate negotiated.
_DEFLATE_BYTE_ERRORS: Final[tuple[str | None, ...]] = tuple(
    _first_byte_error(b, deflate=True) for b in range(256)
)


class FrameHandler(typing.Protocol):
    """What :class:`WebSocketReader` reports to.

    The reader binds ``on_ws_message`` once, at construction (unless the handler is a
    :class:`MessageSink`); the other methods are looked up when they are called.
    """

    def on_ws_message(self, data: str | bytes) -> None:
        """A complete message: ``str`` for a text message, ``bytes`` for binary."""

    def on_ws_ping(self, payload: bytes) -> None:
        """A ping frame arrived (the caller should answer with a pong)."""

    def on_ws_pong(self, payload: bytes) -> None:
        """A pong frame arrived."""

    def on_ws_close(self, code: int | None, reason: str) -> None:
        """The peer's close frame; ``code`` is None when it carried no status."""

    def on_ws_error(self, code: int, reason: str) -> None:
        """A protocol violation: the caller must fail the connection with close ``code``.

        ``reason`` is a short, fixed human text for the log; it never contains
        peer data.
        """


#: ``__slots__`` of :class:`MessageSink`: empty, named rather than written out (see
#: ``plezi.protocol.connection._NO_SLOTS``).
_NO_SLOTS: tuple[str, ...] = ()


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class MessageSink:
    """A :class:`FrameHandler` whose messages the reader hands over by a direct call: the
    WebSocket session (:class:`~.connection.SessionLogic`) is one.

    PERF and MEMORY: compiled, the call is native (no Python call per message) and the reader
    keeps no bound method of its handler (72 bytes per connection). Any other handler works as
    well, through its bound ``on_ws_message``.
    """

    __slots__ = _NO_SLOTS

    def on_ws_message(self, data: str | bytes) -> None:
        """A complete message (see :class:`FrameHandler`)."""
        raise NotImplementedError


class WebSocketReader:
    """Parse a WebSocket byte stream into messages, reported to a :class:`FrameHandler`.

    ``max_message_size`` bounds a whole (possibly fragmented) message in bytes;
    ``None`` disables the limit. ``require_mask=True`` is the server side
    (client frames must be masked); ``require_mask=False`` is the client side
    (server frames must not be masked).

    ``deflate=True``: ``permessage-deflate`` was negotiated (see :mod:`.deflate`). RSV1 then
    marks the first frame of a compressed message, which is inflated frame by frame and reaches
    the handler as any other message; ``max_message_size`` bounds its inflated size (close 1009
    as soon as it is passed), invalid compressed data closes with 1007, RSV1 on a continuation
    or control frame with 1002. Uncompressed messages take the same path as without it.

    *Turns.* With ``turn_seconds`` set, :meth:`feed` stops once it has spent about that long on
    one read (the clock is read every few KiB parsed, so a read of a few frames never reads
    it), keeps the rest of the bytes and returns ``True``: the caller lets other work run
    (feeding more meanwhile only appends: order is kept), then calls ``feed(b"")`` to go on.
    So one peer's flood of tiny frames cannot hold a server's event loop. ``0`` stops at every
    clock reading (deterministic, for tests). ``None`` (the default): every complete frame fed
    is parsed before :meth:`feed` returns, which then always returns ``False``.

    Once a close frame or an error has been reported, :attr:`closed` is True and
    :meth:`feed` ignores everything. If a handler method raises, the exception
    propagates out of :meth:`feed` and the reader is left closed (its position in
    the stream is lost), silently, without another callback. :meth:`feed` must
    not be called re-entrantly from a handler method.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_errors",
        "_fast",
        "_frag_deflate",
        "_frag_empty",
        "_frag_joined",
        "_frag_op",
        "_frag_parts",
        "_frag_size",
        "_handler",
        "_mask_bit",
        "_max_size",
        "_need",
        "_on_message",
        "_sink",
        "_step",
        "_turn_seconds",
        "_wire_max",
        "closed",
        "inflater",
    )

    def __init__(
        self,
        handler: FrameHandler,
        *,
        max_message_size: int | None = 2**20,
        require_mask: bool = True,
        turn_seconds: float | None = None,
        deflate: bool = False,
    ) -> None:
        # PERF: the message callback is a direct call on a MessageSink, else bound once per
        # connection (no attribute lookup per message); the rare ones (ping, pong, close,
        # error) are looked up when they happen, which saves four bound methods (~256 bytes)
        # per connection.
        self._handler = handler
        self._sink: MessageSink | None = None
        self._on_message: typing.Callable[[str | bytes], None] = _ignore_message
        if isinstance(handler, MessageSink):
            self._sink = handler
        else:
            self._on_message = handler.on_ws_message
        # Compared against the MASK bit of each frame's second header byte.
        self._mask_bit = 0x80 if require_mask else 0
        # Python ints are unbounded, so "no limit" is just a bound no frame reaches.
        self._max_size = (1 << 64) if max_message_size is None else max_message_size
        # Whether feed() may take its single-frame shortcut (see there).
        self._fast = require_mask and self._max_size >= 125
        #: True once a close frame or an error was reported; feed() then ignores input.
        self.closed = False
        # Bytes of an incomplete frame (empty in the common case: see _NO_BYTES).
        self._buf = _NO_BYTES
        # How many bytes _buf must hold before parsing is worth retrying.
        self._need = 0
        # Fragmented message in progress: its opcode (0 = none), size so far and
        # parts (str for text, bytes for binary); the first ``_frag_joined`` parts
        # each stand for up to ``_JOIN_EVERY`` fragments (see ``_continue``).
        self._frag_op = 0
        self._frag_size = 0
        self._frag_parts = _NO_PARTS
        self._frag_joined = 0
        # Empty fragments of the message in progress (see MAX_EMPTY_FRAGMENTS).
        self._frag_empty = 0
        # Bytes parsed between two readings of the clock (without turns: more than any read
        # holds) and how long a turn lasts.
        self._step = (1 << 62) if turn_seconds is None else _TURN_STEP
        self._turn_seconds = turn_seconds or 0.0
        # Created on the first fragmented text message, then reused.
        self._decoder: codecs.IncrementalDecoder | None = None
        # permessage-deflate: the first-byte checks that let RSV1 through on data frames, the
        # inflater (bounded by the same limit), and whether the fragmented message in progress
        # is compressed. Without it, the only cost is which table ``_parse`` reads.
        self._errors = _DEFLATE_BYTE_ERRORS if deflate else _FIRST_BYTE_ERRORS
        #: The permessage-deflate inflater (``None`` without the extension).
        self.inflater = Inflater(self._max_size) if deflate else None
        # A compressed message may take a little more than the limit on the wire (deflate's
        # worst case: 5 bytes per stored block of up to 64 KiB, and a few more).
        self._wire_max = self._max_size + (self._max_size >> 12) + 64
        self._frag_deflate = False

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Parse ``data``, the next bytes of the stream; any split of the stream works.

        Returns ``True`` when the turn is over (see the class docstring): bytes may be
        left to parse, and the caller must call ``feed(b"")`` once other work had its
        turn. Never raises because of the input: every problem is reported through
        ``on_ws_error``. Exceptions raised by the handler propagate (and leave the
        reader closed).
        """
        if self.closed:
            return False
        buf = self._buf
        if buf:
            buf += data
            # PERF: a large frame trickling in costs one append per chunk; its
            # header is not parsed again until the whole frame is there.
            if len(buf) < self._need:
                return False
            data = buf
            end = len(data)
        else:
            if type(data) is memoryview and (data.ndim != 1 or data.itemsize != 1):
                data = data.tobytes()
            end = len(data)
            # PERF: fastest path, the usual server case: ``data`` is exactly one
            # whole, final, masked text/binary frame and no fragmented message is
            # in progress. Up to 125 bytes, ``data[1]`` must then be the MASK bit
            # plus a 7-bit length of ``end - 6``: 0x80 + end - 6 == end + 122
            # (``end < 132`` keeps that length below 126). From 126 bytes to 64
            # KiB, ``data[1]`` is the MASK bit plus 126 (0xFE) and the 16-bit
            # length is ``end - 8`` (``end > 133`` keeps it at 126 or more, so
            # the two cases cannot overlap). Everything the general loop would
            # check is implied by these tests, and the size limit by the test
            # itself (up to 125 bytes, ``_fast`` says the limit allows it).
            # ``isinstance``: compiled, indexing and slicing known bytes are C calls (on the
            # union they are generic ``__getitem__`` calls with a slice object each); the
            # transport always hands bytes, buffered reads go the general way anyway.
            if self._fast and not self._frag_op and isinstance(data, bytes):
                hlen = 0
                if 6 < end < 132:
                    if data[1] == end + 122:
                        hlen = 6
                elif (
                    end > 133
                    and data[1] == 0xFE
                    and (data[2] << 8 | data[3]) == end - 8
                    and end - 8 <= self._max_size
                ):
                    hlen = 8
                if hlen and (data[0] == 0x81 or data[0] == 0x82):
                    try:
                        payload = apply_mask(data[hlen:], data[hlen - 4 : hlen])
                        if data[0] == 0x82:
                            self._deliver(payload)
                            return False
                        try:
                            text = payload.decode()
                        except UnicodeDecodeError:
                            self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
                            return False
                        self._deliver(text)
                        return False
                    except BaseException:
                        self._reset()
                        self.closed = True
                        raise
        return self._parse(data, end)

    def _parse(self, data: bytes | bytearray | memoryview, end: int) -> bool:
        """The general case of :meth:`feed`: every frame in ``data`` (``end`` bytes; ``data``
        is the buffer itself when bytes were buffered), then the rest kept for later."""
        buf = self._buf
        # PERF: the common case (nothing buffered, whole frames in ``data``) is
        # parsed straight out of the caller's bytes, without copying them into a
        # buffer. The loop is inlined here (no helper call per frame) and walks
        # the frames of a pipelined chunk by offset: ``data`` is never re-sliced.
        # One call per read, never per frame, separates it from ``feed``'s fast path.
        pos = 0
        need = 0
        mask_bit = self._mask_bit
        mask_len = mask_bit >> 5  # 4 when frames must be masked, else 0
        max_size = self._max_size
        errors = self._errors
        # PERF: the loop stops at ``stop`` (a frame that starts before it is parsed whole) to
        # look at the clock; ``stop`` is ``end`` for any read up to ``_TURN_STEP`` bytes.
        step = self._step
        stop = end if end <= step else step
        started = -1.0
        try:
            while True:
                while pos < stop:
                    avail = end - pos
                    if avail < 2:
                        need = 2
                        break
                    b0 = data[pos]
                    b1 = data[pos + 1]
                    # PERF: RSV bits, reserved opcodes and fragmented control frames in
                    # one table lookup.
                    err = errors[b0]
                    if err is not None:
                        self._fail(CloseCode.PROTOCOL_ERROR, err)
                        return False
                    opcode = b0 & 0x0F
                    if b1 & 0x80 != mask_bit:
                        self._fail(
                            CloseCode.PROTOCOL_ERROR,
                            "unmasked client frame" if mask_bit else "masked server frame",
                        )
                        return False
                    length = b1 & 0x7F
                    # Header size: 2 bytes + extended length + mask key.
                    if length < 126:
                        hlen = 2 + mask_len
                    elif opcode & 8:
                        self._fail(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
                        return False
                    elif length == 126:
                        hlen = 4 + mask_len
                        if avail < 4:
                            need = hlen
                            break
                        length = _U16.unpack_from(data, pos + 2)[0]
                    else:
                        hlen = 10 + mask_len
                        if avail < 10:
                            need = hlen
                            break
                        length = _U64.unpack_from(data, pos + 2)[0]
                        if length >> 63:
                            self._fail(
                                CloseCode.PROTOCOL_ERROR,
                                "frame length has its most significant bit set",
                            )
                            return False
                    # Checks that depend on the message in progress, made as soon as the
                    # header is known: an oversized message fails before any of its
                    # payload is buffered.
                    if opcode < 8:
                        if opcode:
                            if self._frag_op:
                                self._fail(
                                    CloseCode.PROTOCOL_ERROR,
                                    "new data frame inside a fragmented message",
                                )
                                return False
                            if length > max_size and not (b0 & 0x40 and length <= self._wire_max):
                                self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                                return False
                        else:
                            if not self._frag_op:
                                self._fail(
                                    CloseCode.PROTOCOL_ERROR,
                                    "continuation frame without a message to continue",
                                )
                                return False
                            if self._frag_size + length > max_size and not (
                                self._frag_deflate and self._frag_size + length <= self._wire_max
                            ):
                                self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
                                return False
                    total = hlen + length
                    if avail < total:
                        need = total
                        break
                    start = pos + hlen
                    pos += total
                    if not length:
                        payload = b""
                    elif mask_len:
                        # PERF: unmasked (in C) straight out of the input: one copy.
                        # Large payloads go through a zero-copy memoryview slice;
                        # for small ones a plain slice is cheaper than the view.
                        if length > _VIEW_THRESHOLD:
                            payload = apply_mask(
                                memoryview(data)[start:pos], data[start - 4 : start]
                            )
                        else:
                            payload = apply_mask(data[start:pos], data[start - 4 : start])
                    elif length > _VIEW_THRESHOLD:
                        # Client side, large payload: one copy out of the input.
                        payload = bytes(memoryview(data)[start:pos])
                    else:
                        # Client side: a no-op ``bytes()`` when ``data`` is already bytes.
                        payload = bytes(data[start:pos])

                    if opcode == 1:
                        # (``b0 == 0x81`` costs what ``b0 & 0x80`` did, and leaves RSV1 out)
                        if b0 == 0x81:
                            # PERF: the common case, a whole text message in one frame.
                            try:
                                text = payload.decode()
                            except UnicodeDecodeError:
                                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
                                return False
                            self._deliver(text)
                        elif b0 & 0x40:
                            if self._compressed(b0, payload, length):
                                return False
                        elif self._start_text(payload, length):
                            return False
                    elif opcode == 2:
                        if b0 == 0x82:
                            self._deliver(payload)
                        elif b0 & 0x40:
                            if self._compressed(b0, payload, length):
                                return False
                        else:
                            self._frag_op = 2
                            self._frag_size = length
                            self._frag_parts = [payload]
                    elif opcode == 0:
                        if self._continue(payload, length, b0 & 0x80):
                            return False
                    elif opcode == 9:
                        self._handler.on_ws_ping(payload)
                    elif opcode == 10:
                        self._handler.on_ws_pong(payload)
                    else:
                        self._close(payload)
                        return False
                    # PERF: one slot read per frame lets a handler that closed the
                    # connection (set ``closed``) stop the parsing of the chunk.
                    if self.closed:
                        self._reset()
                        return False
                if need or pos >= end:
                    break
                # A read of thousands of frames (a flood): past ``turn_seconds`` the turn is
                # over (the first reading of the clock starts the count).
                now = time.perf_counter()
                if started < 0:
                    started = now
                if now - started >= self._turn_seconds:
                    break
                stop = end if end - pos <= step else pos + step
        except BaseException:
            # A handler raised: where the stream stands is unknown, stop here.
            self._reset()
            self.closed = True
            raise
        self._need = need
        if data is buf:
            if pos >= end:
                self._buf = _NO_BYTES  # (MEMORY: an idle connection holds no buffer)
            else:
                # PERF: deleting a bytearray prefix only moves its start offset.
                del buf[:pos]
        elif pos < end:
            # PERF: only the bytes of an incomplete frame (or those past the end of a
            # turn) are ever buffered. (``buf`` is empty here: ``data`` is the buffer
            # whenever it holds bytes.)
            self._buf = bytearray(memoryview(data)[pos:])
        # The turn is over when the loop stopped before the end of complete frames.
        return pos < end and not need

    def _reset(self) -> None:
        """Drop every buffered byte and fragment (the reader is closed)."""
        self._buf = _NO_BYTES
        self._need = 0
        self._frag_op = 0
        self._frag_size = 0
        self._frag_parts = _NO_PARTS
        self._frag_joined = 0
        self._frag_empty = 0
        self._decoder = None
        self._frag_deflate = False
        if self.inflater is not None:
            self.inflater.reset()

    def _fail(self, code: int, reason: str) -> None:
        """Close the reader and report a protocol error."""
        self.closed = True
        self._reset()
        self._handler.on_ws_error(code, reason)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection from outside (a policy the handler enforces, such as a rate):
        the reader closes, reports ``on_ws_error(code, reason)``, and parses nothing more,
        not even the rest of the bytes being fed."""
        if not self.closed:
            self._fail(code, reason)

    def release(self) -> None:
        """Close the reader for good and drop its handler's methods, so that a handler that
        holds its reader (a reference cycle) is freed by reference counting once released."""
        self.closed = True
        self._reset()
        self._handler = _IGNORE
        self._sink = None
        self._on_message = _ignore_message

    def _deliver(self, data: str | bytes) -> None:
        """Hand a complete message to the handler (see :class:`MessageSink`)."""
        sink = self._sink
        if sink is not None:
            sink.on_ws_message(data)
        else:
            self._on_message(data)

    def _inflate(self, payload: bytes, fin: int) -> bytes | None:
        """The next frame of a compressed message, inflated; ``None`` (the connection failing
        with 1009 or 1007) when the message grows past the limit or is not valid deflate data."""
        inflater = typing.cast(Inflater, self.inflater)
        try:
            return inflater.inflate(payload, bool(fin))
        except MessageTooBig:
            self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big once inflated")
        except DeflateError:
            self._fail(CloseCode.INVALID_DATA, "invalid compressed data")
        return None

    def _compressed(self, b0: int, payload: bytes, length: int) -> bool:
        """The first frame of a compressed message (RSV1 set); True if it failed (error
        reported). Its inflated bytes then take the uncompressed path."""
        fin = b0 & 0x80
        data = self._inflate(payload, fin)
        if data is None:
            return True
        if b0 & 0x0F == 1:
            if fin:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
                    return True
                self._deliver(text)
                return False
            if self._start_text(data, length):
                return True
        elif fin:
            self._deliver(data)
            return False
        else:
            self._frag_op = 2
            self._frag_size = length
            self._frag_parts = [data]
        self._frag_deflate = True
        return False

    def _start_text(self, payload: bytes, length: int) -> bool:
        """Begin a fragmented text message; True if it failed (error reported)."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            part = decoder.decode(payload, False)
        except UnicodeDecodeError:
            self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
            return True
        if _bad_utf8_tail(decoder):
            self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
            return True
        self._frag_op = 1
        self._frag_size = length
        self._frag_parts = [part]
        return False

    def _continue(self, payload: bytes, length: int, fin: int) -> bool:
        """Add a continuation frame; True if it failed (error reported).

        A message sent as many tiny fragments must not cost much more memory than
        the message itself: empty parts are not kept (they add nothing to the size,
        so nothing else would bound them), and every ``_JOIN_EVERY`` new parts are
        joined into one, so the list holds one object per that many fragments. Nor
        may it cost time without end: past ``MAX_EMPTY_FRAGMENTS`` empty ones in a
        message, the connection fails with 1008.
        """
        if not length and not fin:
            self._frag_empty += 1
            if self._frag_empty > MAX_EMPTY_FRAGMENTS:
                self._fail(CloseCode.POLICY_VIOLATION, "too many empty fragments in one message")
                return True
        if self._frag_deflate:
            # ``_frag_size`` counts wire bytes; the inflater bounds the inflated ones.
            inflated = self._inflate(payload, fin)
            if inflated is None:
                return True
            payload = inflated
        self._frag_size += length
        parts = self._frag_parts
        text = self._frag_op == 1
        part: str | bytes
        if text:
            # Fail fast: each fragment is validated as soon as it is complete.
            decoder = typing.cast(codecs.IncrementalDecoder, self._decoder)
            try:
                part = decoder.decode(payload, bool(fin))
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
                return True
            if not fin and _bad_utf8_tail(decoder):
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in text message")
                return True
            # (a successful final decode leaves the decoder reset for the next message)
        else:
            part = payload
        if part:
            parts.append(part)
            start = self._frag_joined
            if len(parts) - start >= _JOIN_EVERY:
                # PERF: each byte is copied here at most once (joined parts are not
                # joined again); messages in fewer fragments never get here.
                parts[start:] = [("" if text else b"").join(parts[start:])]
                self._frag_joined = start + 1
        if not fin:
            return False
        message: str | bytes = ("" if text else b"").join(parts)
        self._frag_parts = _NO_PARTS
        self._frag_joined = 0
        self._frag_empty = 0
        self._frag_op = 0
        self._frag_size = 0
        self._frag_deflate = False
        self._deliver(message)
        return False

    def _close(self, payload: bytes) -> None:
        """Validate and report the peer's close frame."""
        n = len(payload)
        if n == 0:
            code: int | None = None
            reason = ""
        elif n == 1:
            self._fail(CloseCode.PROTOCOL_ERROR, "close frame payload of 1 byte")
            return
        else:
            code = (payload[0] << 8) | payload[1]
            if not is_valid_close_code(code):
                self._fail(CloseCode.PROTOCOL_ERROR, "invalid close code")
                return
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(CloseCode.INVALID_DATA, "invalid UTF-8 in close reason")
                return
        self.closed = True
        self._reset()
        self._handler.on_ws_close(code, reason)


class _Ignore:
    """The handler a released reader holds instead of its own (never called: it is closed)."""

    def on_ws_message(self, data: str | bytes) -> None:
        pass

    def on_ws_ping(self, payload: bytes) -> None:
        pass

    def on_ws_pong(self, payload: bytes) -> None:
        pass

    def on_ws_close(self, code: int | None, reason: str) -> None:
        pass

    def on_ws_error(self, code: int, reason: str) -> None:
        pass


_IGNORE: Final = _Ignore()


def _ignore_message(data: str | bytes) -> None:
    """The message callback of a reader whose handler is a MessageSink, or that was released
    (never called: see ``_deliver``)."""


def _bad_utf8_tail(decoder: codecs.IncrementalDecoder) -> bool:
    """Whether the decoder holds an incomplete sequence no continuation can fix.

    CPython's incremental decoder rejects every impossible prefix as soon as it
    sees it, except ``ED A0..BF`` (the start of an encoded surrogate), which it
    only rejects once the third byte arrives; check it here so a text message
    split right there still fails fast.
    """
    pending = decoder.getstate()[0]
    return len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0
