"""Malformed client input over raw sockets: the right close code, then TCP closed, a log line, and
the server keeps serving everyone else."""

from __future__ import annotations

import logging
import struct
from typing import Any

import pytest
from wsclient import MASK as M
from wsclient import RawClient, connect, echo_app, masked

from helpers import UNIT
from plezi.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
)

frame = masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@pytest.fixture
def echo_server(serve: Any) -> Any:
    return serve(echo_app())


MALFORMED = [
    ("unmasked", frame(OP_TEXT, b"hello", mask=None), 1002, "unmasked"),
    ("reserved-opcode-3", frame(3, b"x"), 1002, "reserved opcode"),
    ("reserved-opcode-11", frame(11, b"x"), 1002, "reserved opcode"),
    ("rsv1", frame(OP_TEXT, b"x", rsv=4), 1002, "reserved bits"),
    ("rsv3", frame(OP_BINARY, b"x", rsv=1), 1002, "reserved bits"),
    ("fragmented-ping", frame(OP_PING, b"x", fin=False), 1002, "fragmented control"),
    (
        "fragmented-close",
        frame(OP_CLOSE, close_payload(1000), fin=False),
        1002,
        "fragmented control",
    ),
    ("ping-126", frame(OP_PING, b"p" * 126), 1002, "control frame"),
    ("pong-200", frame(OP_PONG, b"p" * 200), 1002, "control frame"),
    ("close-126", frame(OP_CLOSE, close_payload(1000, b"r" * 124)), 1002, "control frame"),
    ("cont-without-start", frame(OP_CONT, b"x"), 1002, "continuation"),
    (
        "text-inside-fragmented",
        frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
        1002,
        "fragmented message",
    ),
    ("invalid-utf8", frame(OP_TEXT, b"\xff\xfe"), 1007, "UTF-8"),
    ("overlong-utf8", frame(OP_TEXT, b"\xc0\xaf"), 1007, "UTF-8"),
    ("surrogate-utf8", frame(OP_TEXT, b"\xed\xa0\x80"), 1007, "UTF-8"),
    ("truncated-utf8", frame(OP_TEXT, "✓".encode()[:2]), 1007, "UTF-8"),
    (
        "fragmented-invalid-utf8-final",
        frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONT, b"\xff"),
        1007,
        "UTF-8",
    ),
    ("close-999", frame(OP_CLOSE, close_payload(999)), 1002, "close code"),
    ("close-1004", frame(OP_CLOSE, close_payload(1004)), 1002, "close code"),
    ("close-1005", frame(OP_CLOSE, close_payload(1005)), 1002, "close code"),
    ("close-1006", frame(OP_CLOSE, close_payload(1006)), 1002, "close code"),
    ("close-1015", frame(OP_CLOSE, close_payload(1015)), 1002, "close code"),
    ("close-2000", frame(OP_CLOSE, close_payload(2000)), 1002, "close code"),
    ("close-5000", frame(OP_CLOSE, close_payload(5000)), 1002, "close code"),
    ("close-1-byte", frame(OP_CLOSE, b"\x03"), 1002, "1 byte"),
    ("close-invalid-utf8-reason", frame(OP_CLOSE, close_payload(1000, b"\xff")), 1007, "UTF-8"),
    ("64-bit-length-msb", b"\x82\xff" + b"\x80" + b"\x00" * 7 + M, 1002, "most significant"),
]


