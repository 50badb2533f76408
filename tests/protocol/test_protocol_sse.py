"""Server-Sent Events framing, checked byte for byte and against a spec-following parser."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plezi.protocol import sse_comment, sse_event


def parse_events(stream: bytes) -> list[dict[str, str]]:
    """A minimal event-stream parser following the HTML standard's algorithm."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    fields: dict[str, str] = {}
    for line in re.split(r"\r\n|\r|\n", stream.decode()):
        if not line:
            if data:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def test_simple_event() -> None:
    assert sse_event("hello") == b"data: hello\n\n"


def test_empty_data() -> None:
    assert sse_event("") == b"data: \n\n"
    assert parse_events(sse_event("")) == [{"data": ""}]


def test_multi_line_data() -> None:
    assert sse_event("a\nb\nc") == b"data: a\ndata: b\ndata: c\n\n"


@pytest.mark.parametrize("text", ["a\r\nb", "a\rb", "a\nb"])
def test_every_line_ending_splits(text: str) -> None:
    assert sse_event(text) == b"data: a\ndata: b\n\n"


def test_trailing_and_blank_lines_are_kept() -> None:
    assert sse_event("a\n") == b"data: a\ndata: \n\n"
    assert sse_event("a\n\nb") == b"data: a\ndata: \ndata: b\n\n"
    assert sse_event("\r\n") == b"data: \ndata: \n\n"


def test_unicode_line_separators_are_not_line_breaks() -> None:
    assert sse_event("a\u2028b\x85c\x0bd") == "data: a\u2028b\x85c\x0bd\n\n".encode()


def test_leading_space_survives() -> None:
    assert sse_event(" x") == b"data:  x\n\n"
    assert parse_events(sse_event(" x")) == [{"data": " x"}]


def test_utf8_encoding() -> None:
    assert sse_event("été ☃") == "data: été ☃\n\n".encode()


def test_all_fields() -> None:
    assert sse_event("x\ny", event="update", id="42", retry=1500) == (
        b"event: update\nid: 42\nretry: 1500\ndata: x\ndata: y\n\n"
    )


def test_single_fields() -> None:
    assert sse_event("x", event="tick") == b"event: tick\ndata: x\n\n"
    assert sse_event("x", id="") == b"id: \ndata: x\n\n"
    assert sse_event("x", retry=0) == b"retry: 0\ndata: x\n\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"event": "a\r\n"},
        {"id": "1\n2"},
        {"id": "1\r"},
        {"id": "1\x002"},
        {"retry": -1},
    ],
)
def test_invalid_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sse_event("data", **kwargs)  # type: ignore[arg-type]


def test_comment() -> None:
    assert sse_comment("keep-alive") == b": keep-alive\n\n"
    assert sse_comment() == b": \n\n"
    assert sse_comment("a\nb") == b": a\n: b\n\n"
    assert sse_comment("a\r\nb\rc") == b": a\n: b\n: c\n\n"
    assert parse_events(sse_comment("a\nb") + sse_event("x")) == [{"data": "x"}]


texts = st.text(st.characters(exclude_categories=["Cs"]))  # no lone surrogates
field_text = texts.filter(lambda s: not ({"\r", "\n", "\0"} & set(s)))


@given(texts, st.one_of(st.none(), field_text), st.one_of(st.none(), field_text))
def test_round_trip(data: str, event: str | None, id: str | None) -> None:
    encoded = sse_event(data, event=event, id=id)
    assert encoded.endswith(b"\n\n")
    expected: dict[str, str] = {"data": data.replace("\r\n", "\n").replace("\r", "\n")}
    if event is not None:
        expected["event"] = event
    if id is not None:
        expected["id"] = id
    assert parse_events(encoded) == [expected]


@given(st.lists(texts, max_size=5))
def test_stream_of_events(items: list[str]) -> None:
    stream = b"".join(sse_event(item) for item in items)
    parsed = parse_events(stream)
    assert [p["data"] for p in parsed] == [
        item.replace("\r\n", "\n").replace("\r", "\n") for item in items
    ]
