"""The ``permessage-deflate`` WebSocket extension (RFC 7692), sans-I/O.

Theory of operation
-------------------
*Negotiation.* :func:`negotiate` reads the client's ``Sec-WebSocket-Extensions`` offers and
accepts the first valid ``permessage-deflate`` one. plezi always answers with
``server_no_context_takeover`` and ``client_no_context_takeover``: every message, either way,
is compressed on its own. That is what lets a published message be compressed **once** for all
its subscribers (the same bytes are valid on every connection, whatever it was sent before),
and it bounds memory: no connection keeps a compressor or a decompressor between messages, so
an idle connection with compression costs what one without it costs. A malformed or
unsupported offer is declined (the next one is tried); it never fails the handshake.

*Sending.* :func:`deflate_payload` compresses one message with a fresh compressor whose window
is just large enough for it (a smaller window starts faster and changes nothing for a message
shorter than it), sync-flushes, and strips the ``00 00 ff ff`` tail (RFC 7692 section 7.2.1).
:func:`compressed_frame` frames it with RSV1 set, or returns ``None`` when compressing does not
pay: a message under :data:`MIN_SIZE` bytes, or one that does not shrink.

*Receiving.* :class:`Inflater` inflates one message frame by frame, bounded by the
message-size limit: each call asks zlib for at most one byte more than the limit allows, so a
"zip bomb" fails with :class:`MessageTooBig` once the limit is passed, never after inflating it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from .frames import encode_frame

__all__ = [
    "EXTENSION",
    "MIN_SIZE",
    "DeflateError",
    "DeflateParams",
    "Inflater",
    "MessageTooBig",
    "compressed_frame",
    "deflate_payload",
    "negotiate",
    "parse_extensions",
]

#: The extension's name in ``Sec-WebSocket-Extensions``.
EXTENSION = "permessage-deflate"

#: Messages shorter than this (in bytes, before compression) are sent uncompressed. Measured by
#: bench/deflate_sizes.py on the ends of JSON chat messages: 100 bytes save 0-13 bytes (4 on
#: average: the block header and code tables eat the gain), 128 bytes 7-23 (14), 300 bytes
#: 55-90; each compression costs about 10 us.
MIN_SIZE = 128

#: The sync-flush marker a compressed message ends with (RFC 7692 section 7.2.1).
_TAIL = b"\x00\x00\xff\xff"

#: zlib's raw deflate accepts windows of 2**9 to 2**15 bytes (RFC 7692 allows 8 to 15).
_MIN_ZLIB_BITS = 9
_MAX_BITS = 15

#: One parameter: ``name`` or ``name=value`` (a token or a quoted string, RFC 7692 section 5).
_PARAM = re.compile(r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*(?:"([^"]*)"|([^\s;,"]+)))?\s*')
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BITS = re.compile(r"[89]|1[0-5]")


class DeflateError(ValueError):
    """The peer's compressed data is not valid deflate data (close 1007)."""


