"""Frame encoders, byte for byte (RFC 6455 section 5)."""

from __future__ import annotations

import array
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plezi.protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    CloseCode,
    apply_mask,
    binary_frame,
    close_frame,
    encode_frame,
    ping_frame,
    pong_frame,
    text_frame,
)
from plezi.protocol.frames import _apply_mask_py

RFC_MASK = bytes.fromhex("37fa213d")


def test_opcodes() -> None:
    assert (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG) == (0, 1, 2, 8, 9, 10)


# -- RFC 6455 section 5.7 examples --------------------------------------------------------


def test_rfc_unmasked_text() -> None:
    expected = bytes.fromhex("810548656c6c6f")
    assert text_frame("Hello") == expected
    assert encode_frame(OP_TEXT, b"Hello") == expected


def test_rfc_masked_text() -> None:
    assert encode_frame(OP_TEXT, b"Hello", mask=RFC_MASK) == bytes.fromhex("818537fa213d7f9f4d5158")


def test_rfc_fragmented_text() -> None:
    assert encode_frame(OP_TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(OP_CONT, b"lo") == bytes.fromhex("80026c6f")


def test_rfc_ping_and_masked_pong() -> None:
    assert ping_frame(b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(OP_PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert encode_frame(OP_PONG, b"Hello", mask=RFC_MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")


def test_rfc_256_bytes_binary() -> None:
    data = os.urandom(256)
    frame = binary_frame(data)
    assert frame[:4] == bytes.fromhex("827e0100")
    assert frame[4:] == data
    assert encode_frame(OP_BINARY, data) == frame


def test_rfc_64kib_binary() -> None:
    data = os.urandom(65536)
    frame = binary_frame(data)
    assert frame[:10] == bytes.fromhex("827f0000000000010000")
    assert frame[10:] == data
    assert encode_frame(OP_BINARY, data) == frame


# -- length boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (0, "8100"),
        (1, "8101"),
        (125, "817d"),
        (126, "817e007e"),
        (127, "817e007f"),
        (65535, "817effff"),
        (65536, "817f0000000000010000"),
        (70000, "817f0000000000011170"),
    ],
)
def test_text_frame_length_boundaries(n: int, header: str) -> None:
    frame = text_frame("a" * n)
    head = bytes.fromhex(header)
    assert frame[: len(head)] == head
    assert frame[len(head) :] == b"a" * n
    assert len(frame) == len(head) + n


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
    ],
)
def test_binary_frame_length_boundaries(n: int, header: str) -> None:
    data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    frame = binary_frame(data)
    head = bytes.fromhex(header)
    assert frame == head + data


@pytest.mark.parametrize("n", [0, 5, 125, 126, 65535, 65536])
def test_encode_frame_masked_length_boundaries(n: int) -> None:
    data = os.urandom(n)
    frame = encode_frame(OP_BINARY, data, mask=RFC_MASK)
    if n < 126:
        assert frame[:2] == bytes((0x82, 0x80 | n))
        hlen = 2
    elif n < 65536:
        assert frame[:4] == bytes((0x82, 0xFE)) + n.to_bytes(2, "big")
        hlen = 4
    else:
        assert frame[:10] == bytes((0x82, 0xFF)) + n.to_bytes(8, "big")
        hlen = 10
    assert frame[hlen : hlen + 4] == RFC_MASK
    assert apply_mask(frame[hlen + 4 :], RFC_MASK) == data


def test_text_frame_counts_utf8_bytes() -> None:
    # 42 characters, 126 bytes: needs the 16-bit length.
    text = "€" * 42
    frame = text_frame(text)
    assert frame[:4] == bytes.fromhex("817e007e")
    assert frame[4:].decode() == text


def test_text_frame_rejects_lone_surrogates() -> None:
    with pytest.raises(UnicodeEncodeError):
        text_frame("\ud800")


def test_binary_frame_accepts_buffers() -> None:
    data = b"\x00\x01\x02\xff"
    expected = b"\x82\x04" + data
    assert binary_frame(bytearray(data)) == expected
    assert binary_frame(memoryview(data)) == expected
    assert type(binary_frame(bytearray(data))) is bytes
    assert type(binary_frame(memoryview(data))) is bytes


def test_binary_frame_memoryview_counts_bytes_not_items() -> None:
    ints = array.array("I", range(40))  # 160 bytes, 40 items
    view = memoryview(ints)
    frame = binary_frame(view)
    assert frame[:4] == bytes((0x82, 126)) + (40 * ints.itemsize).to_bytes(2, "big")
    assert frame[4:] == ints.tobytes()


# -- encode_frame ------------------------------------------------------------------------


@pytest.mark.parametrize(("rsv", "bits"), [(1, 0x10), (2, 0x20), (4, 0x40), (7, 0x70)])
def test_encode_frame_rsv_bits(rsv: int, bits: int) -> None:
    assert encode_frame(OP_TEXT, b"", rsv=rsv)[0] == 0x81 | bits


def test_encode_frame_not_fin_and_reserved_opcode() -> None:
    assert encode_frame(OP_BINARY, b"x", fin=False) == b"\x02\x01x"
    assert encode_frame(11, b"")[0] == 0x8B


@pytest.mark.parametrize(
    "kwargs",
    [
        {"opcode": 16},
        {"opcode": -1},
        {"rsv": 8},
        {"rsv": -1},
        {"mask": b"abc"},
        {"mask": b"abcde"},
    ],
)
def test_encode_frame_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"opcode": OP_TEXT, **kwargs}
    opcode = args.pop("opcode")
    with pytest.raises(ValueError):
        encode_frame(opcode, b"payload", **args)  # type: ignore[arg-type]


