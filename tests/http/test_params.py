"""Request parameters: Rack-style nesting, limits, JSON bodies, merging (plezi.http.params)."""

from __future__ import annotations

from typing import Any

import pytest

from plezi.http.params import (
    ParamsError,
    add_param,
    merge_params,
    parse_json_body,
    parse_query,
)

NESTING_TABLE: list[tuple[str, dict[str, Any]]] = [
    ("", {}),
    ("a=1", {"a": "1"}),
    ("a=1&b=2", {"a": "1", "b": "2"}),
    ("a=1&a=2", {"a": "2"}),  # a repeated plain key: the last wins
    ("a[b]=1", {"a": {"b": "1"}}),
    ("a[b]=1&a[c]=2", {"a": {"b": "1", "c": "2"}}),
    ("a[b][c]=1", {"a": {"b": {"c": "1"}}}),
    ("a[b]=1&a[b]=2", {"a": {"b": "2"}}),
    ("a[]=1&a[]=2", {"a": ["1", "2"]}),
    ("a[]=1", {"a": ["1"]}),
    ("a[b][]=1&a[b][]=2", {"a": {"b": ["1", "2"]}}),
    ("a[][x]=1&a[][y]=2", {"a": [{"x": "1", "y": "2"}]}),
    ("a[][x]=1&a[][y]=2&a[][x]=3", {"a": [{"x": "1", "y": "2"}, {"x": "3"}]}),
    (
        "a[][x][y]=1&a[][x][z]=2&a[][x][y]=3",
        {"a": [{"x": {"y": "1", "z": "2"}}, {"x": {"y": "3"}}]},
    ),
    ("a[][x][]=1&a[][x][]=2", {"a": [{"x": ["1", "2"]}]}),  # keys with [] never start a new hash
    ("a[][]=1", {"a": [["1"]]}),
    ("a[]x=1", {"a": [{"x": "1"}]}),
    ("a[b]=1&a=2", {"a": "2"}),  # a plain name replaces whatever was there (as Rack)
    # values and keys without '=' or with an empty side
    ("a", {"a": ""}),
    ("a&b=", {"a": "", "b": ""}),
    ("a[]", {"a": [""]}),
    ("a[b]", {"a": {"b": ""}}),
    ("=1", {}),
    ("=", {}),
    ("&&a=1&&", {"a": "1"}),
    ("a==1", {"a": "=1"}),
    # odd names, as Rack reads them
    ("[a]=1", {"[a]": "1"}),
    ("[]=1", {"[]": "1"}),
    ("a[=1", {"a[": "1"}),
    ("a]=1", {"a]": "1"}),
    ("a[b]]=1", {"a": {"b": {"]": "1"}}}),
    ("a[b]c=1", {"a": {"b": {"c": "1"}}}),
    # decoding
    ("a=x+y", {"a": "x y"}),
    ("a=x%2By", {"a": "x+y"}),
    ("a+b=1", {"a b": "1"}),
    ("a%5Bb%5D=1", {"a": {"b": "1"}}),  # decoded before nesting, as Rack
    ("a=%C3%A9", {"a": "\u00e9"}),
    ("a=%FF", {"a": "\ufffd"}),
    ("a=%zz%4", {"a": "%zz%4"}),  # invalid escapes are kept
    ("a=%", {"a": "%"}),
    ("a=1;b=2", {"a": "1;b=2"}),  # ';' is no separator (Rack 3)
    ("a=1& b=2", {"a": "1", "b": "2"}),  # spaces after '&' are skipped (Rack)
    ("a=1&b=2&", {"a": "1", "b": "2"}),
]


@pytest.mark.parametrize(("qs", "expected"), NESTING_TABLE)
def test_parse_query(qs: str, expected: dict[str, Any]) -> None:
    assert parse_query(qs) == expected


@pytest.mark.parametrize(
    ("qs", "expected"),
    [
        (b"a=1&b[]=2", {"a": "1", "b": ["2"]}),
        (b"a=\xc3\xa9", {"a": "\u00e9"}),
        (b"a=\xff", {"a": "\ufffd"}),
        (b"", {}),
    ],
)
def test_parse_query_bytes(qs: bytes, expected: dict[str, Any]) -> None:
    assert parse_query(qs) == expected


CONFLICTS = [
    ("a=1&a[b]=2", "expected a hash"),
    ("a[]=1&a[b]=2", "expected a hash"),
    ("a=1&a[]=2", "expected an array"),
    ("a[b]=1&a[]=2", "expected an array"),
    ("a=1&a[][x]=2", "expected an array"),
    ("a[b]=1&a[b][c]=2", "expected a hash"),
]


@pytest.mark.parametrize(("qs", "message"), CONFLICTS)
def test_conflicting_types(qs: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message) as info:
        parse_query(qs)
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)


def test_error_message_is_short() -> None:
    name = "k" * 100_000
    with pytest.raises(ParamsError) as info:
        parse_query(f"{name}=1&{name}[x]=2")
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("qs", "max_params", "ok"),
    [
        ("&".join(["a=1"] * 10), 10, True),
        ("&".join(["a=1"] * 11), 10, False),
        ("&".join(["a[]=1"] * 1000), 1000, True),
        ("&".join(["a[]=1"] * 1001), 1000, False),
        ("&" * 10, 10, False),  # empty pairs count: they still cost work
    ],
)
def test_max_params(qs: str, max_params: int, ok: bool) -> None:
    if ok:
        parse_query(qs, max_params=max_params)
    else:
        with pytest.raises(ParamsError, match="too many parameters"):
            parse_query(qs, max_params=max_params)


