"""A published message, encoded once per process and framed at most twice (text, binary)."""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson

from ..protocol.deflate import compressed_frame
from ..protocol.frames import OP_BINARY, OP_TEXT, encode_frame
from ..protocol.sse import sse_event

log = logging.getLogger("plezi")
#: ``Message._sse`` before the event was built (``None`` is an answer: "no event").
_UNSET: Final[Any] = object()

__all__ = ["DIRECT_PREFIX", "Message", "encode_payload"]

#: Channels starting with this carry a message for one connection; users cannot publish there.
DIRECT_PREFIX = "\x00to:"


def encode_payload(data: Any) -> tuple[bytes, bool]:
    """``(payload, is_text)`` for what :func:`plezi.publish` accepts.

    ``str`` -> UTF-8 text; bytes-like -> binary; ``dict``/``list`` -> JSON text.
    """
    if isinstance(data, str):
        return data.encode(), True
    if isinstance(data, bytes):
        return data, False
    if isinstance(data, bytearray | memoryview):
        return bytes(data), False
    if isinstance(data, dict | list):
        return orjson.dumps(data), True
    raise TypeError(f"cannot publish {type(data).__name__}: use str, bytes, dict or list")


class Message:
    """One published message as this process sees it.

    PERF: the WebSocket frame is built on first use and cached, so a message published to a
    thousand subscribers is framed once and the same ``bytes`` object is written to each.
    """

    __slots__ = (
        "_binary_frame",
        "_deflated",
        "_sse",
        "_text_frame",
        "_value",
        "channel",
        "is_text",
        "payload",
    )

    def __init__(self, channel: str, payload: bytes, is_text: bool) -> None:
        self.channel = channel
        self.payload = payload
        self.is_text = is_text
        self._text_frame: bytes | None = None
        self._binary_frame: bytes | None = None
        self._value: str | bytes | None = None
        self._sse: bytes | None = _UNSET
        #: permessage-deflate frames, (text-or-as-published, binary), built on first use.
        self._deflated: list[bytes | None] | None = None

    @classmethod
    def of(cls, channel: str, data: Any) -> Message:
        """A message from any publishable value."""
        payload, is_text = encode_payload(data)
        return cls(channel, payload, is_text)

    @property
    def value(self) -> str | bytes:
        """``str`` for a text message, ``bytes`` for a binary one (what handlers receive)."""
        value = self._value
        if value is None:
            value = self._value = self.payload.decode() if self.is_text else self.payload
        return value

    def frame(self, force_binary: bool = False) -> bytes:
        """The server-to-client frame of :attr:`wire`: text or binary as published, or binary
        when forced."""
        if self.is_text and not force_binary:
            frame = self._text_frame
            if frame is None:
                frame = self._text_frame = encode_frame(OP_TEXT, self.wire)
            return frame
        frame = self._binary_frame
        if frame is None:
            frame = self._binary_frame = encode_frame(OP_BINARY, self.wire)
        return frame

    @property
    def wire(self) -> bytes:
        """The payload as clients receive it: :attr:`payload` here; a subclass may add to it
        (a message with a position carries it in ``"_pos"``), and every frame is built from it."""
        return self.payload

    def deflated_frame(self, force_binary: bool = False) -> bytes:
        """The frame for subscribers that negotiated ``permessage-deflate``: the message
        compressed once, on its own (no context takeover), for all of them; the plain
        :meth:`frame` (the same bytes) when it is too short to gain from it, or does not shrink."""
        cache = self._deflated
        if cache is None:
            cache = self._deflated = [None, None]
        binary = force_binary or not self.is_text
        frame = cache[binary]
        if frame is None:
            frame = compressed_frame(OP_BINARY if binary else OP_TEXT, self.wire)
            frame = cache[binary] = frame if frame is not None else self.frame(force_binary)
        return frame

    def sse_frame(self) -> bytes | None:
        """The Server-Sent Events event that carries this message (built once, like the
        WebSocket frame): its text (JSON for a ``dict`` or ``list``); a binary message's bytes
        decoded as UTF-8; ``None`` (with a log line) when they are not UTF-8."""
        event = self._sse
        if event is _UNSET:
            value = self.value
            if isinstance(value, str):
                event = sse_event(value)
            else:
                try:
                    event = sse_event(value.decode())
                except UnicodeDecodeError:
                    log.info(
                        "pub/sub: a binary message on %r is not UTF-8; not sent to SSE subscribers",
                        self.channel,
                    )
                    event = None
            self._sse = event
        return event

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"<Message {self.channel!r} {kind} {len(self.payload)} bytes>"