class MessageTooBig(ValueError):
    """An inflated message grew past the message-size limit (close 1009)."""


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What was agreed for one connection.

    ``server_max_window_bits``: the largest window our compressed messages may use (15 unless
    the client asked for less). ``response``: the ``Sec-WebSocket-Extensions`` value to answer
    with."""

    server_max_window_bits: int = _MAX_BITS
    response: str = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"

    @property
    def can_compress(self) -> bool:
        """Whether we can send compressed messages at all (zlib has no 256-byte window)."""
        return self.server_max_window_bits >= _MIN_ZLIB_BITS

    @property
    def shares_frames(self) -> bool:
        """Whether published messages compressed once (with a window up to 2**15) may be sent
        to this connection as they are."""
        return self.server_max_window_bits == _MAX_BITS


#: The answer to the usual offer (no window limit asked for the server).
DEFAULT_PARAMS = DeflateParams()


def parse_extensions(value: str) -> list[tuple[str, list[tuple[str, str | None]]]] | None:
    """The offers in a ``Sec-WebSocket-Extensions`` value: ``(name, [(param, value), ...])``,
    names and parameter names in lower case, a quoted value unquoted. ``None`` when the value
    does not follow the grammar (RFC 6455 section 9.1)."""
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for item in value.split(","):
        name, *params = item.split(";")
        name = name.strip()
        if not name and not params:
            continue  # empty list elements are allowed (RFC 7230 section 7)
        if not _TOKEN.fullmatch(name):
            return None
        parsed: list[tuple[str, str | None]] = []
        for param in params:
            match = _PARAM.fullmatch(param)
            if match is None:
                return None
            quoted, plain = match.group(2), match.group(3)
            parsed.append((match.group(1).lower(), quoted if quoted is not None else plain))
        offers.append((name.lower(), parsed))
    return offers


def _accept(params: list[tuple[str, str | None]]) -> DeflateParams | None:
    """Our answer to one ``permessage-deflate`` offer, or ``None`` to decline it."""
    seen: set[str] = set()
    server_bits: int | None = None
    for name, value in params:
        if name in seen:  # RFC 7692 section 7: a parameter appears at most once
            return None
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif name == "server_max_window_bits":
            if value is None or not _BITS.fullmatch(value):
                return None
            server_bits = int(value)
        elif name == "client_max_window_bits":
            # Our inflater reads any window; the client may use the one it offered.
            if value is not None and not _BITS.fullmatch(value):
                return None
        else:
            return None
    if server_bits is None or server_bits == _MAX_BITS:
        if server_bits is None:
            return DEFAULT_PARAMS
        return DeflateParams(_MAX_BITS, f"{DEFAULT_PARAMS.response}; server_max_window_bits=15")
    return DeflateParams(
        server_bits, f"{DEFAULT_PARAMS.response}; server_max_window_bits={server_bits}"
    )


def negotiate(value: str | None) -> DeflateParams | None:
    """Accept the first valid ``permessage-deflate`` offer of a ``Sec-WebSocket-Extensions``
    request header (``None``: no header), or ``None``: no compression. Never raises."""
    if not value:
        return None
    offers = parse_extensions(value)
    if offers is None:
        return None
    for name, params in offers:
        if name == EXTENSION:
            accepted = _accept(params)
            if accepted is not None:
                return accepted
    return None


# -- sending ---------------------------------------------------------------------------------


def deflate_payload(
    payload: bytes | bytearray | memoryview, max_window_bits: int = _MAX_BITS
) -> bytes:
    """``payload`` compressed on its own (no context before or after it), sync-flushed, without
    the ``00 00 ff ff`` tail: the payload of a compressed message."""
    n = memoryview(payload).nbytes
    # PERF: the smallest window that holds the whole message (same output, faster start).
    bits = min(max(_MIN_ZLIB_BITS, (n - 1).bit_length()), max_window_bits)
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def compressed_frame(
    opcode: int, payload: bytes | bytearray | memoryview, max_window_bits: int = _MAX_BITS
) -> bytes | None:
    """One final, unmasked frame carrying ``payload`` compressed (RSV1 set), or ``None`` when it
    is not worth it: under :data:`MIN_SIZE` bytes, or not smaller once compressed."""
    n = memoryview(payload).nbytes
    if n < MIN_SIZE or max_window_bits < _MIN_ZLIB_BITS:
        return None
    data = deflate_payload(payload, max_window_bits)
    if len(data) >= n:
        return None
    return encode_frame(opcode, data, rsv=4)


# -- receiving -------------------------------------------------------------------------------

#: zlib's ``max_length`` is a C ``Py_ssize_t``.
_MAX_LENGTH = (1 << 62) - 1


class Inflater:
    """Inflates the compressed messages of one connection, one at a time, each bounded by
    ``max_size`` bytes once inflated (see the module docstring).

    No context is kept between messages (we asked for ``client_no_context_takeover``), so the
    zlib object lives only while a message is being received."""

    __slots__ = ("_max_size", "_obj", "_size", "messages")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._obj: zlib._Decompress | None = None
        self._size = 0
        #: Compressed messages inflated whole so far (for statistics and tests).
        self.messages = 0

    def inflate(self, data: bytes, fin: bool) -> bytes:
        """Inflate the next frame of the message (``fin``: its last). Raises
        :class:`MessageTooBig` past the limit, :class:`DeflateError` for invalid data; either
        way the message is abandoned."""
        obj = self._obj
        if obj is None:
            obj = self._obj = zlib.decompressobj(-_MAX_BITS)
            self._size = 0
        if fin:
            data += _TAIL
        room = self._max_size - self._size
        try:
            out = obj.decompress(data, min(room + 1, _MAX_LENGTH))
            # (a sender may end a message with a final block: then our tail is left over)
            if obj.unused_data and not (fin and obj.unused_data == _TAIL):
                raise DeflateError("data after the end of the deflate stream")
        except zlib.error:
            self._obj = None
            raise DeflateError("invalid deflate data") from None
        except DeflateError:
            self._obj = None
            raise
        if len(out) > room:
            self._obj = None
            raise MessageTooBig("inflated message too big")
        self._size += len(out)
        if fin:
            self._obj = None
            self.messages += 1
        return out

    def reset(self) -> None:
        """Abandon the message in progress."""
        self._obj = None
