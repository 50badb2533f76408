"""permessage-deflate (RFC 7692) in the sans-I/O layer: negotiation, compressed frames out,
compressed frames in (fragmented, malformed, too big once inflated)."""

from __future__ import annotations

import json
import os
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plezi.protocol import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    CloseCode,
    DeflateParams,
    Inflater,
    MessageTooBig,
    WebSocketSession,
    compressed_frame,
    deflate_payload,
    encode_frame,
    negotiate,
    negotiate_extensions,
    parse_extensions,
)
from plezi.protocol.deflate import DeflateError

MASK = b"\x01\x02\x03\x04"
TEXT = json.dumps({"user": "ada", "room": "lobby", "text": "hello, everyone " * 16})


def z(data: bytes, *, final: bool = False, bits: int = 15) -> bytes:
    """``data`` compressed as a client would: sync flush and tail stripped (or a final block)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
    return out if final else out[:-4]


def client(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK)


def session(max_size: int = 2**20, deflate: bool = True) -> WebSocketSession:
    return WebSocketSession(max_message_size=max_size, deflate=DeflateParams() if deflate else None)


def inflate_frame(frame: bytes) -> tuple[int, bytes]:
    """(first byte, inflated payload) of one unmasked compressed server frame."""
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    return frame[0], zlib.decompressobj(-15).decompress(frame[start:] + b"\x00\x00\xff\xff")


# -- negotiation ----------------------------------------------------------------------------


BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        # Chromium and Firefox
        ("permessage-deflate; client_max_window_bits", BASE),
        ("permessage-deflate", BASE),
        ("Permessage-Deflate; Client_No_Context_Takeover", BASE),
        ("permessage-deflate; server_no_context_takeover", BASE),
        ('permessage-deflate; client_max_window_bits="10"', BASE),
        ("permessage-deflate; server_max_window_bits=10", f"{BASE}; server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=15", f"{BASE}; server_max_window_bits=15"),
        ("permessage-deflate; server_max_window_bits=8", f"{BASE}; server_max_window_bits=8"),
        # an unknown extension first, then ours
        ("x-webkit-deflate-frame, permessage-deflate", BASE),
        # the first offer is invalid: the second is taken
        (
            "permessage-deflate; server_max_window_bits=16, permessage-deflate;"
            " server_max_window_bits=12",
            f"{BASE}; server_max_window_bits=12",
        ),
    ],
)
def test_accepted_offers(offer: str, response: str) -> None:
    params = negotiate(offer)
    assert params is not None
    assert params.response == response


@pytest.mark.parametrize(
    "offer",
    [
        None,
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits",  # needs a value
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",  # no leading zeros
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; client_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; mystery",
        "permessage-deflate; =1",
        "permessage deflate",
        "permessage-deflate;;",
        'permessage-deflate; client_max_window_bits="10',
        "\x00\x01garbage",
    ],
)
def test_declined_offers(offer: str | None) -> None:
    assert negotiate(offer) is None


def test_negotiate_extensions_reads_the_header_and_the_setting() -> None:
    headers = {"sec-websocket-extensions": "permessage-deflate; client_max_window_bits"}
    assert negotiate_extensions(headers, "on") is not None
    assert negotiate_extensions(headers, "broadcasts") is not None
    assert negotiate_extensions(headers, "off") is None
    assert negotiate_extensions({}, "on") is None


def test_parse_extensions() -> None:
    assert parse_extensions('a; x=1; y="two", b,, C') == [
        ("a", [("x", "1"), ("y", "two")]),
        ("b", []),
        ("c", []),
    ]
    assert parse_extensions("a; x=1 2") is None


def test_window_limits() -> None:
    assert DeflateParams().shares_frames and DeflateParams().can_compress
    ten = negotiate("permessage-deflate; server_max_window_bits=10")
    assert ten is not None and ten.can_compress and not ten.shares_frames
    eight = negotiate("permessage-deflate; server_max_window_bits=8")
    assert eight is not None and not eight.can_compress


# -- sending --------------------------------------------------------------------------------


def test_compressed_frame_round_trips_with_rsv1() -> None:
    frame = compressed_frame(OP_TEXT, TEXT.encode())
    assert frame is not None
    b0, data = inflate_frame(frame)
    assert b0 == 0xC1  # FIN, RSV1, text
    assert data == TEXT.encode()
    assert len(frame) < len(TEXT) / 2
    binary = compressed_frame(OP_BINARY, TEXT.encode())
    assert binary is not None and binary[0] == 0xC2


def test_deflate_payload_strips_the_tail_and_keeps_no_context() -> None:
    data = deflate_payload(TEXT.encode())
    assert not data.endswith(b"\x00\x00\xff\xff")
    # Each message stands alone: a fresh inflater reads the second one the same.
    assert deflate_payload(TEXT.encode()) == data


def test_what_is_not_compressed() -> None:
    assert compressed_frame(OP_TEXT, b"x" * 127) is None  # under MIN_SIZE
    assert compressed_frame(OP_TEXT, b"x" * 128) is not None
    assert compressed_frame(OP_BINARY, os.urandom(4096)) is None  # does not shrink
    assert compressed_frame(OP_TEXT, TEXT.encode(), 8) is None  # no 256-byte window in zlib


def test_a_small_window_is_honoured() -> None:
    payload = (TEXT * 40).encode()
    frame = compressed_frame(OP_TEXT, payload, 9)
    assert frame is not None
    n = frame[1] & 0x7F
    start = 2 if n < 126 else 4
    inflater = zlib.decompressobj(-9)  # a peer that only keeps 512 bytes
    assert inflater.decompress(frame[start:] + b"\x00\x00\xff\xff") == payload


def test_session_compressed_frame() -> None:
    on = session()
    frame = on.compressed_frame(TEXT)
    assert frame[0] == 0xC1 and inflate_frame(frame)[1] == TEXT.encode()
    assert on.compressed_frame("hi") == b"\x81\x02hi"
    assert on.compressed_frame(bytearray(b"\x00\x01"))[0] == 0x82
    assert session(deflate=False).compressed_frame(TEXT)[0] == 0x81


# -- receiving ------------------------------------------------------------------------------


def received(s: WebSocketSession, *frames: bytes) -> list[str | bytes]:
    for frame in frames:
        s.receive_data(frame)
    return s.events_received()


def closed_with(s: WebSocketSession) -> int | None:
    return None if s.close_sent is None else s.close_sent[0]


def test_compressed_text_and_binary_messages() -> None:
    s = session()
    data = TEXT.encode()
    assert received(s, client(OP_TEXT, z(data), rsv=4)) == [TEXT]
    assert received(s, client(OP_BINARY, z(data), rsv=4)) == [data]
    # uncompressed messages still work beside them, and a message ending in a final block
    assert received(s, client(OP_TEXT, b"plain")) == ["plain"]
    assert received(s, client(OP_TEXT, z(data, final=True), rsv=4)) == [TEXT]
    assert received(s, client(OP_TEXT, z(b""), rsv=4)) == [""]
    assert s.close_sent is None


def test_compressed_message_in_fragments_split_anywhere() -> None:
    data = ("é" + TEXT).encode() * 20
    wire = z(data)
    cuts = [1, 2, len(wire) // 3, len(wire) - 1]
    s = session()
    frames = [client(OP_TEXT, wire[: cuts[0]], fin=False, rsv=4)]
    for a, b in zip(cuts, [*cuts[1:], len(wire)], strict=True):
        frames.append(client(OP_CONT, wire[a:b], fin=b == len(wire)))
    # a ping between fragments, and the bytes fed one at a time
    frames.insert(2, client(OP_PING, b"p"))
    stream = b"".join(frames)
    for i in range(len(stream)):
        s.receive_data(stream[i : i + 1])
    assert s.events_received() == [data.decode()]
    bin_frames = [
        client(OP_BINARY, wire[:10], fin=False, rsv=4),
        client(OP_CONT, b"", fin=False),
        client(OP_CONT, wire[10:]),
    ]
    assert received(s, *bin_frames) == [data]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        # RSV1 on a continuation frame, on a control frame
        (
            [client(OP_TEXT, z(b"abc"), fin=False, rsv=4), client(OP_CONT, b"", rsv=4)],
            CloseCode.PROTOCOL_ERROR,
        ),
        ([client(OP_PING, b"", rsv=4)], CloseCode.PROTOCOL_ERROR),
        # RSV2/RSV3 are still reserved
        ([client(OP_TEXT, b"abc", rsv=2)], CloseCode.PROTOCOL_ERROR),
        ([client(OP_TEXT, b"abc", rsv=6)], CloseCode.PROTOCOL_ERROR),
        # not deflate data
        ([client(OP_TEXT, b"\xff\xff\xff\xff", rsv=4)], CloseCode.INVALID_DATA),
        # data after the end of the stream
        ([client(OP_TEXT, z(b"abc", final=True) + b"junk", rsv=4)], CloseCode.INVALID_DATA),
        # invalid UTF-8 once inflated, whole and in fragments
        ([client(OP_TEXT, z(b"\xff\xfe"), rsv=4)], CloseCode.INVALID_DATA),
        (
            [client(OP_TEXT, z(b"ok\xed\xa0\x80"), fin=False, rsv=4)],
            CloseCode.INVALID_DATA,
        ),
    ],
)
def test_bad_compressed_input(frames: list[bytes], code: int) -> None:
    s = session()
    received(s, *frames)
    assert closed_with(s) == code
    assert s.reader.closed


def test_rsv1_without_negotiation_is_a_protocol_error() -> None:
    s = session(deflate=False)
    received(s, client(OP_TEXT, z(TEXT.encode()), rsv=4))
    assert closed_with(s) == CloseCode.PROTOCOL_ERROR


def test_inflated_size_counts_against_the_limit() -> None:
    data = b"a" * 5000
    s = session(max_size=5000)
    assert received(s, client(OP_BINARY, z(data), rsv=4)) == [data]
    s = session(max_size=4999)
    received(s, client(OP_BINARY, z(data), rsv=4))
    assert closed_with(s) == CloseCode.MESSAGE_TOO_BIG
    # in fragments: the sum counts
    s = session(max_size=4999)
    wire = z(data)
    received(s, client(OP_TEXT, wire[:20], fin=False, rsv=4), client(OP_CONT, wire[20:]))
    assert closed_with(s) == CloseCode.MESSAGE_TOO_BIG


def test_zip_bomb_is_refused_before_it_is_inflated() -> None:
    """200 MB of zeros in ~200 KB: refused at the 1 MiB limit, with little memory spent."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    wire = b"".join(c.compress(chunk) for _ in range(200)) + c.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(wire) < 2**20  # fits the wire limit: only the inflated size can refuse it
    s = session(max_size=2**20)
    frame = client(OP_BINARY, wire, rsv=4)
    tracemalloc.start()
    try:
        received(s, frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert closed_with(s) == CloseCode.MESSAGE_TOO_BIG
    assert peak < 8 * 2**20, peak  # never the 200 MB


def test_inflater_bounds_each_message_and_resets() -> None:
    inflater = Inflater(100)
    assert inflater.inflate(z(b"x" * 100), True) == b"x" * 100
    with pytest.raises(MessageTooBig):
        inflater.inflate(z(b"x" * 101), True)
    with pytest.raises(DeflateError):
        inflater.inflate(b"\xff\xff", True)
    # the next message starts from scratch
    wire = z(b"y" * 60 + bytes(range(256)))
    assert inflater.inflate(wire[:8], False)
    with pytest.raises(MessageTooBig):
        inflater.inflate(wire[8:], True)
    assert inflater.inflate(z(b"ok"), True) == b"ok"


def test_wire_size_of_an_incompressible_message_at_the_limit() -> None:
    """A compressed message of random bytes is a little larger on the wire than inflated: at
    exactly the limit it is still accepted."""
    data = os.urandom(70000)
    wire = z(data)
    assert len(wire) > len(data)
    s = session(max_size=len(data))
    assert received(s, client(OP_BINARY, wire, rsv=4)) == [data]
    # an uncompressed frame over the limit is refused, as before
    received(s, client(OP_BINARY, data + b"!"))
    assert closed_with(s) == CloseCode.MESSAGE_TOO_BIG


# -- properties -----------------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=800).map(str.encode),
    st.builds(lambda word, n: word * n, st.binary(min_size=1, max_size=8), st.integers(0, 400)),
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.booleans(), payloads, st.booleans(), st.integers(1, 6)), max_size=5
    ),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=10),
    final=st.booleans(),
)
def test_compressed_stream_round_trips_however_split(
    messages: list[tuple[bool, bytes, bool, int]], cuts: list[int], final: bool
) -> None:
    """Compressed or not, in fragments or not, fed in any chunks: the same messages come out."""
    wire = b""
    expected: list[str | bytes] = []
    for binary, payload, compress, parts in messages:
        opcode = OP_BINARY if binary else OP_TEXT
        if not binary:
            payload = payload.decode("utf-8", "replace").encode()
        expected.append(payload if binary else payload.decode())
        data = z(payload, final=final) if compress else payload
        step = max(1, len(data) // parts + 1)
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for i, piece in enumerate(pieces):
            wire += client(
                opcode if i == 0 else OP_CONT,
                piece,
                fin=i == len(pieces) - 1,
                rsv=4 if compress and i == 0 else 0,
            )
    s = session()
    start = 0
    for cut in sorted(c % (len(wire) + 1) for c in cuts):
        s.receive_data(wire[start:cut])
        start = cut
    s.receive_data(wire[start:])
    assert s.close_sent is None
    assert s.events_received() == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT, OP_PING]))
def test_garbage_behind_rsv1_never_raises(garbage: bytes, opcode: int) -> None:
    s = session(max_size=4096)
    s.receive_data(client(opcode, garbage, rsv=4))
    s.events_received()  # whatever came out; the point is that nothing raised
    assert s.close_sent is None or s.close_sent[0] in (
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
    )
