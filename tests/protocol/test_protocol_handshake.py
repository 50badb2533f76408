"""The opening handshake: accept key, request validation, 101 response."""

from __future__ import annotations

import base64

import pytest

from plezi.protocol import (
    GUID,
    HandshakeError,
    accept_key,
    handshake_response,
    is_upgrade_request,
    validate_upgrade,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

GOOD: dict[str, str] = {
    "host": "server.example.com",
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": RFC_KEY,
    "origin": "http://example.com",
    "sec-websocket-version": "13",
}


def with_headers(**changes: str | None) -> dict[str, str]:
    headers = dict(GOOD)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def test_guid() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_accept_key_other_value() -> None:
    # Computed independently: base64(sha1(key + GUID)).
    assert accept_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk="


def test_valid_request_returns_the_key() -> None:
    assert validate_upgrade("GET", GOOD) == RFC_KEY


@pytest.mark.parametrize(
    "changes",
    [
        {"upgrade": "WebSocket"},
        {"upgrade": "WEBSOCKET"},
        {"upgrade": "h2c, websocket"},
        {"upgrade": " websocket "},
        {"connection": "keep-alive, Upgrade"},
        {"connection": "upgrade"},
        {"connection": "Upgrade,keep-alive"},
        {"sec_websocket_version": " 13 "},
        {"sec_websocket_key": " " + RFC_KEY + " "},
        {"origin": None},
    ],
)
def test_valid_variants(changes: dict[str, str | None]) -> None:
    assert validate_upgrade("GET", with_headers(**changes)) == RFC_KEY


def test_random_keys_accepted() -> None:
    for i in range(50):
        key = base64.b64encode(bytes([i]) * 16).decode()
        assert validate_upgrade("GET", with_headers(sec_websocket_key=key)) == key


@pytest.mark.parametrize(
    ("method", "changes", "status"),
    [
        ("POST", {}, 405),
        ("HEAD", {}, 405),
        ("get", {}, 405),
        ("POST", {"upgrade": None, "sec_websocket_version": "8"}, 405),  # method first
        ("GET", {"upgrade": None}, 400),
        ("GET", {"upgrade": "h2c"}, 400),
        ("GET", {"upgrade": "websockets"}, 400),
        ("GET", {"upgrade": ""}, 400),
        ("GET", {"connection": None}, 400),
        ("GET", {"connection": "keep-alive"}, 400),
        ("GET", {"connection": "upgrades"}, 400),
        ("GET", {"connection": None, "sec_websocket_version": "8"}, 400),
        ("GET", {"sec_websocket_version": "8"}, 426),
        ("GET", {"sec_websocket_version": "12"}, 426),
        ("GET", {"sec_websocket_version": "13, 8"}, 426),
        ("GET", {"sec_websocket_version": None}, 426),
        ("GET", {"sec_websocket_version": None, "sec_websocket_key": None}, 426),
        ("GET", {"sec_websocket_key": None}, 400),
        ("GET", {"sec_websocket_key": ""}, 400),
        ("GET", {"sec_websocket_key": "not base64 at all!!!!!!!"}, 400),
        ("GET", {"sec_websocket_key": "dGhlIHNhbXBsZSBub25jZQ"}, 400),  # no padding
        ("GET", {"sec_websocket_key": base64.b64encode(b"x" * 15).decode()}, 400),
        ("GET", {"sec_websocket_key": base64.b64encode(b"x" * 17).decode()}, 400),
        ("GET", {"sec_websocket_key": base64.b64encode(b"x" * 32).decode()}, 400),
        ("GET", {"sec_websocket_key": "dGhlIHNhbXBsZSBub25jZQ=é"}, 400),
        ("GET", {"sec_websocket_key": "dGhlIHNhbXBsZSBub25jZ$=="}, 400),
    ],
)
def test_rejections(method: str, changes: dict[str, str | None], status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        validate_upgrade(method, with_headers(**changes))
    assert info.value.status == status
    assert isinstance(info.value, ValueError)
    assert str(info.value)
    assert info.value.message == str(info.value)


def test_405_has_allow_header() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_upgrade("POST", GOOD)
    assert info.value.headers == [("allow", "GET")]


def test_426_has_version_header() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_upgrade("GET", with_headers(sec_websocket_version="8"))
    assert ("sec-websocket-version", "13") in info.value.headers


def test_400_has_no_extra_headers() -> None:
    with pytest.raises(HandshakeError) as info:
        validate_upgrade("GET", with_headers(sec_websocket_key=None))
    assert info.value.headers == []


def test_handshake_error_defaults() -> None:
    error = HandshakeError(400, "bad")
    assert (error.status, error.headers, error.message, str(error)) == (400, [], "bad", "bad")


def test_handshake_response_rfc_example() -> None:
    assert handshake_response(RFC_KEY) == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"upgrade: websocket\r\n"
        b"connection: Upgrade\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_handshake_response_extra_headers() -> None:
    # Header names go out in lower case, whatever case they were given in (values as given).
    response = handshake_response(
        RFC_KEY, [("Sec-WebSocket-Protocol", "chat"), ("X-Thing", "café")]
    )
    assert response == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"upgrade: websocket\r\n"
        b"connection: Upgrade\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"sec-websocket-protocol: chat\r\n"
        b"x-thing: caf\xe9\r\n"
        b"\r\n"
    )


def test_handshake_response_accepts_a_generator() -> None:
    response = handshake_response(RFC_KEY, (h for h in [("A", "1"), ("B", "2")]))
    assert response.endswith(b"\r\na: 1\r\nb: 2\r\n\r\n")
    assert response.count(b"\r\n\r\n") == 1


@pytest.mark.parametrize(
    "header",
    [
        ("X-Evil", "a\r\nSet-Cookie: x=1"),
        ("X-Evil", "a\nb"),
        ("X-Evil", "a\rb"),
        ("X-Evil", "a\0b"),
        ("X-Evil\r\nSet-Cookie", "1"),
        ("X Evil", "1"),
        ("X-Evil:", "1"),
        ("", "1"),
    ],
)
def test_handshake_response_rejects_header_injection(header: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        handshake_response(RFC_KEY, [header])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"upgrade": "websocket"}, True),
        ({"upgrade": "WebSocket"}, True),
        ({"upgrade": "foo, WebSocket"}, True),
        ({"upgrade": "websocket", "connection": "close"}, True),  # only Upgrade is checked
        ({"upgrade": "h2c"}, False),
        ({"upgrade": "websocketx"}, False),
        ({"upgrade": ""}, False),
        ({}, False),
        ({"connection": "upgrade"}, False),
    ],
)
def test_is_upgrade_request(headers: dict[str, str], expected: bool) -> None:
    assert is_upgrade_request(headers) is expected
