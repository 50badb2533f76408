"""WebSocket frame encoders (RFC 6455 section 5).

The server sends unmasked frames; :func:`text_frame` and :func:`binary_frame`
are the hot path (every outgoing message goes through one of them).
:func:`encode_frame` is the general, slower encoder (masking, fragments, RSV
bits, any opcode) used by tests and clients.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, cast

from .close import is_valid_close_code

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "apply_mask",
    "binary_frame",
    "close_frame",
    "encode_frame",
    "ping_frame",
    "pong_frame",
    "text_frame",
    "unframe",
]

OP_CONT: Final = 0
OP_TEXT: Final = 1
OP_BINARY: Final = 2
OP_CLOSE: Final = 8
OP_PING: Final = 9
OP_PONG: Final = 10

_BytesLike = bytes | bytearray | memoryview

# Largest payload a control frame (close/ping/pong) may carry.
_MAX_CONTROL_PAYLOAD: Final = 125

# PERF: precompiled structs; ``pack`` on a Struct skips the format-cache lookup.
_HDR16: Final = struct.Struct("!BBH")
_HDR64: Final = struct.Struct("!BBQ")

# PERF: the two header bytes of every unmasked, final text/binary frame with a
# payload below 126 bytes, indexed by payload length: one tuple index instead of
# building a header per message.
_TEXT_SMALL: Final[tuple[bytes, ...]] = tuple(bytes((0x81, n)) for n in range(126))
_BINARY_SMALL: Final[tuple[bytes, ...]] = tuple(bytes((0x82, n)) for n in range(126))


def _apply_mask_py(data: _BytesLike, mask: _BytesLike) -> bytes:
    """Pure-Python masking: XOR ``data`` with the repeated 4-byte ``mask``."""
    mask = bytes(mask)
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    # PERF: treat the whole buffer as one big integer and XOR once; CPython's
    # bignum XOR runs in C, so this is far faster than a per-byte loop.
    n = memoryview(data).nbytes
    if not n:
        return b""
    full_mask = (mask * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(full_mask, "big")).to_bytes(n, "big")


#: Mask (or unmask) ``data`` with the 4-byte ``mask`` (RFC 6455 section 5.3) and
#: return new bytes. The C implementation from ``websockets.speedups`` when it is
#: importable, otherwise a pure-Python fallback. Raises ``ValueError`` when
#: ``mask`` is not 4 bytes long. Both accept bytes, bytearray and memoryview.
apply_mask: Callable[[_BytesLike, _BytesLike], bytes]
try:
    from websockets.speedups import apply_mask as _apply_mask_c
except ImportError:  # pragma: no cover - websockets is a runtime dependency
    apply_mask = _apply_mask_py
else:
    # PERF: bound directly to the C function (no Python wrapper call in between).
    # Its stub only admits bytes/bytearray masks; the C code takes any buffer.
    apply_mask = cast(Callable[[_BytesLike, _BytesLike], bytes], _apply_mask_c)


def text_frame(data: str) -> bytes:
    """Encode ``data`` as one unmasked, final text frame (server to client).

    Raises ``UnicodeEncodeError`` if ``data`` contains lone surrogates.
    """
    # PERF: hot path. ``encode()`` with no argument takes CPython's UTF-8 fast
    # path; the header comes from a table (small) or a precompiled Struct; the
    # frame is built with exactly one concatenation.
    payload = data.encode()
    n = len(payload)
    if n < 126:
        return _TEXT_SMALL[n] + payload
    if n < 65536:
        return _HDR16.pack(0x81, 126, n) + payload
    return _HDR64.pack(0x81, 127, n) + payload


def binary_frame(data: bytes | bytearray | memoryview) -> bytes:
    """Encode ``data`` as one unmasked, final binary frame (server to client)."""
    # PERF: hot path, same shape as text_frame. ``bytes + buffer`` copies the
    # payload once, whatever buffer type it is; no intermediate bytes() copy.
    n = data.nbytes if type(data) is memoryview else len(data)
    if n < 126:
        return _BINARY_SMALL[n] + data
    if n < 65536:
        return _HDR16.pack(0x82, 126, n) + data
    return _HDR64.pack(0x82, 127, n) + data


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
) -> bytes:
    """Encode one frame with full control over every header field.

    ``opcode`` is any 4-bit value (reserved opcodes included, so tests can build
    invalid frames); ``rsv`` is the 3-bit RSV1-RSV3 field. With ``mask`` (4
    bytes) the frame is masked as a client must do. No semantic checks are made
    (a fragmented or oversized control frame can be produced on purpose).
    """
    if not 0 <= opcode <= 15:
        raise ValueError(f"opcode must be 0-15, got {opcode}")
    if not 0 <= rsv <= 7:
        raise ValueError(f"rsv must be 0-7, got {rsv}")
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0 if mask is None else 0x80
    n = memoryview(payload).nbytes
    if n < 126:
        header = bytes((b0, mask_bit | n))
    elif n < 65536:
        header = _HDR16.pack(b0, mask_bit | 126, n)
    else:
        header = _HDR64.pack(b0, mask_bit | 127, n)
    if mask is None:
        return header + payload
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    return b"".join((header, mask, apply_mask(payload, mask)))


def _utf8_truncate(raw: bytes, limit: int) -> bytes:
    """Cut UTF-8 ``raw`` to at most ``limit`` bytes without splitting a character."""
    if len(raw) <= limit:
        return raw
    cut = limit
    # Back up over continuation bytes (0b10xxxxxx) so the cut lands on a start byte.
    while cut > 0 and raw[cut] & 0xC0 == 0x80:
        cut -= 1
    return raw[:cut]


def close_frame(code: int | None = None, reason: str = "") -> bytes:
    """Encode an unmasked close frame.

    ``code=None`` gives an empty payload (no status); a ``reason`` then raises
    ``ValueError`` (RFC 6455 5.5.1: a reason needs a code). A ``code`` that may not
    be sent on the wire (see :func:`is_valid_close_code`) raises ``ValueError``.
    The UTF-8 ``reason`` is truncated so the payload stays within 125 bytes,
    never in the middle of a character.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason requires a close code")
        return b"\x88\x00"
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent in a close frame")
    raw = _utf8_truncate(reason.encode(), _MAX_CONTROL_PAYLOAD - 2) if reason else b""
    return bytes((0x88, 2 + len(raw))) + code.to_bytes(2, "big") + raw


