"""Short-lived signed tokens (``plezi.tokens(secret=...)``), for WebSockets above all.

A browser cannot set an ``Authorization`` header on a WebSocket; the browser client sends its
token in ``Sec-WebSocket-Protocol`` instead (see :mod:`plezi.protocol.handshake`) and
``pre_connect`` reads it as ``self.token``. Such a token should prove something for a short
while only: the page gets one from an authenticated HTTP action, the WebSocket presents it.

Format: ``<payload>.<signature>``, both base64url without padding; the payload is the JSON
``{"d": data, "exp": unix time}`` (orjson), the signature HMAC-SHA256 of the payload's text
with the secret. :meth:`Tokens.verify` compares signatures in constant time
(:func:`hmac.compare_digest`) before it parses anything, then checks the expiry. A refused
token is logged with the reason and never with its value (a client can make us log at will:
throttled, one line a second).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from typing import Any, Final

import orjson

from ..throttle import LogThrottle

__all__ = ["MAX_TOKEN", "Tokens"]

log = logging.getLogger("plezi")

#: The longest token :meth:`Tokens.verify` reads (a longer one is refused unread).
MAX_TOKEN: Final = 4096
_MIN_SECRET = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Signs and verifies short-lived tokens with one secret (see the module docstring).

    ``secret``: at least 16 bytes (32 random bytes are best: ``secrets.token_bytes(32)``),
    the same in every process that verifies. ``ttl``: the default lifetime in seconds.
    """

    __slots__ = ("_key", "_throttle", "ttl")

    def __init__(self, secret: str | bytes, *, ttl: float = 60.0) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < _MIN_SECRET:
            raise ValueError(f"a token secret needs at least {_MIN_SECRET} bytes")
        if not ttl > 0:
            raise ValueError("a token's ttl must be a positive number of seconds")
        self._key = key
        self.ttl = ttl
        self._throttle = LogThrottle()

    def _signature(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def sign(self, data: Any, *, ttl: float | None = None) -> str:
        """A token that carries ``data`` (anything JSON can hold but ``None``: a user id, a
        dict) for ``ttl`` seconds (default: the signer's)."""
        if data is None:
            raise ValueError("a token must carry some data (verify() answers None for a bad one)")
        expires = time.time() + (self.ttl if ttl is None else ttl)
        payload = _b64(orjson.dumps({"d": data, "exp": expires}))
        return f"{payload}.{self._signature(payload)}"

    def verify(self, token: str | None) -> Any:
        """The data of a valid token that has not expired, else ``None`` (with a log line that
        says why, never what the token was)."""
        if not token:
            return None
        payload, dot, signature = token.partition(".")
        if len(token) > MAX_TOKEN or not dot or not payload.isascii():
            return self._refuse("malformed")
        if not hmac.compare_digest(self._signature(payload), signature):
            return self._refuse("bad signature")
        try:
            content = orjson.loads(_unb64(payload))
            data, expires = content["d"], float(content["exp"])
        except (ValueError, binascii.Error, TypeError, KeyError):
            return self._refuse("malformed")
        if time.time() >= expires:
            return self._refuse("expired")
        return data

    def _refuse(self, reason: str) -> None:
        self._throttle.log(log, logging.INFO, "token refused: %s", reason)
        return None
