"""permessage-deflate on the native server, over real sockets: the handshake, compressed messages
both ways (a raw client that reads the wire, and the ``websockets`` client with compression on),
published messages compressed once for all compressing subscribers, the settings, bad input."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

import plezi
from helpers import UNIT, Running, app_of, wait_for
from plezi.protocol.frames import OP_BINARY, OP_CLOSE, OP_TEXT, encode_frame
from plezi.pubsub import channels
from plezi.pubsub.hub import hub

OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium sends
MASK = b"wxyz"
CHAT = json.dumps(
    {
        "type": "message",
        "room": "lobby",
        "user": {"id": 48213, "name": "Ada", "avatar": "https://cdn.example.com/a/48213.png"},
        "text": "Has anyone tried the new build? " * 4,
        "sent_at": "2026-12-04T20:15:07.123Z",
    }
)


class DeflateClient:
    """A raw WebSocket client that offers ``extensions`` and reads frames as they are on the
    wire (RSV1 included), inflating compressed ones itself with ``zlib``."""

    def __init__(self, port: int, path: str = "/", extensions: str | None = OFFER) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions is not None else ""
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"EOF during the handshake: {self.buf!r}"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        assert self.head.startswith("HTTP/1.1 101"), self.head
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in self.head.split("\r\n")[1:])
        }
        #: Bytes received in data frames (headers included), as on the wire.
        self.wire = 0

    @property
    def extensions(self) -> str | None:
        return self.headers.get("sec-websocket-extensions")

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def frame(self) -> tuple[int, bytes]:
        """(first byte, payload) of the next frame."""
        self._fill(2)
        n, start = self.buf[1] & 0x7F, 2
        assert not self.buf[1] & 0x80, "masked server frame"
        if n == 126:
            self._fill(4)
            n, start = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            self._fill(10)
            n, start = struct.unpack_from("!Q", self.buf, 2)[0], 10
        self._fill(start + n)
        b0, payload = self.buf[0], self.buf[start : start + n]
        self.buf = self.buf[start + n :]
        if b0 & 0x0F in (OP_TEXT, OP_BINARY):
            self.wire += start + n
        return b0, payload

    def message(self) -> tuple[bool, str | bytes]:
        """(was it compressed, the message) of the next data frame (whole messages only)."""
        b0, payload = self.frame()
        assert b0 & 0x80, "fragmented"
        assert not b0 & 0x30, "RSV2/RSV3 set"
        compressed = bool(b0 & 0x40)
        if compressed:
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        return compressed, payload.decode() if b0 & 0x0F == OP_TEXT else payload

    def send(self, opcode: int, payload: bytes, *, rsv: int = 0, fin: bool = True) -> None:
        self.sock.sendall(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK))

    def close_code(self) -> int:
        """The code of the next close frame (data frames before it are skipped)."""
        while True:
            b0, payload = self.frame()
            if b0 & 0x0F == OP_CLOSE:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DeflateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


class Echo:
    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


class Room:
    """Subscribes to "room" (as published, or as binary with ``?binary``), says "ready", and
    publishes what it is sent."""

    def on_open(self) -> None:
        binary = "binary" in self.params  # type: ignore[attr-defined]
        self.subscribe("room", binary=binary)  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        plezi.publish("room", data)


def chat_app() -> plezi.App:
    return app_of(("/room", Room), ("/", Echo))


def ready(client: DeflateClient) -> DeflateClient:
    assert client.message() == (False, "ready")  # 5 bytes: never compressed
    return client


# -- the handshake ----------------------------------------------------------------------------


def test_offer_accepted_and_messages_compressed_both_ways(serve: Callable[..., Running]) -> None:
    running = serve(chat_app())
    with DeflateClient(running.port) as client:
        assert client.extensions == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        client.send(OP_TEXT, deflated(CHAT.encode()), rsv=4)  # compressed in
        assert client.message() == (True, CHAT)  # compressed out
        client.send(OP_TEXT, b"short")  # uncompressed in
        assert client.message() == (False, "short")  # too short to compress
        blob = bytes(range(256)) * 8
        client.send(OP_BINARY, deflated(blob), rsv=4)
        assert client.message() == (True, blob)


@pytest.mark.parametrize(
    "offer",
    [
        None,
        "permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=99",
        "x-webkit-deflate-frame",
        "permessage-deflate;;;",
    ],
)
def test_no_or_bad_offer_opens_without_compression(
    serve: Callable[..., Running], offer: str | None
) -> None:
    running = serve(chat_app())
    with DeflateClient(running.port, extensions=offer) as client:
        assert client.extensions is None
        client.send(OP_TEXT, CHAT.encode())
        assert client.message() == (False, CHAT)
        # RSV1 without the extension is a protocol error
        client.send(OP_TEXT, deflated(CHAT.encode()), rsv=4)
        assert client.close_code() == 1002


def test_compression_off(serve: Callable[..., Running]) -> None:
    running = serve(chat_app(), compression="off")
    with DeflateClient(running.port) as client:
        assert client.extensions is None
        client.send(OP_TEXT, CHAT.encode())
        assert client.message() == (False, CHAT)


def test_a_limited_server_window_is_answered_and_honoured(serve: Callable[..., Running]) -> None:
    running = serve(chat_app())
    offer = "permessage-deflate; server_max_window_bits=9"
    with DeflateClient(running.port, extensions=offer) as client:
        assert client.extensions is not None
        assert client.extensions.endswith("; server_max_window_bits=9")
        text = CHAT * 8  # longer than the 512-byte window
        client.send(OP_TEXT, text.encode())
        b0, payload = client.frame()
        assert b0 == 0xC1
        assert zlib.decompressobj(-9).decompress(payload + b"\x00\x00\xff\xff") == text.encode()


# -- bad compressed input ---------------------------------------------------------------------


def test_bad_compressed_data_closes_1007(serve: Callable[..., Running]) -> None:
    running = serve(chat_app())
    with DeflateClient(running.port) as client:
        client.send(OP_TEXT, b"\xff\xff\xff\xff", rsv=4)
        assert client.close_code() == 1007


def test_zip_bomb_closes_1009_and_the_server_goes_on(serve: Callable[..., Running]) -> None:
    running = serve(chat_app(), max_message_size=64 * 1024)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
    with DeflateClient(running.port) as client:
        client.send(OP_BINARY, bomb[:-4], rsv=4)  # 64 MiB inflated, ~64 KiB on the wire
        assert client.close_code() == 1009
    with DeflateClient(running.port) as client:
        client.send(OP_TEXT, deflated(CHAT.encode()), rsv=4)
        assert client.message() == (True, CHAT)


# -- published messages -----------------------------------------------------------------------


def test_published_message_compressed_once_same_bytes_to_every_compressing_subscriber(
    serve: Callable[..., Running],
) -> None:
    running = serve(chat_app())
    compressing = [ready(DeflateClient(running.port, "/room")) for _ in range(3)]
    plain = ready(DeflateClient(running.port, "/room", extensions=None))
    binary = ready(DeflateClient(running.port, "/room?binary=1"))
    try:
        wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 5, "5 subscribers")
        plain.send(OP_TEXT, CHAT.encode())
        frames = [client.frame() for client in compressing]
        assert frames[0][0] == 0xC1
        assert frames[1] == frames[0] and frames[2] == frames[0]  # the very same bytes
        inflated = zlib.decompressobj(-15).decompress(frames[0][1] + b"\x00\x00\xff\xff")
        assert inflated == CHAT.encode()
        assert len(frames[0][1]) < len(CHAT) * 0.6
        assert plain.message() == (False, CHAT)  # the plain frame for the plain subscriber
        assert binary.message() == (True, CHAT.encode())  # forced binary, compressed
        # short messages go uncompressed to everyone
        plain.send(OP_TEXT, b"hi")
        for client in [*compressing, plain, binary]:
            assert client.message()[0] is False
    finally:
        for client in [*compressing, plain, binary]:
            client.close()
    wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 0, "no subscriber")


def test_a_compressing_subscriber_of_a_channel_with_history_gets_positions(
    serve: Callable[..., Running],
) -> None:
    """The compressed frame is built from what clients receive, ``"_pos"`` included: a browser
    (which always offers compression) must see positions to recover."""
    plezi.channel("room", history=10)
    try:
        running = serve(chat_app())
        with (
            ready(DeflateClient(running.port, "/room")) as client,
            ready(DeflateClient(running.port, "/room", extensions=None)) as plain,
        ):
            wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 2, "2 subscribers")
            plain.send(OP_TEXT, CHAT.encode())
            compressed, text = client.message()
            assert compressed
            _, plain_text = plain.message()
            assert text == plain_text  # the same message, position and all, either way
            received = json.loads(text)
            assert received["_pos"]["channel"] == "room" and received["_pos"]["offset"] == 1
            assert {k: v for k, v in received.items() if k != "_pos"} == json.loads(CHAT)
    finally:
        channels.clear()


def test_compression_for_broadcasts_only(serve: Callable[..., Running]) -> None:
    running = serve(chat_app(), compression="broadcasts")
    with ready(DeflateClient(running.port, "/room")) as client:
        assert client.extensions is not None
        client.send(OP_TEXT, deflated(CHAT.encode()), rsv=4)  # compressed input still reads
        assert client.message() == (True, CHAT)  # published: compressed
    with DeflateClient(running.port, "/") as client:
        client.send(OP_TEXT, CHAT.encode())
        assert client.message() == (False, CHAT)  # its own write: not compressed
    wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 0, "no subscriber")


def test_write_to_is_compressed(serve: Callable[..., Running]) -> None:
    class Direct:
        def on_message(self, data: Any) -> None:
            plezi.write_to(self.id, data)  # type: ignore[attr-defined]

    running = serve(app_of(("/", Direct)))
    with DeflateClient(running.port) as client:
        client.send(OP_TEXT, CHAT.encode())
        assert client.message() == (True, CHAT)


# -- the websockets client with compression on -------------------------------------------------


def test_websockets_client_with_compression(serve: Callable[..., Running]) -> None:
    running = serve(chat_app())
    with ws_connect(
        running.ws_url + "/room",
        proxy=None,
        compression="deflate",
        open_timeout=5 * UNIT,
        close_timeout=5 * UNIT,
    ) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert ws.recv(timeout=5 * UNIT) == "ready"
        for i in range(20):  # the client compresses with context takeover unless told not to
            text = f"{CHAT} #{i}"
            ws.send(text)
            assert ws.recv(timeout=5 * UNIT) == text
        big = os.urandom(100_000)
        ws.send(big)
        assert ws.recv(timeout=5 * UNIT) == big
    wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 0, "no subscriber")


def test_wire_bytes_of_a_repetitive_json_feed(serve: Callable[..., Running]) -> None:
    """A price feed (300-byte JSON arrays of the same keys) costs under a third on the wire."""
    running = serve(chat_app())
    rows = [{"sym": f"S{i:02}", "bid": 101.25 + i, "ask": 101.5 + i, "vol": 1000} for i in range(6)]
    feed = json.dumps(rows)
    assert 250 < len(feed) < 400
    with ready(DeflateClient(running.port, "/room")) as client:
        client.wire = 0
        started = time.monotonic()
        for _ in range(10):
            client.send(OP_TEXT, feed.encode())
            assert client.message() == (True, feed)
        assert client.wire <= 10 * (len(feed) + 4) / 3, client.wire
        assert time.monotonic() - started < 30 * UNIT
    wait_for(lambda: running.call(lambda: hub.registry.count("room")) == 0, "no subscriber")


# -- the setting --------------------------------------------------------------------------------


def test_the_setting_from_flags_and_keywords() -> None:
    from plezi.config import ServerConfig
    from plezi.errors import ConfigError
    from plezi.launch.flags import config_from_args

    assert ServerConfig().compression == "on"
    assert config_from_args(["--compression", "off"]).compression == "off"
    assert config_from_args([], compression="broadcasts").compression == "broadcasts"
    with pytest.raises(SystemExit):
        config_from_args(["--compression", "maybe"])
    with pytest.raises(ConfigError, match="compression must be"):
        ServerConfig(compression="gzip")
