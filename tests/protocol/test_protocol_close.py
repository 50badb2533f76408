"""Close codes: the enum values and which codes may travel in a close frame."""

from __future__ import annotations

import pytest

from plezi.protocol import CloseCode, is_valid_close_code


def test_close_code_values() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "UNSUPPORTED_DATA": 1003,
        "NO_STATUS": 1005,
        "ABNORMAL": 1006,
        "INVALID_DATA": 1007,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "MANDATORY_EXTENSION": 1010,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "BAD_GATEWAY": 1014,
        "TLS_HANDSHAKE": 1015,
    }


def test_close_code_is_an_int() -> None:
    assert isinstance(CloseCode.NORMAL, int)
    assert CloseCode.NORMAL + 0 == 1000
    assert CloseCode(1009) is CloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        (0, False),
        (999, False),
        (1000, True),
        (1001, True),
        (1002, True),
        (1003, True),
        (1004, False),
        (1005, False),
        (1006, False),
        (1007, True),
        (1008, True),
        (1009, True),
        (1010, True),
        (1011, True),
        (1012, True),
        (1013, True),
        (1014, True),
        (1015, False),
        (1016, False),
        (2000, False),
        (2999, False),
        (3000, True),
        (3999, True),
        (4000, True),
        (4999, True),
        (5000, False),
        (65535, False),
        (-1, False),
    ],
)
def test_is_valid_close_code(code: int, valid: bool) -> None:
    assert is_valid_close_code(code) is valid


def test_valid_close_codes_exhaustive() -> None:
    expected = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert {c for c in range(70000) if is_valid_close_code(c)} == expected


def test_enum_members_validity() -> None:
    never_sent = {CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE}
    for code in CloseCode:
        assert is_valid_close_code(code) is (code not in never_sent)
