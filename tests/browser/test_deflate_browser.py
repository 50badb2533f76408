"""permessage-deflate with headless Chromium: the browser's own WebSocket and Plezi's client.js
negotiate it with a real plezi server, and compressed messages flow both ways (the server
inflates what Chromium compressed, Chromium reads what the server compressed, published
messages included)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import plezi
from browser.conftest import Pages
from helpers import UNIT, Running, app_of, wait_for
from plezi.pubsub.hub import hub

WAIT = 10_000 * UNIT  # ms, for page waits
PAGE = """<!doctype html><html><head><meta charset='utf-8'>
<script src="/client.js"></script><script>window.clientReady = true;</script></head></html>"""
#: A message worth compressing either way (Chromium compresses what it sends once negotiated).
BIG = json.dumps({"event": "say", "text": "hello from the browser, " * 40})


class Room:
    """``/room``: the page; as a WebSocket, subscribes to "deflate-room", publishes what it
    gets there (and echoes auto-dispatch events)."""

    auto_dispatch = True

    def index(self) -> str:
        return PAGE

    def on_open(self) -> None:
        self.subscribe("deflate-room")  # type: ignore[attr-defined]

    def say(self, msg: dict[str, Any]) -> None:
        plezi.publish("deflate-room", json.dumps({"event": "said", "text": msg["text"]}))


def inflated_messages(running: Running) -> list[int]:
    """How many compressed messages each open WebSocket of the server inflated."""

    def count() -> list[int]:
        return [
            conn.reader.inflater.messages
            for conn in running.server.streams.values()
            if getattr(conn, "reader", None) is not None and conn.reader.inflater is not None
        ]

    return list(running.call(count))


def test_browser_websocket_negotiates_permessage_deflate(
    serve: Callable[..., Running], pages: Pages
) -> None:
    running = serve(app_of(("/client.js", "client"), ("/room", Room)))
    page = pages.open(running.url + "/room")
    page.evaluate(
        """(url) => new Promise((resolve) => {
          window.got = [];
          const ws = window.ws = new WebSocket(url);
          ws.onmessage = (e) => got.push(e.data);
          ws.onopen = () => resolve();
        })""",
        running.ws_url + "/room",
    )
    extensions = page.evaluate("ws.extensions")
    assert extensions.startswith("permessage-deflate"), extensions
    assert "server_no_context_takeover" in extensions
    assert "client_no_context_takeover" in extensions
    wait_for(lambda: running.call(lambda: hub.registry.count("deflate-room")) == 1, "subscribed")
    for _ in range(3):
        page.evaluate("(text) => ws.send(text)", BIG)
    page.wait_for_function("() => got.length === 3", timeout=WAIT)
    said = json.loads(BIG)["text"]
    assert [json.loads(m)["text"] for m in page.evaluate("got")] == [said] * 3
    # Chromium compressed its messages and the server inflated them
    assert inflated_messages(running) == [3]
    page.evaluate("ws.close()")
    wait_for(lambda: running.call(lambda: hub.registry.count("deflate-room")) == 0, "closed")


def test_plezi_client_js_negotiates_permessage_deflate(
    serve: Callable[..., Running], pages: Pages
) -> None:
    running = serve(app_of(("/client.js", "client"), ("/room", Room)))
    page = pages.open(running.url + "/room")
    page.wait_for_function("() => window.clientReady === true", timeout=WAIT)
    page.evaluate(
        """() => {
          window.said = [];
          const client = window.client = new PleziClient();
          client.onopen = (e) => { window.extensions = e.target.extensions; };
          client.said = (msg) => said.push(msg.text);
        }"""
    )
    page.wait_for_function("() => client.connected", timeout=WAIT)
    assert page.evaluate("window.extensions").startswith("permessage-deflate")
    wait_for(lambda: running.call(lambda: hub.registry.count("deflate-room")) == 1, "subscribed")
    page.evaluate("(msg) => client.emit(JSON.parse(msg))", BIG)
    page.wait_for_function("() => said.length === 1", timeout=WAIT)
    assert page.evaluate("said") == [json.loads(BIG)["text"]]
    assert inflated_messages(running) == [1]
    page.evaluate("client.close()")
    wait_for(lambda: running.call(lambda: hub.registry.count("deflate-room")) == 0, "closed")
