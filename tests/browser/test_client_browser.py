"""The browser client in headless Chromium against a real plezi server.

Pages load the client from the server (``/client.js``, or ``/client.mjs`` as an ES module),
connect, emit, and get acks, replies, broadcasts and error replies; the chat example survives its
server being stopped and started again on the same port. Every wait is on a page condition or a
message, with a bounded timeout; nothing sleeps.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest
from wsclient import connect

import plezi
from browser.conftest import Pages
from helpers import ROOT, UNIT, Running, Script, free_port

CHAT = ROOT / "examples" / "chat_client" / "chat.py"
WAIT = 10_000 * UNIT  # ms, for page waits

#: Test helpers in every page: ``start(url, options)`` makes ``window.client`` and logs its
#: lifecycle and unhandled messages in ``client.log``.
HELPERS = """
<script>
window.start = (url, options) => {
  const client = new PleziClient(url, options);
  client.log = [];
  client.onopen = () => client.log.push({ event: "open" });
  client.onclose = (e) => client.log.push({ event: "close", code: e.code });
  client.unknown = (msg) => client.log.push({ unknown: msg });
  window.client = client;
  return client.url;
};
window.attempt = async (msg, options) => {
  try {
    return { ack: await client.emit(msg, options) };
  } catch (err) {
    return { name: err.name, status: err.status, reply: err.reply, isEmitError:
      err instanceof (window.EmitError || PleziClient.EmitError) };
  }
};
</script>
"""
CLASSIC = '<script src="/client.js"></script><script>window.clientReady = true;</script>'
MODULE = """<script type="module">
import { PleziClient, EmitError } from "/client.mjs";
window.PleziClient = PleziClient;
window.EmitError = EmitError;
window.clientReady = true;
</script>"""


def page_html(loader: str) -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'>{loader}{HELPERS}</head></html>"


def lobby_app() -> plezi.App:
    """``/lobby``: the test page (classic; ``/lobby/module``: the ES module) and its events."""
    members: set[Any] = set()

    class Lobby:
        auto_dispatch = True

        def index(self) -> str:
            return page_html(CLASSIC)

        def module(self) -> str:
            return page_html(MODULE)

        def on_open(self) -> None:
            members.add(self)

        def on_close(self) -> None:
            members.discard(self)

        def echo(self, msg: dict[str, Any]) -> dict[str, Any]:
            return msg

        def shout(self, msg: dict[str, Any]) -> None:
            line = json.dumps({"event": "shout", "text": msg.get("text")})
            for member in list(members):
                member.write(line)

    class Silent:
        """Raw WebSocket: never acks anything."""

        def on_message(self, data: str) -> None:
            pass

    app = plezi.App()
    app.route("/client.js", "client")
    app.route("/lobby", Lobby)
    app.route("/silent", Silent)
    return app


@pytest.fixture
def lobby(serve: Callable[..., Running]) -> Running:
    return serve(lobby_app())


def open_client(pages: Pages, url: str, client_url: str | None = None, **options: Any) -> Any:
    """A tab on ``url`` whose ``window.client`` is connected."""
    page = pages.open(url)
    page.wait_for_function("() => window.clientReady === true", timeout=WAIT)
    page.evaluate("([url, options]) => start(url || undefined, options)", [client_url, options])
    page.wait_for_function("() => client.connected", timeout=WAIT)
    return page


# -- connect, emit, acks, replies -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/lobby", "/lobby/module"], ids=["classic", "module"])
def test_page_connects_to_its_own_path_emits_and_gets_acks(
    lobby: Running, pages: Pages, path: str
) -> None:
    page = open_client(pages, lobby.url + path)
    assert page.evaluate("client.url") == lobby.ws_url + path
    page.evaluate(
        """() => {
          window.replies = [];
          client.echo = (msg) => replies.push(["property", msg.text]);
          client.on("echo", (msg) => replies.push(["listener", msg.text]));
        }"""
    )
    result = page.evaluate("attempt({event: 'echo', text: 'hi'}, {timeout: 5000})")
    assert result["ack"]["event"] == "_ack_"
    assert isinstance(result["ack"]["_EID_"], int)
    page.wait_for_function("() => replies.length === 2", timeout=WAIT)
    assert page.evaluate("replies") == [["property", "hi"], ["listener", "hi"]]
    assert page.evaluate("client.emit({event: 'echo', text: 'plain'})") is True
    page.wait_for_function("() => replies.length === 4", timeout=WAIT)
    assert page.evaluate("client.log") == [{"event": "open"}]


def test_broadcasts_reach_other_pages_and_other_clients(lobby: Running, pages: Pages) -> None:
    first = open_client(pages, lobby.url + "/lobby")
    second = open_client(pages, lobby.url + "/lobby/module")
    with connect(lobby.ws_url + "/lobby") as observer:
        observer.send(json.dumps({"event": "echo", "ready": True}))
        assert json.loads(observer.recv(timeout=5 * UNIT))["ready"] is True
        for page in (first, second):
            page.evaluate("() => { window.shouts = []; client.shout = (m) => shouts.push(m.text) }")
        first.evaluate("client.emit({event: 'shout', text: 'to everyone'})")
        for page in (first, second):
            page.wait_for_function("() => shouts.length === 1", timeout=WAIT)
            assert page.evaluate("shouts") == ["to everyone"]
        assert json.loads(observer.recv(timeout=5 * UNIT)) == {
            "event": "shout",
            "text": "to everyone",
        }


def test_page_sees_its_own_error_replies(lobby: Running, pages: Pages) -> None:
    page = open_client(pages, lobby.url + "/lobby")
    result = page.evaluate("attempt({event: 'no_such_event'}, {timeout: 5000})")
    assert result["name"] == "ServerError" and result["isEmitError"]
    assert result["status"] == 404
    assert result["reply"]["request"]["event"] == "no_such_event"
    # Not awaited: the `_err_` reply goes to `_err_` handlers, else to `unknown`.
    page.evaluate("client.emit({text: 'no event at all'})")
    # Both replies (the 404 above and this 400) must have arrived before they are counted.
    page.wait_for_function("() => client.log.filter((e) => e.unknown).length >= 2", timeout=WAIT)
    unknown = [e["unknown"] for e in page.evaluate("client.log") if "unknown" in e]
    assert len(unknown) == 2
    assert (unknown[0]["status"], unknown[1]["status"]) == (404, 400)
    assert unknown[1]["request"] == {"text": "no event at all"}
    # The connection stayed open through both.
    assert page.evaluate("attempt({event: 'echo'}, {timeout: 5000})")["ack"]["event"] == "_ack_"
    assert page.evaluate("client.log.filter((e) => e.event === 'close').length") == 0


def test_emit_without_ack_times_out(lobby: Running, pages: Pages) -> None:
    page = pages.open(lobby.url + "/lobby")
    page.wait_for_function("() => window.clientReady === true", timeout=WAIT)
    page.evaluate("start('/silent')")
    page.wait_for_function("() => client.connected", timeout=WAIT)
    assert page.evaluate("client.url") == lobby.ws_url + "/silent"
    result = page.evaluate("attempt({event: 'echo'}, {timeout: 300})")
    assert result["name"] == "TimeoutError" and result["isEmitError"]


def test_close_stays_closed(lobby: Running, pages: Pages) -> None:
    page = open_client(pages, lobby.url + "/lobby", minDelay=10, maxDelay=10)
    page.evaluate("client.close()")
    page.wait_for_function("() => client.log.some((e) => e.event === 'close')", timeout=WAIT)
    assert page.evaluate("client.connected") is False
    assert page.evaluate("client.emit({event: 'echo'})") is False
    assert page.evaluate("attempt({event: 'echo'}, {timeout: 5000})")["name"] == "ClosedError"
    assert page.evaluate("client.log") == [{"event": "open"}, {"event": "close", "code": 1000}]


# -- the chat example, with its server restarted --------------------------------------------------


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.click("button")


def chat_lines(page: Any) -> list[str]:
    return list(page.locator("#messages li").all_inner_texts())


def test_chat_survives_a_server_restart(script: Callable[..., Script], pages: Pages) -> None:
    port = free_port()
    server = script(CHAT, "--port", str(port))
    assert server.port == port
    page = pages.open(server.url + "/")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('connected')",
        timeout=WAIT,
    )
    # Keep the reconnect attempts frequent, so the test does not wait for a long backoff.
    page.evaluate("() => { client.options.maxDelay = 300; }")
    page.fill("#name", "ann")
    say(page, "before")
    page.wait_for_function("() => document.querySelectorAll('#messages li').length === 1")
    assert chat_lines(page) == ["ann: before"]

    code, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.startsWith('disconnected')",
        timeout=WAIT,
    )
    say(page, "queued one")
    say(page, "queued two")
    page.wait_for_function("() => client.queued === 2", timeout=WAIT)

    again = script(CHAT, "--port", str(port))
    assert again.port == port
    page.wait_for_function(
        "() => document.querySelectorAll('#messages li').length === 3", timeout=WAIT
    )
    assert chat_lines(page) == ["ann: before", "ann: queued one", "ann: queued two"]
    assert page.evaluate("client.queued") == 0
    page.wait_for_function(
        "() => document.querySelector('#status').textContent === 'connected: message delivered'",
        timeout=WAIT,
    )
    code, err = again.stop(signal.SIGTERM)
    assert code == 0, err