def test_encode_frame_control_frames_unchecked() -> None:
    # Tests need invalid frames: a fragmented, oversized ping is encoded as asked.
    frame = encode_frame(OP_PING, b"x" * 200, fin=False)
    assert frame[:4] == bytes((0x09, 126, 0, 200))


# -- control frames ---------------------------------------------------------------------


def test_close_frame_no_code() -> None:
    assert close_frame() == b"\x88\x00"
    assert close_frame(None) == b"\x88\x00"


def test_close_frame_reason_without_code() -> None:
    with pytest.raises(ValueError):
        close_frame(None, "bye")


def test_close_frame_code_only() -> None:
    assert close_frame(1000) == bytes.fromhex("880203e8")
    assert close_frame(CloseCode.MESSAGE_TOO_BIG) == bytes.fromhex("880203f1")
    assert close_frame(4999) == bytes.fromhex("8802" + "1387")


def test_close_frame_with_reason() -> None:
    assert close_frame(1001, "bye") == bytes.fromhex("880503e9") + b"bye"
    assert close_frame(1000, "é") == bytes.fromhex("880403e8") + "é".encode()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65536])
def test_close_frame_rejects_codes_not_for_the_wire(code: int) -> None:
    with pytest.raises(ValueError):
        close_frame(code)


def test_close_frame_truncates_ascii_reason() -> None:
    frame = close_frame(1000, "x" * 300)
    assert frame[1] == 125
    assert len(frame) == 127
    assert frame[4:] == b"x" * 123


def test_close_frame_reason_of_exactly_123_bytes_kept() -> None:
    frame = close_frame(1000, "y" * 123)
    assert frame[1] == 125
    assert frame[4:] == b"y" * 123


@pytest.mark.parametrize("char", ["é", "€", "😀"])
@pytest.mark.parametrize("prefix", range(4))
def test_close_frame_truncation_never_splits_a_character(char: str, prefix: int) -> None:
    reason = "a" * prefix + char * 100
    frame = close_frame(1000, reason)
    assert frame[1] == len(frame) - 2 <= 125
    text = frame[4:].decode()  # would raise on a split character
    assert reason.startswith(text)
    # As long as possible: one more character would not fit.
    assert len(text.encode()) + len(char.encode()) > 123


def test_ping_pong_frames() -> None:
    assert ping_frame() == b"\x89\x00"
    assert pong_frame() == b"\x8a\x00"
    assert pong_frame(b"abc") == b"\x8a\x03abc"
    assert ping_frame(b"z" * 125) == b"\x89\x7d" + b"z" * 125
    assert pong_frame(bytearray(b"ab")) == b"\x8a\x02ab"


@pytest.mark.parametrize("encoder", [ping_frame, pong_frame])
def test_control_payload_too_long(encoder: object) -> None:
    with pytest.raises(ValueError):
        encoder(b"z" * 126)  # type: ignore[operator]


# -- masking ------------------------------------------------------------------------------


def test_apply_mask_uses_the_c_speedup() -> None:
    speedups = pytest.importorskip("websockets.speedups")
    assert apply_mask is speedups.apply_mask


@pytest.mark.parametrize("impl", [apply_mask, _apply_mask_py], ids=["default", "python"])
def test_apply_mask_rfc_example(impl: object) -> None:
    masked = impl(b"Hello", RFC_MASK)  # type: ignore[operator]
    assert masked == bytes.fromhex("7f9f4d5158")
    assert impl(masked, RFC_MASK) == b"Hello"  # type: ignore[operator]
    assert impl(b"", RFC_MASK) == b""  # type: ignore[operator]


@pytest.mark.parametrize("impl", [apply_mask, _apply_mask_py], ids=["default", "python"])
@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_apply_mask_wrong_mask_length(impl: object, mask: bytes) -> None:
    with pytest.raises(ValueError):
        impl(b"data", mask)  # type: ignore[operator]


def test_apply_mask_python_keeps_leading_zero_bytes() -> None:
    # Data equal to the mask XORs to all zero bytes: none may be dropped.
    assert _apply_mask_py(b"\x01\x02\x03\x04\x01", b"\x01\x02\x03\x04") == b"\x00" * 4 + b"\x00"


def test_apply_mask_implementations_agree_on_all_small_lengths() -> None:
    mask = os.urandom(4)
    for n in range(64):
        data = os.urandom(n)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        assert apply_mask(data, mask) == expected
        assert _apply_mask_py(data, mask) == expected
        assert _apply_mask_py(bytearray(data), bytearray(mask)) == expected
        assert _apply_mask_py(memoryview(data), memoryview(mask)) == expected
        assert apply_mask(memoryview(data), mask) == expected


@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4))
def test_apply_mask_implementations_agree(data: bytes, mask: bytes) -> None:
    result = _apply_mask_py(data, mask)
    assert type(result) is bytes
    assert result == apply_mask(data, mask)
    assert apply_mask(result, mask) == data


@given(
    st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG]),
    st.binary(max_size=70000),
    st.booleans(),
    st.integers(0, 7),
)
def test_encode_frame_header_fields(opcode: int, payload: bytes, fin: bool, rsv: int) -> None:
    frame = encode_frame(opcode, payload, fin=fin, rsv=rsv)
    assert frame[0] == (0x80 if fin else 0) | rsv << 4 | opcode
    assert frame.endswith(payload)
    assert frame[1] & 0x80 == 0
