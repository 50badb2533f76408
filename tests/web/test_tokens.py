"""Tokens on WebSockets: ``plezi.tokens()`` signs and verifies; the token a client offers in
``Sec-WebSocket-Protocol`` reaches ``pre_connect`` as ``self.token``; the server answers with
``plezi``, never with the token; a refused token is a 403 before the upgrade, logged without
its value. Real sockets: a raw handshake and the ``websockets`` client."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from rawhttp import RawHTTP, request_bytes
from websockets.exceptions import InvalidStatus
from wsclient import Echo, connect

import plezi
from helpers import UNIT, Running, start_server
from plezi.protocol.handshake import (
    TOKEN_PROTOCOL,
    choose_subprotocol,
    offered_subprotocols,
    subprotocol_token,
)
from plezi.web.tokens import MAX_TOKEN, Tokens

SECRET = "a test secret of 32 bytes, at least"
TOKENS = plezi.tokens(secret=SECRET)
#: The server's signer: its own, so that the refusal lines of the unit tests above (one a second
#: per signer) do not hide the line the server test looks for.
SERVER_TOKENS = plezi.tokens(secret=SECRET)


def carrier(token: str) -> str:
    """The subprotocol that carries ``token``, as the browser client builds it."""
    return TOKEN_PROTOCOL + base64.urlsafe_b64encode(token.encode()).rstrip(b"=").decode()


# -- the signer ---------------------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    token = TOKENS.sign({"user": 42, "name": "é"})
    assert TOKENS.verify(token) == {"user": 42, "name": "é"}
    assert all(c.isalnum() or c in "-_." for c in token)  # base64url and one dot


def test_expired_tampered_foreign_and_malformed_tokens_are_refused() -> None:
    assert TOKENS.verify(TOKENS.sign(42, ttl=-1)) is None  # expired already
    token = TOKENS.sign(42)
    payload, _, signature = token.partition(".")
    forged = base64.urlsafe_b64encode(b'{"d":1,"exp":9999999999}').rstrip(b"=").decode()
    assert TOKENS.verify(f"{forged}.{signature}") is None
    assert TOKENS.verify(f"{payload}.{signature[:-2]}") is None
    assert Tokens("another secret, as long as the first").verify(token) is None
    for bad in ("", None, "no-dot", ".", "é.x", "x" * (MAX_TOKEN + 1)):
        assert TOKENS.verify(bad) is None


def test_bad_secrets_and_data_are_errors() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        plezi.tokens(secret="short")
    with pytest.raises(ValueError, match="ttl"):
        plezi.tokens(secret=SECRET, ttl=0)
    with pytest.raises(ValueError, match="data"):
        TOKENS.sign(None)


# -- the subprotocol header ---------------------------------------------------------------------


def test_subprotocol_parsing() -> None:
    header = f" chat , plezi,{carrier('tok én')}"
    assert offered_subprotocols(header) == ["chat", "plezi", carrier("tok én")]
    assert subprotocol_token(header) == "tok én"
    assert choose_subprotocol(header) == "plezi"
    assert choose_subprotocol("chat") is None
    assert subprotocol_token("plezi") is None
    assert subprotocol_token(None) is None
    assert subprotocol_token(TOKEN_PROTOCOL + "%%%") is None  # not base64url
    assert subprotocol_token(TOKEN_PROTOCOL + "_w") is None  # not UTF-8


# -- over real sockets --------------------------------------------------------------------------


class Secure:
    """Accepts a connection whose token is valid; greets it with the token's data."""

    def pre_connect(self) -> bool:
        self.user = SERVER_TOKENS.verify(self.token)  # type: ignore[attr-defined]
        return self.user is not None

    def on_open(self) -> None:
        self.write(f"hello {self.user}")  # type: ignore[attr-defined]

    def on_message(self, data: Any) -> None:
        pass


class OwnProtocol:
    """Chooses its own subprotocol in ``pre_connect``."""

    def pre_connect(self) -> bool:
        self.response.headers["Sec-WebSocket-Protocol"] = "chat"  # type: ignore[attr-defined]
        return True

    def on_message(self, data: Any) -> None:
        pass


@pytest.fixture
def running() -> Iterator[Running]:
    app = plezi.App()
    app.route("/secure", Secure)
    app.route("/own", OwnProtocol)
    app.route("/plain", Echo)
    r = start_server(app)
    yield r
    r.stop()


def _handshake(port: int, path: str, protocols: str | None) -> Any:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if protocols is not None:
        headers["Sec-WebSocket-Protocol"] = protocols
    with RawHTTP(port) as raw:
        raw.send(request_bytes("GET", path, headers))
        return raw.read_response(head=True)


def test_websockets_client_with_a_token(running: Running) -> None:
    token = TOKENS.sign(42)
    with connect(running.ws_url + "/secure", subprotocols=["plezi", carrier(token)]) as ws:
        assert ws.subprotocol == "plezi"
        assert ws.recv(timeout=5 * UNIT) == "hello 42"


def test_raw_handshake_answers_plezi_never_the_token(running: Running) -> None:
    token = TOKENS.sign("u1")
    reply = _handshake(running.port, "/secure", f"plezi, {carrier(token)}")
    assert reply.status == 101
    assert reply.header("sec-websocket-protocol") == "plezi"
    assert token not in repr(reply)
    # pre_connect's own choice wins.
    assert _handshake(running.port, "/own", "chat, plezi").header("sec-websocket-protocol") == (
        "chat"
    )
    # A client that did not offer plezi gets no answer from plezi (the app may choose one).
    for offered in (None, "chat"):
        assert "sec-websocket-protocol" not in _handshake(running.port, "/plain", offered).headers


def test_refused_tokens_are_403_before_the_upgrade_and_never_logged(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plezi")
    expired = TOKENS.sign(7, ttl=-1)
    forged = Tokens("a different secret of enough bytes").sign(7)
    for token in (expired, forged):
        with pytest.raises(InvalidStatus) as refused:
            connect(running.ws_url + "/secure", subprotocols=["plezi", carrier(token)])
        assert refused.value.response.status_code == 403
    assert _handshake(running.port, "/secure", "plezi").status == 403  # no token at all
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "token refused: expired" in text
    assert "403 WebSocket to '/secure' refused by pre_connect" in text
    for token in (expired, forged):
        for part in (token, *token.split("."), carrier(token)):
            assert part not in text
    assert running.call(lambda: running.server.stats.refused["pre_connect"]) == 3
