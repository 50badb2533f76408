"""A published message compressed once for every permessage-deflate subscriber: the cache on
``Message`` and the registry's choice of frame per subscriber."""

from __future__ import annotations

import json
import zlib

from plezi.pubsub.message import Message
from plezi.pubsub.registry import Registry

CHAT = json.dumps({"user": "ada", "room": "lobby", "text": "hello, everyone " * 12})


def inflate(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4
    return zlib.decompressobj(-15).decompress(frame[start:] + b"\x00\x00\xff\xff")


def test_deflated_frame_is_built_once_per_kind() -> None:
    message = Message.of("room", CHAT)
    text = message.deflated_frame()
    assert text[0] == 0xC1 and inflate(text) == CHAT.encode()
    assert message.deflated_frame() is text
    binary = message.deflated_frame(True)
    assert binary[0] == 0xC2 and inflate(binary) == CHAT.encode()
    assert message.deflated_frame(True) is binary
    assert message.frame()[0] == 0x81  # the plain frame is unchanged


def test_short_or_incompressible_messages_share_the_plain_frame() -> None:
    short = Message.of("room", "hi")
    assert short.deflated_frame() is short.frame()
    noise = Message.of("room", zlib.compress(CHAT.encode() * 9))  # already compressed
    assert noise.deflated_frame() is noise.frame()


class Sub:
    def __init__(self, deflate: bool) -> None:
        self.deflate_broadcasts = deflate
        self.frames: list[bytes] = []

    def queue_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def run_handler(self, handler: object, message: Message) -> None:
        raise AssertionError("no handler here")


def test_registry_gives_each_subscriber_its_frame() -> None:
    registry = Registry()
    compressing = [Sub(True), Sub(True)]
    plain = Sub(False)
    binary = Sub(True)
    for sub in [*compressing, plain]:
        registry.forward("room", sub)
    registry.forward("room", binary, binary=True)
    assert registry.count("room") == 4
    message = Message.of("room", CHAT)
    assert registry.deliver(message) == 4
    assert compressing[0].frames == compressing[1].frames == [message.deflated_frame()]
    assert compressing[0].frames[0] is compressing[1].frames[0]  # the same bytes object
    assert plain.frames == [message.frame()]
    assert binary.frames == [message.deflated_frame(True)]
    # resubscribing and leaving work for the compressing kind too
    registry.forward("room", compressing[0])
    assert registry.count("room") == 4
    for sub in [*compressing, plain, binary]:
        assert registry.remove("room", sub)
    assert registry.names() == ([], [])
