"""WebSocketReader, byte for byte: RFC examples, every error rule, splits, fragmentation."""

from __future__ import annotations

import gc
import os
import struct

import pytest

import helpers
from plezi.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WebSocketReader,
    encode_frame,
)
from plezi.protocol.reader import _TURN_STEP, MAX_EMPTY_FRAGMENTS

Event = tuple[object, ...]

MASK = bytes.fromhex("37fa213d")


class Recorder(helpers.Recorder):
    """Errors recorded by their code alone: what these tests check."""

    error_reasons = False


def reader(**kwargs: object) -> tuple[WebSocketReader, Recorder]:
    rec = Recorder()
    return WebSocketReader(rec, **kwargs), rec  # type: ignore[arg-type]


def parse(*chunks: bytes, **kwargs: object) -> list[Event]:
    rd, rec = reader(**kwargs)
    for chunk in chunks:
        rd.feed(chunk)
    return rec.events


def cf(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked (client) frame."""
    return encode_frame(opcode, payload, fin=fin, mask=MASK, rsv=rsv)


def sf(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """An unmasked (server) frame."""
    return encode_frame(opcode, payload, fin=fin)


# -- RFC 6455 section 5.7 examples ------------------------------------------------------


def test_rfc_masked_hello() -> None:
    assert parse(bytes.fromhex("818537fa213d7f9f4d5158")) == [("message", "Hello")]


def test_rfc_unmasked_hello_client_side() -> None:
    assert parse(bytes.fromhex("810548656c6c6f"), require_mask=False) == [("message", "Hello")]


def test_rfc_fragmented_hello_client_side() -> None:
    events = parse(bytes.fromhex("010348656c"), bytes.fromhex("80026c6f"), require_mask=False)
    assert events == [("message", "Hello")]


def test_rfc_ping_and_masked_pong() -> None:
    assert parse(bytes.fromhex("890548656c6c6f"), require_mask=False) == [("ping", b"Hello")]
    assert parse(bytes.fromhex("8a8537fa213d7f9f4d5158")) == [("pong", b"Hello")]


@pytest.mark.parametrize("n", [256, 65536])
def test_rfc_long_binary(n: int) -> None:
    data = os.urandom(n)
    frame = cf(OP_BINARY, data)
    assert frame[:2] == (b"\x82\xfe" if n == 256 else b"\x82\xff")
    assert parse(frame) == [("message", data)]
    assert parse(sf(OP_BINARY, data), require_mask=False) == [("message", data)]


# -- basic messages ---------------------------------------------------------------------


def test_message_types() -> None:
    events = parse(cf(OP_TEXT, "héllo €".encode()) + cf(OP_BINARY, b"\x00\xff"))
    assert events == [("message", "héllo €"), ("message", b"\x00\xff")]
    assert type(events[0][1]) is str
    assert type(events[1][1]) is bytes


def test_empty_messages() -> None:
    events = parse(cf(OP_TEXT) + cf(OP_BINARY) + cf(OP_PING) + cf(OP_PONG))
    assert events == [("message", ""), ("message", b""), ("ping", b""), ("pong", b"")]


@pytest.mark.parametrize("n", [1, 125, 126, 127, 8191, 8192, 8193, 20000, 65535, 65536])
def test_payload_sizes(n: int) -> None:
    data = os.urandom(n)
    text = "x" * n
    assert parse(cf(OP_BINARY, data)) == [("message", data)]
    assert parse(cf(OP_TEXT, text.encode())) == [("message", text)]
    # Same sizes inside a pipelined chunk (general parsing loop, not the shortcut).
    assert parse(cf(OP_PING) + cf(OP_BINARY, data)) == [("ping", b""), ("message", data)]


def test_payloads_are_bytes_for_every_input_type() -> None:
    stream = cf(OP_BINARY, b"abc") + cf(OP_PING, b"p") + cf(OP_BINARY, os.urandom(9000))
    for kind in (bytes, bytearray, memoryview):
        rd, rec = reader()
        rd.feed(kind(stream))
        assert [type(e[1]) for e in rec.events] == [bytes, bytes, bytes]
    client_stream = sf(OP_BINARY, b"abc") + sf(OP_PONG, b"q")
    for kind in (bytes, bytearray, memoryview):
        rd, rec = reader(require_mask=False)
        rd.feed(kind(client_stream))
        assert rec.events == [("message", b"abc"), ("pong", b"q")]
        assert [type(e[1]) for e in rec.events] == [bytes, bytes]


def test_input_buffer_may_be_reused_by_the_caller() -> None:
    stream = cf(OP_BINARY, b"first") + cf(OP_TEXT, b"second")
    rd, rec = reader()
    chunk = bytearray(stream[:9])
    rd.feed(chunk)
    chunk[:] = b"\x00" * len(chunk)  # the caller recycles its receive buffer
    rd.feed(bytearray(stream[9:]))
    assert rec.events == [("message", b"first"), ("message", "second")]


def test_multidimensional_memoryview_input() -> None:
    frame = cf(OP_BINARY, b"abcd" * 4)  # 22 bytes
    view = memoryview(frame[:20]).cast("B", (4, 5))
    rd, rec = reader()
    rd.feed(view)
    rd.feed(frame[20:])
    assert rec.events == [("message", b"abcd" * 4)]


def test_non_byte_memoryview_input() -> None:
    frame = cf(OP_BINARY, b"ab")  # 8 bytes
    rd, rec = reader()
    rd.feed(memoryview(frame).cast("I"))
    assert rec.events == [("message", b"ab")]


def test_feed_empty_is_a_no_op() -> None:
    rd, rec = reader()
    rd.feed(b"")
    rd.feed(cf(OP_TEXT, b"hi")[:3])
    rd.feed(b"")
    rd.feed(cf(OP_TEXT, b"hi")[3:])
    assert rec.events == [("message", "hi")]


def test_pipelined_frames_in_one_chunk() -> None:
    stream = b"".join(cf(OP_TEXT, str(i).encode()) for i in range(500))
    assert parse(stream) == [("message", str(i)) for i in range(500)]


# -- close frames -----------------------------------------------------------------------


def test_close_without_status() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_CLOSE))
    assert rec.events == [("close", None, "")]
    assert rd.closed


def test_close_with_code_and_reason() -> None:
    assert parse(cf(OP_CLOSE, b"\x03\xe8")) == [("close", 1000, "")]
    payload = (4001).to_bytes(2, "big") + "bye ☃".encode()
    assert parse(cf(OP_CLOSE, payload)) == [("close", 4001, "bye ☃")]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999])
def test_close_valid_codes(code: int) -> None:
    assert parse(cf(OP_CLOSE, code.to_bytes(2, "big"))) == [("close", code, "")]


# -- error rules --------------------------------------------------------------------------

TEXT_START = cf(OP_TEXT, b"Hel", fin=False)
BIN_START = cf(OP_BINARY, b"\x01", fin=False)

ERROR_CASES: list[tuple[str, bytes, int]] = [
    ("rsv1", cf(OP_TEXT, b"x", rsv=4), 1002),
    ("rsv2", cf(OP_TEXT, b"x", rsv=2), 1002),
    ("rsv3", cf(OP_BINARY, b"x", rsv=1), 1002),
    ("rsv on control", cf(OP_PING, b"", rsv=4), 1002),
    ("rsv on continuation", TEXT_START + cf(OP_CONT, b"lo", rsv=2), 1002),
    # The payload would make a valid close frame: a reserved opcode must not pass as one.
    *[
        (f"reserved opcode {op}", cf(op, b"\x03\xe8"), 1002)
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    ],
    ("reserved opcode, empty", cf(11), 1002),
    ("fragmented ping", cf(OP_PING, b"x", fin=False), 1002),
    ("fragmented pong", cf(OP_PONG, b"x", fin=False), 1002),
    ("fragmented close", cf(OP_CLOSE, b"\x03\xe8", fin=False), 1002),
    ("ping 126 bytes", cf(OP_PING, b"x" * 126), 1002),
    ("pong 64 KiB", cf(OP_PONG, b"x" * 65536), 1002),
    ("close 126 bytes", cf(OP_CLOSE, b"\x03\xe8" + b"x" * 124), 1002),
    ("continuation without message", cf(OP_CONT, b"x"), 1002),
    ("final continuation without message", cf(OP_CONT, b""), 1002),
    ("text inside fragmented text", TEXT_START + cf(OP_TEXT, b"lo"), 1002),
    ("binary inside fragmented text", TEXT_START + cf(OP_BINARY, b"lo"), 1002),
    ("text inside fragmented binary", BIN_START + cf(OP_TEXT, b"lo", fin=False), 1002),
    ("continuation after the message ended", TEXT_START + cf(OP_CONT, b"lo") + cf(OP_CONT), 1002),
    ("unmasked text", sf(OP_TEXT, b"Hello"), 1002),
    ("unmasked ping", sf(OP_PING), 1002),
    ("unmasked close", sf(OP_CLOSE), 1002),
    ("unmasked second frame", cf(OP_PING) + sf(OP_TEXT, b"x"), 1002),
    ("64-bit length with MSB", b"\x82\xff" + struct.pack("!Q", 1 << 63) + MASK, 1002),
    ("64-bit length all ones", b"\x82\xff" + b"\xff" * 8 + MASK, 1002),
    ("invalid utf-8", cf(OP_TEXT, b"\xff"), 1007),
    ("truncated utf-8", cf(OP_TEXT, "é".encode()[:1]), 1007),
    ("surrogate in utf-8", cf(OP_TEXT, b"\xed\xa0\x80"), 1007),
    ("overlong utf-8", cf(OP_TEXT, b"\xc0\xaf"), 1007),
    ("code point above U+10FFFF", cf(OP_TEXT, b"\xf4\x90\x80\x80"), 1007),
    ("invalid utf-8 in large text", cf(OP_TEXT, b"a" * 300 + b"\xff"), 1007),
    ("invalid utf-8 in last fragment", TEXT_START + cf(OP_CONT, b"\xff"), 1007),
    ("fragmented text ending mid-character", TEXT_START + cf(OP_CONT, b"\xc3"), 1007),
    ("close payload of 1 byte", cf(OP_CLOSE, b"\x03"), 1002),
    *[
        (f"close code {code}", cf(OP_CLOSE, code.to_bytes(2, "big")), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    ],
    ("close reason invalid utf-8", cf(OP_CLOSE, b"\x03\xe8\xff\xfe"), 1007),
    ("close reason truncated utf-8", cf(OP_CLOSE, b"\x03\xe8" + "€".encode()[:2]), 1007),
    ("message over the limit", cf(OP_BINARY, b"x" * (2**20 + 1)), 1009),
    ("text over the limit", cf(OP_TEXT, b"x" * (2**20 + 1)), 1009),
]


@pytest.mark.parametrize(
    ("stream", "code"),
    [pytest.param(stream, code, id=name) for name, stream, code in ERROR_CASES],
)
def test_error_rules(stream: bytes, code: int) -> None:
    rd, rec = reader()
    rd.feed(stream)
    assert rec.events[-1] == ("error", code)
    assert all(e[0] != "error" for e in rec.events[:-1])
    assert rd.closed
    # Nothing more is reported, whatever comes next.
    rd.feed(cf(OP_TEXT, b"after") + cf(OP_CLOSE))
    assert rec.events[-1] == ("error", code)
    assert sum(e[0] == "error" for e in rec.events) == 1


@pytest.mark.parametrize(
    ("stream", "code"),
    [pytest.param(stream, code, id=name) for name, stream, code in ERROR_CASES],
)
def test_error_rules_byte_by_byte(stream: bytes, code: int) -> None:
    if len(stream) > 2000:
        stream = stream[:2000]  # errors in long frames are all detected in the header
    rd, rec = reader()
    for i in range(len(stream)):
        rd.feed(stream[i : i + 1])
    assert rec.events[-1] == ("error", code)
    assert rd.closed


def test_masked_frame_is_an_error_client_side() -> None:
    rd, rec = reader(require_mask=False)
    rd.feed(cf(OP_TEXT, b"Hello"))
    assert rec.events == [("error", 1002)]
    assert rd.closed


def test_error_reason_is_text_without_peer_data() -> None:
    class Keep(Recorder):
        def on_ws_error(self, code: int, reason: str) -> None:
            self.events.append(("error", code, reason))

    for _name, stream, _code in ERROR_CASES:
        rec = Keep()
        WebSocketReader(rec).feed(stream)
        reason = rec.events[-1][2]
        assert isinstance(reason, str)
        assert reason
        assert "Hel" not in reason
        assert "\\x" not in reason


def test_error_is_reported_once_and_stops_a_pipelined_chunk() -> None:
    stream = cf(OP_TEXT, b"one") + cf(OP_TEXT, b"\xff") + cf(OP_TEXT, b"three")
    assert parse(stream) == [("message", "one"), ("error", 1007)]


# -- closed reader ignores input --------------------------------------------------------


def test_input_after_close_is_ignored() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_TEXT, b"a") + cf(OP_CLOSE, b"\x03\xe8") + cf(OP_TEXT, b"b"))
    assert rec.events == [("message", "a"), ("close", 1000, "")]
    assert rd.closed
    rd.feed(cf(OP_TEXT, b"c"))
    rd.feed(b"\xff\xff garbage")
    rd.feed(cf(OP_CLOSE))
    assert rec.events == [("message", "a"), ("close", 1000, "")]


def test_input_after_error_is_ignored() -> None:
    rd, rec = reader()
    rd.feed(sf(OP_TEXT, b"unmasked"))
    assert rec.events == [("error", 1002)]
    rd.feed(cf(OP_TEXT, b"valid"))
    rd.feed(cf(OP_CLOSE))
    assert rec.events == [("error", 1002)]


def test_partial_frame_after_close_is_dropped() -> None:
    rd, rec = reader()
    frame = cf(OP_TEXT, b"after")
    rd.feed(cf(OP_CLOSE) + frame[:3])
    rd.feed(frame[3:])
    assert rec.events == [("close", None, "")]


def test_close_during_fragmented_message() -> None:
    events = parse(TEXT_START + cf(OP_CLOSE, b"\x03\xe9") + cf(OP_CONT, b"lo"))
    assert events == [("close", 1001, "")]


# -- fragmentation ----------------------------------------------------------------------


def test_fragmented_text_and_binary() -> None:
    stream = (
        cf(OP_TEXT, b"Hel", fin=False)
        + cf(OP_CONT, b"l", fin=False)
        + cf(OP_CONT, b"o")
        + cf(OP_BINARY, b"\x01", fin=False)
        + cf(OP_CONT, b"\x02")
    )
    assert parse(stream) == [("message", "Hello"), ("message", b"\x01\x02")]


def test_fragmented_with_empty_fragments() -> None:
    stream = (
        cf(OP_TEXT, b"", fin=False)
        + cf(OP_CONT, b"", fin=False)
        + cf(OP_CONT, b"")
        + cf(OP_BINARY, b"", fin=False)
        + cf(OP_CONT, b"x")
    )
    assert parse(stream) == [("message", ""), ("message", b"x")]


def test_control_frames_interleaved_in_fragmented_message() -> None:
    stream = (
        cf(OP_TEXT, b"Hel", fin=False)
        + cf(OP_PING, b"p1")
        + cf(OP_CONT, b"l", fin=False)
        + cf(OP_PONG, b"p2")
        + cf(OP_PING)
        + cf(OP_CONT, b"o")
        + cf(OP_TEXT, b"next")
    )
    assert parse(stream) == [
        ("ping", b"p1"),
        ("pong", b"p2"),
        ("ping", b""),
        ("message", "Hello"),
        ("message", "next"),
    ]


def test_control_frames_are_delivered_before_the_message_ends() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_BINARY, b"a", fin=False) + cf(OP_PING, b"now"))
    assert rec.events == [("ping", b"now")]
    rd.feed(cf(OP_CONT, b"b"))
    assert rec.events == [("ping", b"now"), ("message", b"ab")]


def test_multibyte_characters_split_across_fragments() -> None:
    raw = "aé€😀z".encode()
    for cut1 in range(len(raw) + 1):
        for cut2 in range(cut1, len(raw) + 1):
            stream = (
                cf(OP_TEXT, raw[:cut1], fin=False)
                + cf(OP_CONT, raw[cut1:cut2], fin=False)
                + cf(OP_CONT, raw[cut2:])
            )
            assert parse(stream) == [("message", "aé€😀z")], (cut1, cut2)


def test_fragmented_text_reader_is_reusable() -> None:
    stream = (cf(OP_TEXT, b"\xc3", fin=False) + cf(OP_CONT, b"\xa9")) * 3
    assert parse(stream) == [("message", "é")] * 3


@pytest.mark.parametrize(
    "bad_start",
    [
        b"ok \xff",  # invalid byte
        b"ok \xc3\x28",  # invalid continuation
        b"ok \xed\xa0",  # start of an encoded surrogate (only its prefix in this fragment)
        b"ok \xf4\x90",  # beyond U+10FFFF
        b"ok \xe0\x80",  # overlong
        b"ok \xf8",  # not a UTF-8 start byte
    ],
)
def test_utf8_fails_fast_in_first_fragment(bad_start: bytes) -> None:
    rd, rec = reader()
    rd.feed(cf(OP_TEXT, bad_start, fin=False))
    assert rec.events == [("error", 1007)]
    assert rd.closed


def test_utf8_fails_fast_in_middle_fragment() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_TEXT, b"fine", fin=False) + cf(OP_CONT, b"\xed\xbf", fin=False))
    assert rec.events == [("error", 1007)]


def test_valid_prefix_at_end_of_fragment_is_not_an_error() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_TEXT, b"\xed\x9f", fin=False))  # start of U+D7FF, valid
    assert rec.events == []
    rd.feed(cf(OP_CONT, b"\xbf"))
    assert rec.events == [("message", "\ud7ff")]


# -- message size ---------------------------------------------------------------------------


def test_max_size_exactly_allowed() -> None:
    data = b"x" * 1000
    assert parse(cf(OP_BINARY, data), max_message_size=1000) == [("message", data)]
    assert parse(cf(OP_BINARY, data + b"x"), max_message_size=1000) == [("error", 1009)]


def test_max_size_small_limit_on_small_frames() -> None:
    assert parse(cf(OP_TEXT, b"x" * 10), max_message_size=10) == [("message", "x" * 10)]
    assert parse(cf(OP_TEXT, b"x" * 11), max_message_size=10) == [("error", 1009)]
    assert parse(cf(OP_BINARY, b"x" * 11), max_message_size=0) == [("error", 1009)]
    assert parse(cf(OP_BINARY), max_message_size=0) == [("message", b"")]


def test_max_size_rejected_at_the_header() -> None:
    # Only the header of a frame announcing 2**20 + 1 bytes: rejected at once.
    header = b"\x82\xff" + (2**20 + 1).to_bytes(8, "big") + MASK
    rd, rec = reader()
    rd.feed(header)
    assert rec.events == [("error", 1009)]


def test_max_size_rejected_at_the_16_bit_header() -> None:
    rd, rec = reader(max_message_size=1000)
    rd.feed(b"\x82\xfe" + (1001).to_bytes(2, "big") + MASK + b"partial")
    assert rec.events == [("error", 1009)]


def test_huge_announced_length_is_not_buffered() -> None:
    rd, rec = reader()
    rd.feed(b"\x82\xff" + (2**40).to_bytes(8, "big"))  # no mask key yet
    assert rec.events == [("error", 1009)]


def test_max_size_counts_all_fragments() -> None:
    rd, rec = reader(max_message_size=1000)
    rd.feed(cf(OP_BINARY, b"a" * 400, fin=False))
    rd.feed(cf(OP_CONT, b"b" * 400, fin=False))
    assert rec.events == []
    # Header of a 201-byte continuation: 1001 bytes in all, rejected before its payload.
    rd.feed(b"\x80\xfe" + (201).to_bytes(2, "big"))
    assert rec.events == [("error", 1009)]


def test_max_size_fragments_exactly_at_limit() -> None:
    stream = cf(OP_TEXT, b"a" * 600, fin=False) + cf(OP_CONT, b"b" * 400)
    assert parse(stream, max_message_size=1000) == [("message", "a" * 600 + "b" * 400)]


def test_max_size_resets_between_messages() -> None:
    one = cf(OP_BINARY, b"a" * 600, fin=False) + cf(OP_CONT, b"b" * 400)
    assert parse(one * 3, max_message_size=1000) == [("message", b"a" * 600 + b"b" * 400)] * 3


def test_control_frames_do_not_count_toward_message_size() -> None:
    stream = cf(OP_BINARY, b"a" * 10, fin=False) + cf(OP_PING, b"p" * 100) + cf(OP_CONT)
    assert parse(stream, max_message_size=10) == [("ping", b"p" * 100), ("message", b"a" * 10)]


def test_no_size_limit() -> None:
    data = os.urandom(2**20 + 10)
    assert parse(cf(OP_BINARY, data), max_message_size=None) == [("message", data)]


# -- splits -------------------------------------------------------------------------------

STREAM = (
    cf(OP_TEXT, b"Hello")
    + cf(OP_BINARY, bytes(range(130)))
    + cf(OP_TEXT, b"sm", fin=False)
    + cf(OP_PING, b"in between")
    + cf(OP_CONT, "ör€".encode()[:4], fin=False)
    + cf(OP_CONT, "ör€".encode()[4:])
    + cf(OP_PONG)
    + cf(OP_BINARY, b"")
    + cf(OP_CLOSE, b"\x03\xe8done")
)
STREAM_EVENTS: list[Event] = [
    ("message", "Hello"),
    ("message", bytes(range(130))),
    ("ping", b"in between"),
    ("message", "smör€"),
    ("pong", b""),
    ("message", b""),
    ("close", 1000, "done"),
]


def test_stream_in_one_chunk() -> None:
    assert parse(STREAM) == STREAM_EVENTS


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_every_split_gives_the_same_events(split: int) -> None:
    assert parse(STREAM[:split], STREAM[split:]) == STREAM_EVENTS


@pytest.mark.parametrize("split", range(0, len(STREAM) + 1, 7))
def test_every_split_bytearray_and_memoryview(split: int) -> None:
    rd, rec = reader()
    rd.feed(bytearray(STREAM[:split]))
    rd.feed(memoryview(STREAM)[split:])
    assert rec.events == STREAM_EVENTS


def test_byte_by_byte() -> None:
    assert parse(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == STREAM_EVENTS


def test_every_pair_of_splits() -> None:
    stream = (
        cf(OP_TEXT, b"ab", fin=False)
        + cf(OP_PING, b"x")
        + cf(OP_CONT, b"c")
        + cf(OP_BINARY, b"\x00" * 126)
        + cf(OP_CLOSE)
    )
    expected: list[Event] = [
        ("ping", b"x"),
        ("message", "abc"),
        ("message", b"\x00" * 126),
        ("close", None, ""),
    ]
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            assert parse(stream[:i], stream[i:j], stream[j:]) == expected, (i, j)


def test_every_split_client_side() -> None:
    stream = sf(OP_TEXT, b"Hel", fin=False) + sf(OP_PING, b"!") + sf(OP_CONT, b"lo")
    stream += sf(OP_BINARY, b"z" * 300) + sf(OP_CLOSE, b"\x03\xe8")
    expected: list[Event] = [
        ("ping", b"!"),
        ("message", "Hello"),
        ("message", b"z" * 300),
        ("close", 1000, ""),
    ]
    for i in range(len(stream) + 1):
        assert parse(stream[:i], stream[i:], require_mask=False) == expected, i


def test_large_frame_in_small_chunks() -> None:
    data = os.urandom(300_000)
    stream = cf(OP_BINARY, data) + cf(OP_TEXT, b"tail")
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    assert parse(*chunks) == [("message", data), ("message", "tail")]


def test_partial_frame_then_pipelined_frames() -> None:
    first = cf(OP_BINARY, b"x" * 200)
    rest = b"".join(cf(OP_TEXT, str(i).encode()) for i in range(20))
    rd, rec = reader()
    rd.feed(first[:50])
    rd.feed(first[50:] + rest[:7])
    rd.feed(rest[7:])
    assert rec.events == [("message", b"x" * 200)] + [("message", str(i)) for i in range(20)]


# -- the single-small-frame shortcut must not skip any rule --------------------------------


def test_shortcut_respects_fragment_in_progress() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_TEXT, b"a", fin=False))
    rd.feed(cf(OP_TEXT, b"b"))  # a whole small frame alone in a chunk
    assert rec.events == [("error", 1002)]


def test_shortcut_rejects_invalid_utf8() -> None:
    assert parse(cf(OP_TEXT, b"\x80abc")) == [("error", 1007)]


def test_shortcut_does_not_take_extended_length_frames() -> None:
    # The shortcut matches ``data[1] == len(data) + 122``; 0x80 | 126 == 132 + 122 and
    # 0x80 | 127 == 133 + 122, so frames with extended lengths of exactly those sizes
    # (non-minimal length encodings, accepted) must go through the general parser.
    frame = b"\x82\xfe" + (124).to_bytes(2, "big") + MASK + b"x" * 124
    assert len(frame) == 132
    assert parse(frame) == [("message", apply(b"x" * 124))]
    frame = b"\x81\xff" + (119).to_bytes(8, "big") + MASK + apply(b"y" * 119)
    assert len(frame) == 133
    assert parse(frame) == [("message", "y" * 119)]


# The shortcut also takes a single whole frame with a 16-bit length (126 bytes to 64 KiB).


@pytest.mark.parametrize("n", [126, 127, 4096, 65535])
def test_shortcut_16_bit_frames(n: int) -> None:
    data = os.urandom(n)
    assert parse(cf(OP_BINARY, data)) == [("message", data)]
    text = "é" * (n // 2) + "x" * (n % 2)
    assert parse(cf(OP_TEXT, text.encode())) == [("message", text)]
    for kind in (bytearray, memoryview):
        rd, rec = reader()
        rd.feed(kind(cf(OP_BINARY, data)))
        assert rec.events == [("message", data)]
        assert type(rec.events[0][1]) is bytes


def test_shortcut_16_bit_rejects_invalid_utf8() -> None:
    assert parse(cf(OP_TEXT, b"x" * 200 + b"\xc3")) == [("error", 1007)]
    assert parse(cf(OP_TEXT, b"\xed\xa0\x80" + b"x" * 200)) == [("error", 1007)]


def test_shortcut_16_bit_respects_the_size_limit() -> None:
    data = b"x" * 1000
    assert parse(cf(OP_TEXT, data), max_message_size=1000) == [("message", "x" * 1000)]
    assert parse(cf(OP_TEXT, data + b"x"), max_message_size=1000) == [("error", 1009)]
    assert parse(cf(OP_BINARY, data + b"x"), max_message_size=1000) == [("error", 1009)]
    # A limit below 125 bytes turns the shortcut off altogether.
    assert parse(cf(OP_BINARY, b"x" * 200), max_message_size=100) == [("error", 1009)]


def test_shortcut_16_bit_respects_fragment_in_progress() -> None:
    rd, rec = reader()
    rd.feed(cf(OP_BINARY, b"a", fin=False))
    rd.feed(cf(OP_BINARY, b"b" * 300))
    assert rec.events == [("error", 1002)]
    rd, rec = reader()
    rd.feed(cf(OP_BINARY, b"a", fin=False))
    rd.feed(cf(OP_CONT, b"b" * 300))  # a whole continuation frame alone in a chunk
    assert rec.events == [("message", b"a" + b"b" * 300)]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (cf(OP_BINARY, b"x" * 300, rsv=4), 1002),  # RSV1 without an extension
        (cf(OP_BINARY, b"x" * 300, fin=False) + cf(OP_TEXT), 1002),  # new message inside
        (b"\x82\x7e" + (300).to_bytes(2, "big") + b"x" * 300, 1002),  # unmasked
        (cf(3, b"x" * 300), 1002),  # reserved opcode
        (cf(OP_PING, b"x" * 300), 1002),  # control frame over 125 bytes
    ],
)
def test_shortcut_16_bit_does_not_skip_rules(frame: bytes, code: int) -> None:
    assert parse(frame) == [("error", code)]


def test_shortcut_16_bit_needs_exactly_one_whole_frame() -> None:
    frame = cf(OP_TEXT, b"y" * 300)
    # A byte short, a byte more, a length one off: the general parser decides.
    assert parse(frame[:-1], frame[-1:]) == [("message", "y" * 300)]
    assert parse(frame + cf(OP_PING)) == [("message", "y" * 300), ("ping", b"")]
    binary = cf(OP_BINARY, b"y" * 300)
    rd, rec = reader()
    rd.feed(binary[:2] + (301).to_bytes(2, "big") + binary[4:])
    assert rec.events == []  # waits for the missing byte
    rd.feed(b"\x00")
    assert rec.events == [("message", b"y" * 300 + bytes([MASK[0]]))]


def test_handler_exception_in_16_bit_shortcut_closes_the_reader() -> None:
    class Raising(Recorder):
        def on_ws_message(self, data: str | bytes) -> None:
            raise Boom

    rd = WebSocketReader(Raising())
    with pytest.raises(Boom):
        rd.feed(cf(OP_TEXT, b"z" * 1000))
    assert rd.closed


def apply(data: bytes) -> bytes:
    return bytes(b ^ MASK[i % 4] for i, b in enumerate(data))


# -- handler behaviour ----------------------------------------------------------------------


class Boom(Exception):
    pass


def test_handler_exception_propagates_and_closes_the_reader() -> None:
    class Raising(Recorder):
        def on_ws_message(self, data: str | bytes) -> None:
            super().on_ws_message(data)
            raise Boom

    rec = Raising()
    rd = WebSocketReader(rec)
    with pytest.raises(Boom):
        rd.feed(cf(OP_TEXT, b"one") + cf(OP_TEXT, b"two"))
    assert rd.closed
    rd.feed(cf(OP_TEXT, b"three"))
    assert rec.events == [("message", "one")]


def test_handler_exception_in_shortcut_closes_the_reader() -> None:
    class Raising(Recorder):
        def on_ws_message(self, data: str | bytes) -> None:
            raise Boom

    rd = WebSocketReader(Raising())
    with pytest.raises(Boom):
        rd.feed(cf(OP_BINARY, b"one"))
    assert rd.closed


def test_handler_may_close_the_reader_mid_chunk() -> None:
    class Closing(Recorder):
        reader: WebSocketReader

        def on_ws_message(self, data: str | bytes) -> None:
            super().on_ws_message(data)
            self.reader.closed = True

    rec = Closing()
    rd = rec.reader = WebSocketReader(rec)
    rd.feed(cf(OP_TEXT, b"one") + cf(OP_TEXT, b"two") + cf(OP_PING))
    assert rec.events == [("message", "one")]


def test_closed_is_set_before_the_close_and_error_callbacks() -> None:
    seen: list[bool] = []

    class Checking(Recorder):
        reader: WebSocketReader

        def on_ws_close(self, code: int | None, reason: str) -> None:
            seen.append(self.reader.closed)

        def on_ws_error(self, code: int, reason: str) -> None:
            seen.append(self.reader.closed)

    for stream in (cf(OP_CLOSE), sf(OP_TEXT)):
        rec = Checking()
        rec.reader = WebSocketReader(rec)
        rec.reader.feed(stream)
    assert seen == [True, True]


# -- turns, empty fragments, release ---------------------------------------------------------


def test_a_turn_ends_at_a_clock_reading_and_keeps_the_order() -> None:
    """``turn_seconds=0``: the turn is over at the first reading of the clock, after the frames
    that start in the first ``_TURN_STEP`` bytes; ``feed(b"")`` goes on, and bytes fed meanwhile
    queue behind."""
    rd, rec = reader(turn_seconds=0)
    texts = [f"{i:03d}" + "." * 97 for i in range(100)]
    frames = [cf(OP_TEXT, text.encode()) for text in texts]  # 106 bytes each
    assert rd.feed(b"".join(frames)) is True
    first = len(rec.events)
    assert first == -(-_TURN_STEP // len(frames[0]))  # those that start before the step
    assert rd.feed(cf(OP_TEXT, b"later")) is True  # appended, not parsed ahead
    assert len(rec.events) == 2 * first
    while rd.feed(b""):
        pass
    assert [e[1] for e in rec.events] == [*texts, "later"]


def test_a_read_of_a_few_frames_is_never_cut() -> None:
    """Up to ``_TURN_STEP`` bytes a read is parsed whole, however short the turn: the clock is
    not even read."""
    rd, rec = reader(turn_seconds=0)
    assert rd.feed(cf(OP_PING) * (_TURN_STEP // 6)) is False
    assert len(rec.events) == _TURN_STEP // 6


def test_without_turns_a_read_is_parsed_whole() -> None:
    rd, rec = reader()
    assert rd.feed(cf(OP_PING) * 10_000) is False
    assert len(rec.events) == 10_000


def test_empty_fragments_past_the_limit_fail_with_1008() -> None:
    ok = cf(OP_BINARY, b"a", fin=False) + cf(OP_CONT, b"", fin=False) * MAX_EMPTY_FRAGMENTS
    assert parse(ok + cf(OP_CONT, b"b")) == [("message", b"ab")]
    # The count is per message: the next one may have as many.
    assert parse(ok + cf(OP_CONT, b"b") + ok + cf(OP_CONT, b"")) == [
        ("message", b"ab"),
        ("message", b"a"),
    ]
    assert parse(ok + cf(OP_CONT, b"", fin=False) + cf(OP_CONT, b"b")) == [("error", 1008)]


def test_fail_from_outside_stops_the_parsing_of_the_read() -> None:
    class Failing(Recorder):
        reader: WebSocketReader

        def on_ws_ping(self, payload: bytes) -> None:
            super().on_ws_ping(payload)
            self.reader.fail(1008, "policy")

    rec = Failing()
    rd = rec.reader = WebSocketReader(rec)
    rd.feed(cf(OP_PING, b"1") + cf(OP_TEXT, b"not delivered"))
    assert rec.events == [("ping", b"1"), ("error", 1008)]
    assert rd.closed
    rd.fail(1002, "again")  # a closed reader reports nothing more
    assert rec.events == [("ping", b"1"), ("error", 1008)]


def test_release_drops_the_handler() -> None:
    """A released reader no longer refers to its handler (no reference cycle through bound
    methods), and ignores input."""
    rec = Recorder()
    rd = WebSocketReader(rec)  # type: ignore[arg-type]
    rd.feed(cf(OP_TEXT, b"par", fin=False))
    rd.release()
    assert rd.closed
    assert rd.feed(cf(OP_CONT, b"t")) is False
    assert rec.events == []
    assert rec not in gc.get_referents(rd)
    assert not any(getattr(ref, "__self__", None) is rec for ref in gc.get_referents(rd))
