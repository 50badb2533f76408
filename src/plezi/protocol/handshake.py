"""The server side of the WebSocket opening handshake (RFC 6455 section 4.2).

Works on an already parsed request: the method and a mapping of lower-case
header names to values. Produces the ``101 Switching Protocols`` response bytes.
:class:`OriginPolicy` decides which ``Origin`` values may open a WebSocket (the
server's ``allowed_origins`` setting).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Final

from .deflate import DeflateParams, negotiate

__all__ = [
    "GUID",
    "SUBPROTOCOL",
    "TOKEN_PROTOCOL",
    "HandshakeError",
    "OriginPolicy",
    "accept_key",
    "check_header",
    "choose_subprotocol",
    "handshake_response",
    "header_line",
    "is_upgrade_request",
    "negotiate_extensions",
    "offered_subprotocols",
    "parse_origin",
    "subprotocol_token",
    "validate_upgrade",
]

#: The fixed GUID appended to the client's key (RFC 6455 section 1.3).
GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_GUID_BYTES: Final = GUID.encode("ascii")

# PERF: the constant part of every 101 response, encoded once.
_RESPONSE_HEAD: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"upgrade: websocket\r\n"
    b"connection: Upgrade\r\n"
    b"sec-websocket-accept: "
)

_FORBIDDEN_IN_VALUES: Final = frozenset("\r\n\0")
_FORBIDDEN_IN_NAMES: Final = frozenset("\r\n\0 \t:")


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
    # PERF: binascii directly (base64.b64encode is a Python function around it).
    digest = hashlib.sha1(key.encode() + _GUID_BYTES).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


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
        raise HandshakeError(405, "WebSocket upgrade requires GET", [("allow", "GET")])
    if not is_upgrade_request(headers):
        raise HandshakeError(400, "missing 'Upgrade: websocket' header")
    if not _has_token(headers.get("connection", ""), "upgrade"):
        raise HandshakeError(400, "missing 'Connection: Upgrade' header")
    if headers.get("sec-websocket-version", "").strip() != "13":
        # RFC 7231 6.5.15: a 426 response must name the protocol to upgrade to.
        raise HandshakeError(
            426,
            "unsupported WebSocket version",
            [("sec-websocket-version", "13"), ("upgrade", "websocket")],
        )
    key = headers.get("sec-websocket-key", "").strip()
    if len(key) != 24:  # base64 of 16 bytes is always 24 characters
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header")
    try:
        # PERF: binascii's strict mode is base64.b64decode(validate=True) without its regex.
        raw = binascii.a2b_base64(key, strict_mode=True)
    except (binascii.Error, ValueError):
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header") from None
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key header")
    return key


def negotiate_extensions(
    headers: Mapping[str, str], compression: str = "on"
) -> DeflateParams | None:
    """The extensions to accept for a WebSocket upgrade: ``permessage-deflate`` (RFC 7692)
    when the request's ``Sec-WebSocket-Extensions`` offers it validly and ``compression`` (the
    server's setting: ``"on"``, ``"broadcasts"`` or ``"off"``) allows it, else ``None``. The
    caller adds ``("sec-websocket-extensions", params.response)`` to the 101. A malformed or
    unsupported offer is declined, never an error (the handshake goes on without it)."""
    if compression == "off":
        return None
    return negotiate(headers.get("sec-websocket-extensions"))


def handshake_response(key: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """Return the full ``101 Switching Protocols`` response for the client's ``key``.

    ``headers`` are extra response headers (for example
    ``Sec-WebSocket-Protocol``), written in order after the required ones. A
    name or value containing CR, LF or NUL, and an empty name or one containing
    a colon or whitespace, raise ``ValueError`` (header injection); headers are
    encoded as Latin-1.
    """
    parts = [_RESPONSE_HEAD, accept_key(key).encode("ascii"), b"\r\n"]
    parts.extend(header_line(name, value) for name, value in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


#: Header names already checked, and their lower case (PERF: a reply's names are nearly always
#: the same few; bounded, so that a client cannot grow it through names it makes us echo).
_CHECKED_NAMES: Final[dict[str, str]] = {}
_CHECKED_MAX: Final = 256


def check_header(name: str, value: str) -> str:
    """The one rule for a response header plezi sends (HTTP/1.1, the 101, an event stream's
    head, and the pairs handed to an ASGI server): ``ValueError`` (header injection) for CR, LF
    or NUL in the name or the value, or an empty name or one with a colon or whitespace.
    Returns the name in lower case (one header case in every response)."""
    lname = _CHECKED_NAMES.get(name)
    if lname is None:
        if not name or not _FORBIDDEN_IN_NAMES.isdisjoint(name):
            raise ValueError(f"invalid response header {name!r}")
        lname = name.lower()
        if len(_CHECKED_NAMES) < _CHECKED_MAX:
            _CHECKED_NAMES[name] = lname
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"invalid response header {name!r}")
    return lname


def header_line(name: str, value: str) -> bytes:
    """``name: value`` and CRLF, Latin-1, the name in lower case; checked by
    :func:`check_header`."""
    return f"{check_header(name, value)}: {value}\r\n".encode("latin-1")


# -- Origin check (cross-site WebSocket hijacking) ---------------------------------------------

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]*")
#: A host as browsers serialize it in ``Origin``: a lower-case DNS name (punycode), an IPv4
#: address or an IPv6 literal (no sub-delims: never in a browser's origin, and ``*`` is ours).
_ORIGIN_HOST: Final = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9\-._~%]+")


def parse_origin(value: str) -> tuple[str, str, int | None] | None:
    """Split a serialized origin (``scheme://host[:port]``, RFC 6454) into its lower-case
    scheme and host and its port (the scheme's default port when absent, ``None`` for a scheme
    without one). Returns ``None`` for anything else: ``null``, a path, userinfo, a list."""
    return _parse_origin(value, wildcard=False)


def _parse_origin(value: str, *, wildcard: bool) -> tuple[str, str, int | None] | None:
    scheme, sep, rest = value.strip().lower().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or not rest:
        return None
    if rest.startswith("["):
        end = rest.find("]") + 1
        host, port_text = rest[:end], rest[end:]
    else:
        host, colon, port_text = rest.partition(":")
        port_text = colon + port_text
    port: int | None = _DEFAULT_PORTS.get(scheme)
    if port_text:
        digits = port_text[1:]
        if port_text[0] != ":" or not digits.isascii() or not digits.isdigit():
            return None
        port = int(digits)
        if port > 65535:
            return None
    name = host[2:] if wildcard and host.startswith("*.") else host
    if not name or not _ORIGIN_HOST.fullmatch(name):
        return None
    return scheme, host, port


class OriginPolicy:
    """Which ``Origin`` values may open a WebSocket (the ``allowed_origins`` setting).

    Entries are origins as a browser sends them: ``https://example.com`` (default port),
    ``http://localhost:3000``; ``https://*.example.com`` also admits every subdomain, at any
    depth, of ``example.com`` (not ``example.com`` itself: list it too). Schemes, hosts and
    ports must match exactly, case aside. An entry that is not an origin raises ``ValueError``.

    A request without an ``Origin`` header is allowed: browsers always send one, so it comes
    from another kind of client, which could send any ``Origin`` it likes anyway. This is a
    guard against cross-site WebSocket hijacking by web pages, not authentication. The opaque
    origin ``null`` (sandboxed frames, ``file:`` pages) is never allowed.
    """

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, allowed: Iterable[str]) -> None:
        self._exact: set[tuple[str, str, int | None]] = set()
        self._suffixes: list[tuple[str, str, int | None]] = []
        for entry in allowed:
            # (a trailing slash, as in a copied URL, is tolerated in the setting)
            parsed = _parse_origin(entry.strip().removesuffix("/"), wildcard=True)
            if parsed is None:
                raise ValueError(
                    f"not an origin: {entry!r} (expected scheme://host[:port], "
                    "for example https://example.com or https://*.example.com)"
                )
            scheme, host, port = parsed
            if host.startswith("*."):
                self._suffixes.append((scheme, host[1:], port))
            else:
                self._exact.add(parsed)

    def allows(self, origin: str | None) -> bool:
        """Whether a WebSocket upgrade carrying this ``Origin`` value (``None``: no header)
        may proceed."""
        if origin is None:
            return True
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if parsed in self._exact:
            return True
        scheme, host, port = parsed
        return any(
            scheme == s and port == p and host.endswith(suffix) for s, suffix, p in self._suffixes
        )


# -- subprotocols: the browser client's token ---------------------------------------------------

#: The subprotocol the browser client offers and the server answers with (RFC 6455 section
#: 4.2.2: the server's ``Sec-WebSocket-Protocol`` must be one of those offered).
SUBPROTOCOL: Final = "plezi"
#: The prefix of the offered subprotocol that carries a token: the token's UTF-8 bytes follow
#: as base64url without padding (a subprotocol is an HTTP token: no ``=``, ``/`` or space).
#: The client offers ``["plezi", "base64url.bearer.plezi.<token>"]``, as Phoenix does
#: (``phoenix`` and ``base64url.bearer.phx.``); the server never echoes the token.
TOKEN_PROTOCOL: Final = "base64url.bearer.plezi."
#: The longest token read from a handshake (its base64url text); a longer one is ignored.
_MAX_TOKEN_PROTOCOL: Final = 8192
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


def offered_subprotocols(header: str | None) -> list[str]:
    """The subprotocols a client offered in ``Sec-WebSocket-Protocol`` (comma-separated,
    repeated headers already joined), in its order."""
    if not header:
        return []
    return [name for name in (part.strip() for part in header.split(",")) if name]


def subprotocol_token(header: str | None) -> str | None:
    """The token a client offered as a :data:`TOKEN_PROTOCOL` subprotocol, decoded; ``None``
    when there is none, or it is not base64url of UTF-8 text."""
    for name in offered_subprotocols(header):
        if name.startswith(TOKEN_PROTOCOL) and len(name) <= _MAX_TOKEN_PROTOCOL:
            text = name[len(TOKEN_PROTOCOL) :]
            if not _BASE64URL.fullmatch(text):  # (the decoder would skip stray characters)
                return None
            try:
                return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def choose_subprotocol(header: str | None) -> str | None:
    """The subprotocol to answer with when the application chose none: :data:`SUBPROTOCOL`
    when the client offered it, else ``None`` (no ``Sec-WebSocket-Protocol`` in the 101)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(header) else None
