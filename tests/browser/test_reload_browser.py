"""``--reload`` with a page open in headless Chromium: the app's file is edited, the server
restarts (the old one closes the WebSocket with 1001), and the browser client reconnects by
itself to the new code, on the same URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from browser.conftest import Pages
from browser.test_client_browser import CLASSIC, WAIT, open_client, page_html
from helpers import Script

APP = """\
import plezi

PAGE = {page!r}
VERSION = {version!r}

class Lobby:
    auto_dispatch = True

    def index(self):
        return PAGE

    def version(self, msg):
        return {{"event": "version", "text": VERSION}}

plezi.route("/client.js", "client")
plezi.route("/lobby", Lobby)
"""


def test_browser_client_reconnects_to_the_reloaded_server(
    script: Callable[..., Script], pages: Pages, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP.format(page=page_html(CLASSIC), version="one"))
    running = script(app, "--reload")
    page = open_client(pages, running.url + "/lobby")
    page.evaluate("() => { window.versions = []; client.version = (m) => versions.push(m.text) }")
    page.evaluate("client.emit({event: 'version'})")
    page.wait_for_function("() => versions.length === 1", timeout=WAIT)
    app.write_text(APP.format(page=page_html(CLASSIC), version="two"))
    page.wait_for_function(
        "() => client.log.filter((e) => e.event === 'open').length === 2", timeout=3 * WAIT
    )
    assert page.evaluate("client.log")[:2] == [{"event": "open"}, {"event": "close", "code": 1001}]
    page.evaluate("client.emit({event: 'version'})")
    page.wait_for_function("() => versions.length === 2", timeout=WAIT)
    assert page.evaluate("versions") == ["one", "two"]
    code, err = running.stop()
    assert code == 0, err
