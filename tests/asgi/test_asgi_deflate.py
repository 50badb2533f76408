"""permessage-deflate under an ASGI server: uvicorn negotiates and applies the extension
itself (plezi's ASGI adapter hands it messages, never frames), so plezi's compression setting
does not apply there; a compressing client works, for a connection's writes and for published
messages alike, and so does one without compression."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp

T = 5 * UNIT
CHAT = json.dumps({"user": "ada", "text": "hello, everyone! " * 20})


class Room:
    def on_open(self) -> None:
        self.subscribe("deflate-room")  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]
        plezi.publish("deflate-room", f"published {data}")


def room_app() -> plezi.App:
    app = plezi.App()
    app.route("/", Room)
    return app


@pytest.mark.parametrize(
    ("ws", "server_deflate", "client_deflate"),
    [
        ("websockets-sansio", True, True),
        ("websockets-sansio", False, True),
        ("websockets-sansio", True, False),
    ],
)
def test_compressing_clients_under_uvicorn(
    uvicorn_serve: Callable[..., Any], ws: str, server_deflate: bool, client_deflate: bool
) -> None:
    server = uvicorn_serve(ASGIApp(room_app()), ws=ws, ws_per_message_deflate=server_deflate)
    with ws_connect(
        server.ws_url + "/",
        proxy=None,
        compression="deflate" if client_deflate else None,
        open_timeout=T,
        close_timeout=T,
    ) as ws:
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        if server_deflate and client_deflate:  # uvicorn's answer, not plezi's
            assert extensions is not None and "permessage-deflate" in extensions
        else:
            assert extensions is None
        assert ws.recv(timeout=T) == "ready"
        for i in range(3):
            text = f"{CHAT} {i}"
            ws.send(text)
            assert ws.recv(timeout=T) == text
            assert ws.recv(timeout=T) == f"published {text}"