def _control_frame(b0: int, payload: bytes | bytearray | memoryview) -> bytes:
    n = memoryview(payload).nbytes
    if n > _MAX_CONTROL_PAYLOAD:
        raise ValueError(f"control frame payload must be at most 125 bytes, got {n}")
    return bytes((b0, n)) + payload


def ping_frame(payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Encode an unmasked ping frame; ``payload`` over 125 bytes raises ``ValueError``."""
    if not payload:
        return b"\x89\x00"
    return _control_frame(0x89, payload)


def pong_frame(payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Encode an unmasked pong frame; ``payload`` over 125 bytes raises ``ValueError``."""
    # PERF: the empty pong (answer to a keep-alive ping) is a constant.
    if not payload:
        return b"\x8a\x00"
    return _control_frame(0x8A, payload)


def unframe(data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
    """``(opcode, payload)`` of each frame in ``data``: whole, unmasked, final frames that this
    module encoded (nothing is validated: this is not a reader for a peer's bytes).

    For a side that writes messages rather than bytes (an ASGI server) and is handed frames
    that were built once for many connections (a published message)."""
    view = memoryview(data).cast("B")
    frames: list[tuple[int, bytes]] = []
    pos = 0
    end = len(view)
    while pos < end:
        n = view[pos + 1] & 0x7F
        if n < 126:
            start = pos + 2
        elif n == 126:
            n = _HDR16.unpack_from(view, pos)[2]
            start = pos + 4
        else:
            n = _HDR64.unpack_from(view, pos)[2]
            start = pos + 10
        frames.append((view[pos] & 0x0F, bytes(view[start : start + n])))
        pos = start + n
    return frames
