"""A token in ``Sec-WebSocket-Protocol`` under ASGI (uvicorn): ``pre_connect`` reads it as
``self.token``, the accept names the ``plezi`` subprotocol, a refused token is a 403."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from wsclient import connect

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp
from plezi.protocol.handshake import TOKEN_PROTOCOL

TOKENS = plezi.tokens(secret="an ASGI test secret, long enough")


class Secure:
    def pre_connect(self) -> bool:
        self.user = TOKENS.verify(self.token)  # type: ignore[attr-defined]
        return self.user is not None

    def on_open(self) -> None:
        self.write(f"hello {self.user}")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        pass


def carrier(token: str) -> str:
    return TOKEN_PROTOCOL + base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode()


def test_token_under_uvicorn(uvicorn_serve: Any) -> None:
    app = plezi.App()
    app.route("/secure", Secure)
    server = uvicorn_serve(ASGIApp(app))
    url = server.ws_url + "/secure"
    with connect(url, subprotocols=["plezi", carrier(TOKENS.sign("ann"))]) as ws:
        assert ws.subprotocol == "plezi"
        assert ws.recv(timeout=5 * UNIT) == "hello ann"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["plezi", carrier(TOKENS.sign("ann", ttl=-1))])
    assert refused.value.response.status_code == 403