def test_default_max_params_is_1000() -> None:
    assert len(parse_query("&".join(f"k{i}=1" for i in range(1000)))) == 1000
    with pytest.raises(ParamsError):
        parse_query("&".join(f"k{i}=1" for i in range(1001)))


@pytest.mark.parametrize(
    ("name", "max_depth", "ok"),
    [
        ("a", 1, True),
        ("a[b]", 1, False),
        ("a[b]", 2, True),
        ("a[b][c]", 2, False),
        ("a[]", 2, True),
        ("a[][x]", 2, True),
        ("a[][x][y]", 2, False),
        ("a" + "[x]" * 31, 32, True),
        ("a" + "[x]" * 32, 32, False),
        ("a" + "[" * 100_000, 32, True),  # one malformed level, not 100 000
    ],
)
def test_max_depth(name: str, max_depth: int, ok: bool) -> None:
    if ok:
        parse_query(f"{name}=1", max_depth=max_depth)
    else:
        with pytest.raises(ParamsError, match="nested too deeply"):
            parse_query(f"{name}=1", max_depth=max_depth)


def test_default_max_depth_is_32() -> None:
    parse_query("a" + "[x]" * 31 + "=1")
    with pytest.raises(ParamsError):
        parse_query("a" + "[x]" * 32 + "=1")


JSON_TABLE: list[tuple[bytes, dict[str, Any]]] = [
    (b'{"a": 1, "b": {"c": [1, 2]}}', {"a": 1, "b": {"c": [1, 2]}}),
    (b"{}", {}),
    (b"[1, 2]", {"_json": [1, 2]}),
    (b'"text"', {"_json": "text"}),
    (b"3", {"_json": 3}),
    (b"null", {"_json": None}),
    (b"true", {"_json": True}),
    (b"", {}),
    (b"  \n", {}),
    ('{"a": "\u00e9"}'.encode(), {"a": "\u00e9"}),
]


@pytest.mark.parametrize(("body", "expected"), JSON_TABLE)
def test_parse_json_body(body: bytes, expected: dict[str, Any]) -> None:
    assert parse_json_body(body) == expected


@pytest.mark.parametrize(
    "body", [b"{", b"{'a': 1}", b"\xff", b"[1,]", b'{"a": 1} x', b"[" * 5000 + b"]" * 5000]
)
def test_parse_json_body_invalid(body: bytes) -> None:
    with pytest.raises(ParamsError, match="invalid JSON") as info:
        parse_json_body(body)
    assert info.value.status == 400


def test_parse_json_body_error_does_not_echo_input() -> None:
    secret = b"x" * 10_000
    with pytest.raises(ParamsError) as info:
        parse_json_body(b'{"a": ' + secret)
    assert len(str(info.value)) < 300


MERGE_TABLE: list[tuple[list[dict[str, Any]], dict[str, Any]]] = [
    ([], {}),
    ([{"a": 1}], {"a": 1}),
    ([{"a": 1}, {"a": 2}], {"a": 2}),
    ([{"a": 1}, {"b": 2}], {"a": 1, "b": 2}),
    ([{"a": {"b": 1}}, {"a": {"c": 2}}], {"a": {"b": 1, "c": 2}}),
    ([{"a": {"b": {"c": 1}}}, {"a": {"b": {"d": 2}}}], {"a": {"b": {"c": 1, "d": 2}}}),
    ([{"a": {"b": 1}}, {"a": 2}], {"a": 2}),
    ([{"a": 2}, {"a": {"b": 1}}], {"a": {"b": 1}}),
    ([{"a": [1]}, {"a": [2]}], {"a": [2]}),  # lists are replaced, not concatenated
    ([{"a": 1}, {"a": 2}, {"a": 3}], {"a": 3}),
]


@pytest.mark.parametrize(("sources", "expected"), MERGE_TABLE)
def test_merge_params(sources: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert merge_params(*sources) == expected


def test_merge_params_never_touches_sources() -> None:
    first: dict[str, Any] = {"a": {"b": 1}}
    second: dict[str, Any] = {"a": {"c": 2}}
    merged = merge_params(first, second)
    merged["a"]["d"] = 3
    assert first == {"a": {"b": 1}}
    assert second == {"a": {"c": 2}}
    only = merge_params(first)
    only["a"]["x"] = 1
    assert first == {"a": {"b": 1}}


@pytest.mark.parametrize(
    ("start", "name", "value", "expected"),
    [
        ({}, "id", "5", {"id": "5"}),
        ({"id": "1"}, "id", "5", {"id": "5"}),
        ({}, "user[name]", "bob", {"user": {"name": "bob"}}),
        ({"user": {"age": "3"}}, "user[name]", "bob", {"user": {"age": "3", "name": "bob"}}),
        ({"a": ["1"]}, "a[]", "2", {"a": ["1", "2"]}),
        ({}, "", "x", {}),
        ({}, "a b", "x+y", {"a b": "x+y"}),  # already decoded: nothing is decoded again
    ],
)
def test_add_param(start: dict[str, Any], name: str, value: str, expected: dict[str, Any]) -> None:
    add_param(start, name, value)
    assert start == expected


def test_add_param_conflict_and_depth() -> None:
    with pytest.raises(ParamsError):
        add_param({"user": "x"}, "user[name]", "bob")
    with pytest.raises(ParamsError):
        add_param({}, "a[b][c]", "1", max_depth=2)
