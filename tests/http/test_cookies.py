"""Cookies: header parsing and Set-Cookie formatting (plezi.http.cookies)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plezi.http.cookies import format_delete_cookie, format_set_cookie, parse_cookie_header

PARSE_TABLE: list[tuple[str, dict[str, str]]] = [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a=1; b=2", {"a": "1", "b": "2"}),
    ("a=1;b=2", {"a": "1", "b": "2"}),
    ("  a = 1 ;  b=2  ", {"a": "1", "b": "2"}),
    ("a=1; a=2", {"a": "1"}),  # first occurrence wins
    ("a=", {"a": ""}),
    ('a="x y"', {"a": "x y"}),
    ('a=""', {"a": ""}),
    ('a="', {"a": '"'}),
    ('a="x', {"a": '"x'}),
    ("a=x%20y%3B", {"a": "x y;"}),
    ("a=%C3%A9", {"a": "\u00e9"}),
    ("a=%zz", {"a": "%zz"}),
    ("a=x+y", {"a": "x+y"}),  # '+' is not a space in cookies
    ("a=b=c", {"a": "b=c"}),
    # malformed pairs are skipped, the rest survive
    ("junk; a=1", {"a": "1"}),
    ("=1; a=2", {"a": "2"}),
    ("a=1;; ;b=2", {"a": "1", "b": "2"}),
    ("a=1; \x00bad; b=2", {"a": "1", "b": "2"}),
    ('x=\\"; a=1', {"x": '\\"', "a": "1"}),  # SimpleCookie would give up here
]


@pytest.mark.parametrize(("header", "expected"), PARSE_TABLE)
def test_parse_cookie_header(header: str, expected: dict[str, str]) -> None:
    assert parse_cookie_header(header) == expected


# (name, value, options, expected Set-Cookie value)
FORMAT_TABLE: list[tuple[str, str, dict[str, Any], str]] = [
    ("a", "1", {}, "a=1; Path=/; SameSite=Lax"),
    ("a", "", {}, "a=; Path=/; SameSite=Lax"),
    ("a", "x y", {}, "a=x%20y; Path=/; SameSite=Lax"),
    ("a", 'q"u;o,t\\e%', {}, "a=q%22u%3Bo%2Ct%5Ce%25; Path=/; SameSite=Lax"),
    ("a", "\u00e9\n", {}, "a=%C3%A9%0A; Path=/; SameSite=Lax"),
    ("a", "!#$&'()*+-./:<=>?@[]^_`{|}~", {}, "a=!#$&'()*+-./:<=>?@[]^_`{|}~; Path=/; SameSite=Lax"),
    ("a", "1", {"path": None, "samesite": None}, "a=1"),
    ("a", "1", {"path": "/x y"}, "a=1; Path=/x y; SameSite=Lax"),
    ("a", "1", {"max_age": 60}, "a=1; Max-Age=60; Path=/; SameSite=Lax"),
    ("a", "1", {"max_age": 0}, "a=1; Max-Age=0; Path=/; SameSite=Lax"),
    ("a", "1", {"domain": "example.com"}, "a=1; Domain=example.com; Path=/; SameSite=Lax"),
    ("a", "1", {"secure": True}, "a=1; Path=/; Secure; SameSite=Lax"),
    ("a", "1", {"httponly": True}, "a=1; Path=/; HttpOnly; SameSite=Lax"),
    ("a", "1", {"samesite": "strict"}, "a=1; Path=/; SameSite=Strict"),
    ("a", "1", {"samesite": "None", "secure": True}, "a=1; Path=/; Secure; SameSite=None"),
    (
        "a",
        "1",
        {"expires": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)},
        "a=1; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Path=/; SameSite=Lax",
    ),
    (
        "a",
        "1",
        {"expires": datetime(2030, 1, 2, 3, 4, 5)},  # naive: taken as UTC
        "a=1; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Path=/; SameSite=Lax",
    ),
    (
        "a",
        "1",
        {"expires": datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))},
        "a=1; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Path=/; SameSite=Lax",
    ),
    (
        "a",
        "1",
        {"expires": "Wed, 02 Jan 2030 03:04:05 GMT"},
        "a=1; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Path=/; SameSite=Lax",
    ),
    (
        "sid",
        "v",
        {"max_age": 5, "domain": "ex.com", "path": "/p", "secure": True, "httponly": True},
        "sid=v; Max-Age=5; Domain=ex.com; Path=/p; Secure; HttpOnly; SameSite=Lax",
    ),
    ("__Host-x", "1", {"secure": True}, "__Host-x=1; Path=/; Secure; SameSite=Lax"),
    ("a.b-c!#$%&'*+^_`|~", "1", {}, "a.b-c!#$%&'*+^_`|~=1; Path=/; SameSite=Lax"),
]


@pytest.mark.parametrize(("name", "value", "options", "expected"), FORMAT_TABLE)
def test_format_set_cookie(name: str, value: str, options: dict[str, Any], expected: str) -> None:
    assert format_set_cookie(name, value, **options) == expected


@pytest.mark.parametrize(
    "name", ["", "a b", "a=b", "a;b", "a,b", 'a"', "a(b)", "a/b", "a\n", "\u00e9", "a:b", "a{b}"]
)
def test_invalid_cookie_name(name: str) -> None:
    with pytest.raises(ValueError, match="invalid cookie name"):
        format_set_cookie(name, "1")
    with pytest.raises(ValueError, match="invalid cookie name"):
        format_delete_cookie(name)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "/a;b"}, "invalid cookie path"),
        ({"path": "/a\r\nX-Evil: 1"}, "invalid cookie path"),
        ({"path": ""}, "invalid cookie path"),
        ({"path": "/\u00e9"}, "invalid cookie path"),
        ({"domain": "ex.com; Secure"}, "invalid cookie domain"),
        ({"domain": "ex.com\n"}, "invalid cookie domain"),
        ({"expires": "x; y"}, "invalid cookie expires"),
        ({"samesite": "sometimes"}, "invalid SameSite"),
        ({"samesite": "None"}, "requires secure"),
        ({"samesite": "none", "secure": False}, "requires secure"),
    ],
)
def test_invalid_cookie_attributes(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_set_cookie("a", "1", **options)


DELETE_TABLE: list[tuple[str, dict[str, Any], str]] = [
    ("a", {}, "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"),
    ("a", {"path": "/x"}, "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/x"),
    ("a", {"path": None}, "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0"),
    (
        "a",
        {"domain": "ex.com"},
        "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Domain=ex.com; Path=/",
    ),
]


@pytest.mark.parametrize(("name", "options", "expected"), DELETE_TABLE)
def test_format_delete_cookie(name: str, options: dict[str, Any], expected: str) -> None:
    assert format_delete_cookie(name, **options) == expected


def test_delete_cookie_rejects_injection() -> None:
    with pytest.raises(ValueError):
        format_delete_cookie("a", path="/;x")
    with pytest.raises(ValueError):
        format_delete_cookie("a", domain="x\r\n")


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=30))
def test_value_round_trip(value: str) -> None:
    pair = format_set_cookie("k", value, path=None, samesite=None)  # no attributes: k=value
    assert all(0x21 <= ord(ch) < 0x7F for ch in pair[2:])  # only cookie-octets on the wire
    assert not set(pair[2:]) & set('",;\\ ')
    assert parse_cookie_header(f"other=1; {pair}; k=shadowed") == {"other": "1", "k": value}
