"""The echo path over real sockets: one whole frame per read (the reader's shortcut, for 7-bit
and 16-bit lengths), the reply written as soon as the read is handled, and its limits."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from wsclient import RawClient, echo_app, masked

from plezi.protocol.frames import OP_BINARY, OP_TEXT

M = b"\x01\x82\xfe\x7f"

# Around the 7-bit / 16-bit / 64-bit length boundaries of the frame header.
SIZES = [0, 1, 125, 126, 127, 4096, 65535, 65536, 70000]


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return masked(opcode, payload, fin=fin, mask=M)


def header_size(n: int) -> int:
    return 2 if n < 126 else 4 if n < 65536 else 10


@pytest.mark.parametrize("n", SIZES)
def test_echo_of_every_header_size_one_frame_per_send(serve: Any, n: int) -> None:
    running = serve(echo_app())
    text = ("é" * n)[: n // 2] + "x" * (n - 2 * (n // 2))  # n bytes of UTF-8
    assert len(text.encode()) == n
    data = os.urandom(n)
    with RawClient(running.port) as client:
        for _ in range(3):  # the reader is reused after the shortcut
            client.send_raw(frame(OP_TEXT, text.encode()))
            reply = client.recv_message()
            assert (reply.fin, reply.text) == (True, text)
            client.send_raw(frame(OP_BINARY, data))
            reply = client.recv_message()
            assert (reply.fin, reply.opcode, reply.payload) == (True, OP_BINARY, data)
        # The reply frames use the shortest length encoding: nothing else is on the wire.
        client.send_raw(frame(OP_BINARY, data))
        expected = header_size(n) + n
        got = b""
        while len(got) < expected:
            got += client.sock.recv(1 << 20)
        assert len(got) == expected
        assert got[header_size(n) :] == data


def test_pipelined_and_split_16_bit_frames_keep_their_order(serve: Any) -> None:
    running = serve(echo_app())
    messages = [os.urandom(n) for n in (300, 4096, 20, 65535, 126)]
    stream = b"".join(frame(OP_BINARY, m) for m in messages)
    with RawClient(running.port) as client:
        client.send_raw(stream)  # all at once
        assert [client.recv_message().payload for _ in messages] == messages
        one = frame(OP_BINARY, messages[1])
        client.send_raw(one[:3])  # inside the 16-bit length
        client.send_raw(one[3:2000])
        client.send_raw(one[2000:] + frame(OP_TEXT, b"after"))
        assert client.recv_message().payload == messages[1]
        assert client.recv_message().text == "after"


def test_invalid_utf8_in_a_16_bit_text_frame_is_1007(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(echo_app())
    with RawClient(running.port) as client:
        client.send_raw(frame(OP_TEXT, b"ok" * 100))
        assert client.recv_message().text == "ok" * 100
        client.send_raw(frame(OP_TEXT, b"x" * 4000 + b"\xff" + b"x" * 95))
        assert client.recv_close() == 1007
        assert client.wait_eof() == b""
    assert any("invalid UTF-8" in r.getMessage() for r in caplog.records if r.name == "plezi")
