"""Sans-I/O protocol layer: WebSocket framing, handshake and compression, Server-Sent Events.

Nothing here performs I/O or imports asyncio, sockets or threads: bytes go in,
callbacks and bytes come out (:class:`WebSocketSession` is one WebSocket
connection), so the same code serves the server, a client and the tests.
"""

from __future__ import annotations

from .close import CloseCode, is_valid_close_code
from .connection import CLOSED, CLOSING, MAX_CONTROL_FRAMES, OPEN, WebSocketSession
from .deflate import (
    EXTENSION,
    MIN_SIZE,
    DeflateError,
    DeflateParams,
    Inflater,
    MessageTooBig,
    compressed_frame,
    deflate_payload,
    negotiate,
    parse_extensions,
)
from .frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    binary_frame,
    close_frame,
    encode_frame,
    ping_frame,
    pong_frame,
    text_frame,
    unframe,
)
from .handshake import (
    GUID,
    HandshakeError,
    OriginPolicy,
    accept_key,
    check_header,
    handshake_response,
    header_line,
    is_upgrade_request,
    negotiate_extensions,
    parse_origin,
    validate_upgrade,
)
from .reader import MAX_EMPTY_FRAGMENTS, TURN_SECONDS, FrameHandler, WebSocketReader
from .sse import sse_comment, sse_event

__all__ = [
    "CLOSED",
    "CLOSING",
    "EXTENSION",
    "GUID",
    "MAX_CONTROL_FRAMES",
    "MAX_EMPTY_FRAGMENTS",
    "MIN_SIZE",
    "OPEN",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "TURN_SECONDS",
    "CloseCode",
    "DeflateError",
    "DeflateParams",
    "FrameHandler",
    "HandshakeError",
    "Inflater",
    "MessageTooBig",
    "OriginPolicy",
    "WebSocketReader",
    "WebSocketSession",
    "accept_key",
    "apply_mask",
    "binary_frame",
    "check_header",
    "close_frame",
    "compressed_frame",
    "deflate_payload",
    "encode_frame",
    "handshake_response",
    "header_line",
    "is_upgrade_request",
    "is_valid_close_code",
    "negotiate",
    "negotiate_extensions",
    "parse_extensions",
    "parse_origin",
    "ping_frame",
    "pong_frame",
    "sse_comment",
    "sse_event",
    "text_frame",
    "unframe",
    "validate_upgrade",
]