@pytest.mark.parametrize(
    ("data", "code", "logged"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_fails_the_connection(
    echo_server: Any, caplog: pytest.LogCaptureFixture, data: bytes, code: int, logged: str
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    with RawClient(echo_server.port) as bad, connect(echo_server.ws_url + "/") as good:
        # A valid message first: the connection is fine until the bad frame.
        bad.send_text("before")
        assert bad.recv_message().text == "before"
        bad.send_raw(data)
        assert bad.recv_close() == code
        assert bad.wait_eof() == b""
        # Everyone else is unaffected, and new connections are accepted.
        good.send("still serving")
        assert good.recv(timeout=5 * UNIT) == "still serving"
    with connect(echo_server.ws_url + "/") as fresh:
        fresh.send("new")
        assert fresh.recv(timeout=5 * UNIT) == "new"
    lines = [r.getMessage() for r in caplog.records if r.name == "plezi"]
    assert any(logged.lower() in line.lower() and str(code) in line for line in lines), lines


def test_invalid_utf8_in_a_fragmented_message_fails_before_the_final_fragment(
    echo_server: Any,
) -> None:
    """Fail fast: the invalid fragment is refused as soon as it is complete; the client never has
    to send the final fragment."""
    with RawClient(echo_server.port) as bad:
        bad.send_raw(frame(OP_TEXT, b"valid start ", fin=False))
        bad.send_raw(frame(OP_CONT, b"then \xff junk", fin=False))
        assert bad.recv_close() == 1007
        assert bad.wait_eof() == b""


def test_invalid_utf8_in_the_first_fragment_fails_at_once(echo_server: Any) -> None:
    with RawClient(echo_server.port) as bad:
        bad.send_raw(frame(OP_TEXT, b"\xc3\x28", fin=False))
        assert bad.recv_close() == 1007
        assert bad.wait_eof() == b""


def test_a_surrogate_split_across_fragments_fails_before_the_final_fragment(
    echo_server: Any,
) -> None:
    with RawClient(echo_server.port) as bad:
        bad.send_raw(frame(OP_TEXT, b"ab\xed", fin=False))
        bad.send_raw(frame(OP_CONT, b"\xa0", fin=False))
        assert bad.recv_close() == 1007
        assert bad.wait_eof() == b""


def test_a_malformed_frame_after_the_upgrade_in_the_same_packet(echo_server: Any) -> None:
    with RawClient(echo_server.port, extra=frame(OP_TEXT, b"x", mask=None)) as bad:
        assert bad.recv_close() == 1002
        assert bad.wait_eof() == b""


def test_a_malformed_frame_sent_byte_by_byte(echo_server: Any) -> None:
    with RawClient(echo_server.port) as bad:
        for byte in frame(OP_TEXT, b"ok \xff"):
            bad.send_raw(bytes([byte]))
        assert bad.recv_close() == 1007
        assert bad.wait_eof() == b""


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_a_valid_close_is_echoed_with_the_same_code(echo_server: Any, code: int) -> None:
    with RawClient(echo_server.port) as client:
        client.send_close(code, "bye ✓".encode())
        assert client.recv_close() == code
        assert client.wait_eof() == b""


def test_an_empty_close_is_answered_and_tcp_closed(echo_server: Any) -> None:
    with RawClient(echo_server.port) as client:
        client.send_close(None)
        frame_ = client.recv_frame()
        assert frame_.opcode == OP_CLOSE
        assert frame_.close_code in (None, 1000)
        assert client.wait_eof() == b""


def test_messages_before_a_close_in_the_same_packet_are_delivered(echo_server: Any) -> None:
    with RawClient(echo_server.port) as client:
        client.send_raw(
            frame(OP_TEXT, b"one")
            + frame(OP_BINARY, b"two")
            + frame(OP_CLOSE, close_payload(1000))
            + frame(OP_TEXT, b"ignored")
        )
        assert client.recv_message().text == "one"
        assert client.recv_message().payload == b"two"
        assert client.recv_close() == 1000
        assert client.wait_eof() == b""


def test_ping_is_answered_with_the_same_payload(echo_server: Any) -> None:
    with RawClient(echo_server.port) as client:
        client.send_raw(frame(OP_PING, b"are you there?"))
        pong = client.recv_frame()
        assert pong.opcode == OP_PONG
        assert pong.payload == b"are you there?"
        # A ping in the middle of a fragmented message is allowed.
        client.send_raw(
            frame(OP_TEXT, b"frag", fin=False) + frame(OP_PING, b"mid") + frame(OP_CONT, b"mented")
        )
        pong = client.recv_frame()
        assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
        assert client.recv_message().text == "fragmented"
        # An unsolicited pong is ignored.
        client.send_raw(frame(OP_PONG, b"unsolicited") + frame(OP_TEXT, b"after"))
        assert client.recv_message().text == "after"


def test_garbage_instead_of_frames(echo_server: Any) -> None:
    with RawClient(echo_server.port) as bad:
        bad.send_raw(b"GET / HTTP/1.1\r\n\r\n")  # 'G' = 0x47: RSV bits and a reserved opcode
        assert bad.recv_close() == 1002
        assert bad.wait_eof() == b""
