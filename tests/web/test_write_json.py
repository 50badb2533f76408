"""``self.write(dict_or_list)`` sends JSON text, on a WebSocket and on an SSE stream, as
``publish`` and event return values already do."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from wsclient import RawClient

import plezi
from helpers import Running
from plezi.protocol.frames import OP_TEXT
from sseclient import EventStream


class Writer:
    def on_open(self) -> None:
        self.write({"event": "hello", "n": 1, "text": "café"})  # type: ignore[attr-defined]
        self.write([1, "two", None])  # type: ignore[attr-defined]
        self.write(OrderedDict(a=1))  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        self.write({"echo": data})  # type: ignore[attr-defined]

    def on_sse(self) -> None:
        self.write_event({"kind": "named"}, event="update", id=7)  # type: ignore[attr-defined]


def serve_writer(serve: Callable[..., Running]) -> Running:
    app = plezi.App()
    app.route("/", Writer)
    return serve(app)


def test_a_websocket_gets_json_text_frames(serve: Callable[..., Running]) -> None:
    running = serve_writer(serve)
    with RawClient(running.port, "/") as ws:
        frames = [ws.recv_message() for _ in range(3)]
        assert [f.opcode for f in frames] == [OP_TEXT] * 3
        assert [json.loads(f.text) for f in frames] == [
            {"event": "hello", "n": 1, "text": "café"},
            [1, "two", None],
            {"a": 1},
        ]
        assert frames[0].text == '{"event":"hello","n":1,"text":"café"}'  # orjson's compact form
        ws.send_text("hi")
        assert json.loads(ws.recv_message().text) == {"echo": "hi"}


def test_an_sse_stream_gets_json_events(serve: Callable[..., Running]) -> None:
    running = serve_writer(serve)
    with EventStream(running.port, "/") as stream:
        stream.open()
        events = stream.events(4)
    assert [json.loads(e.data) for e in events[:3]] == [
        {"event": "hello", "n": 1, "text": "café"},
        [1, "two", None],
        {"a": 1},
    ]
    assert (events[3].event, events[3].id, json.loads(events[3].data)) == (
        "update",
        "7",
        {"kind": "named"},
    )
