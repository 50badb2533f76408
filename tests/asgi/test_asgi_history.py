"""Recovery through plezi's ASGI application under a real uvicorn: the same ``_recover`` query
parameter, notice and replay as on plezi's own server."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from wsclient import connect

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp
from plezi.pubsub import channels
from plezi.pubsub.hub import hub

T = 5 * UNIT


class Sub:
    def on_open(self) -> None:
        self.subscribe("chat")  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: str) -> None:
        for n in range(int(data)):
            plezi.publish("chat", {"n": n})


@pytest.fixture
def server(uvicorn_serve: Any) -> Iterator[Any]:
    channels.configure("chat", history=10)
    app = plezi.App()
    app.route("/sub", Sub)
    yield uvicorn_serve(ASGIApp(app))
    channels.clear()
    hub.engine.__dict__.pop("_local_history", None)


def test_a_reconnect_recovers_under_asgi(server: Any) -> None:
    with connect(f"{server.ws_url}/sub") as ws:
        assert ws.recv(T) == "ready"
        ws.send("3")
        first = [json.loads(ws.recv(T)) for _ in range(3)]
    position = first[0]["_pos"]
    since = json.dumps({"chat": [position["epoch"], position["offset"]]})
    with connect(f"{server.ws_url}/sub?_recover={urllib.parse.quote(since)}") as ws:
        assert ws.recv(T) == "ready"
        assert json.loads(ws.recv(T))["recovered"] is True
        assert [json.loads(ws.recv(T))["n"] for _ in range(2)] == [1, 2]
