"""The server side of the WebSocket opening handshake (RFC 6455 section 4.2).

Works on an already parsed request: the method and a mapping of lower-case
header names to values. Produces the ``101 Switching Protocols`` response bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping

__all__ = [
    "GUID",
    "HandshakeError",
    "accept_key",
    "handshake_response",
    "is_upgrade_request",
    "validate_upgrade",
]

#: The fixed GUID appended to the client's key (RFC 6455 section 1.3).
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_GUID_BYTES = GUID.encode("ascii")

# PERF: the constant part of every 101 response, encoded once.
_RESPONSE_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)

_FORBIDDEN_IN_VALUES = frozenset("\r\n\0")
_FORBIDDEN_IN_NAMES = frozenset("\r\n\0 \t:")


class HandshakeError(ValueError):
    """The request is not an acceptable WebSocket upgrade.

    ``status`` is the HTTP status to answer with and ``headers`` the extra
    response headers it needs (for example ``Allow`` for 405).
    """

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers: list[tuple[str, str]] = list(headers)
        self.message = message


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID_BYTES).digest()).decode("ascii")


def _has_token(value: str, token: str) -> bool:
    """Whether the comma-separated header ``value`` contains ``token`` (lower case)."""
    value = value.lower()
    # PERF: the usual header is exactly the token ("websocket", "Upgrade").
    if value == token:
        return True
    return any(part.strip() == token for part in value.split(","))


def is_upgrade_request(headers: Mapping[str, str]) -> bool:
    """Cheap check: does the request ask for a WebSocket upgrade?

    ``headers`` maps lower-case names to values. Only the ``Upgrade`` header is
    looked at; :func:`validate_upgrade` does the full validation.
    """
    value = headers.get("upgrade")
    return value is not None and _has_token(value, "websocket")


def validate_upgrade(method: str, headers: Mapping[str, str]) -> str:
    """Validate a WebSocket upgrade request and return the key to answer.

    ``headers`` maps lower-case names to values. Returns the (stripped)
    ``Sec-WebSocket-Key`` value, ready for :func:`handshake_response`. Raises
    :class:`HandshakeError` with status 405 (method not GET, with ``Allow: GET``),
    400 (missing ``Upgrade: websocket`` or ``Connection: upgrade`` token, or a key
    that is not the base64 encoding of 16 bytes) or 426 (``Sec-WebSocket-Version``
    is not 13, with ``Sec-WebSocket-Version: 13`` and ``Upgrade: websocket``).
    """
    if method != "GET":
        raise HandshakeError(405, "WebSocket upgrade requires GET", [("Allow", "GET")])
    if not is_upgrade_request(headers):
        raise HandshakeError(400, "missing 'Upgrade: websocket' header")
    if not _has_token(headers.get("connection", ""), "upgrade"):
        raise HandshakeError(400, "missing 'Connection: Upgrade' header")
    if headers.get("sec-websocket-version", "").strip() != "13":
        # RFC 7231 6.5.15: a 426 response must name the protocol to upgrade to.
        raise HandshakeError(
            426,
            "unsupported WebSocket version",
            [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
        )
    key = headers.get("sec-websocket-key", "").strip()
    if len(key) != 24:  # base64 of 16 bytes is always 24 characters
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header") from None
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header")
    return key


def handshake_response(key: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """Return the full ``101 Switching Protocols`` response for the client's ``key``.

    ``headers`` are extra response headers (for example
    ``Sec-WebSocket-Protocol``), written in order after the required ones. A
    name or value containing CR, LF or NUL, and an empty name or one containing
    a colon or whitespace, raise ``ValueError`` (header injection); headers are
    encoded as Latin-1.
    """
    parts = [_RESPONSE_HEAD, accept_key(key).encode("ascii"), b"\r\n"]
    for name, value in headers:
        if (
            not name
            or _FORBIDDEN_IN_NAMES.intersection(name)
            or _FORBIDDEN_IN_VALUES.intersection(value)
        ):
            raise ValueError(f"invalid response header {name!r}")
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    parts.append(b"\r\n")
    return b"".join(parts)
