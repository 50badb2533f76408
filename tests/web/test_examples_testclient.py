"""The examples, tested the way an application's own tests would: with plezi's test client.

Each test loads an example into a fresh ``plezi.app`` (the examples route on the default app)
and talks to it through :class:`plezi.testing.TestClient`: the real server on a loopback port.
"""

from __future__ import annotations

import runpy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import plezi
from helpers import ROOT
from plezi.testing import ConnectionRejected, TestClient, WebSocketClosed

EXAMPLES = ROOT / "examples"


@pytest.fixture
def load() -> Iterator[Callable[[Path], plezi.App]]:
    """``load(path)`` runs an example (not as ``__main__``: nothing starts) into a fresh
    ``plezi.app``, which is put back afterwards."""
    before = plezi.app
    plezi.app = plezi.App()

    def run(path: Path) -> plezi.App:
        runpy.run_path(str(path), run_name="example")
        return plezi.app

    yield run
    plezi.app = before


def test_the_guides_sample_answers_http_and_echoes(load: Callable[[Path], plezi.App]) -> None:
    app = load(EXAMPLES / "websocket_sample.py")
    with TestClient(app) as client:
        assert client.get("/").text == "Hello World!"
        assert client.get("/42").text == "showing object with id: 42..."
        with client.websocket_connect("/") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo: hi"
    # At exit, the server shut down: on_shutdown wrote its goodbye before the close.


def test_on_shutdown_says_goodbye_to_an_open_websocket(load: Callable[[Path], plezi.App]) -> None:
    app = load(EXAMPLES / "websocket_sample.py")
    client = TestClient(app)
    ws = client.websocket_connect("/").__enter__()
    ws.send_text("ping")
    assert ws.receive_text() == "echo: ping"
    client.close()  # graceful shutdown, as SIGTERM does
    assert ws.receive_text() == "Server shutting down. Goodbye."
    with pytest.raises(WebSocketClosed):
        ws.receive_text()
    assert ws.close_code == 1001


def test_the_chat_room_announces_and_relays(load: Callable[[Path], plezi.App]) -> None:
    app = load(EXAMPLES / "chat.py")
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        with client.websocket_connect("/ann") as ann:
            assert ann.receive_text() == "ann joined the chat."
            with client.websocket_connect("/bob") as bob:
                assert bob.receive_text() == "bob joined the chat."
                assert ann.receive_text() == "bob joined the chat."
                bob.send_text("hello")
                assert ann.receive_text() == "bob: hello"
                assert bob.receive_text() == "bob: hello"
            assert ann.receive_text() == "bob left the chat."


def test_a_chat_without_a_name_is_refused(load: Callable[[Path], plezi.App]) -> None:
    app = load(EXAMPLES / "chat.py")
    with TestClient(app) as client, pytest.raises(ConnectionRejected):
        client.websocket_connect("/").__enter__()


def test_the_json_chat_reaches_websockets_and_http(load: Callable[[Path], plezi.App]) -> None:
    app = load(EXAMPLES / "chat_client" / "chat.py")
    with TestClient(app) as client:
        assert "PleziClient" in client.get("/client.js").text
        with client.websocket_connect("/") as a, client.websocket_connect("/") as b:
            a.send_json({"event": "chat", "name": "ann", "text": "hi"})
            said = {"event": "chat", "name": "ann", "text": "hi"}
            assert b.receive_json() == said
            replies = [a.receive_json(), a.receive_json()]
            assert said in replies and {"event": "delivered"} in replies
            # The same event over HTTP (a form POST), as the example's docstring says.
            answer = client.post("/chat", data={"name": "curl", "text": "yo"})
            assert answer.json() == {"event": "delivered"}
            assert b.receive_json() == {"event": "chat", "name": "curl", "text": "yo"}
