"""A published message as a Server-Sent Event: built once, whoever asks (registry, write_to)."""

from __future__ import annotations

import logging

import pytest

from plezi.pubsub.message import Message


def test_text_and_json_become_data_lines_built_once() -> None:
    text = Message.of("news", "line one\nline two")
    first = text.sse_frame()
    assert first == b"data: line one\ndata: line two\n\n"
    assert text.sse_frame() is first  # one event for every SSE subscriber
    assert Message.of("news", {"a": 1}).sse_frame() == b'data: {"a":1}\n\n'


def test_binary_is_sent_when_it_is_utf8_and_dropped_with_a_line_when_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert Message.of("news", "é".encode()).sse_frame() == "data: é\n\n".encode()
    bad = Message.of("news", b"\xff\xfe")
    with caplog.at_level(logging.INFO, logger="plezi"):
        assert bad.sse_frame() is None
        assert bad.sse_frame() is None
    assert sum("not UTF-8" in r.getMessage() for r in caplog.records) == 1  # decided once
