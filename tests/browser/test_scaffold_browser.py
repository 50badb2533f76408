"""The welcome page of an app made by ``plezi new``, in headless Chromium: two tabs connected
with plezi's browser client; a message typed in one, or sent by another WebSocket client, shows up
live in both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from wsclient import connect

from browser.conftest import Pages
from helpers import UNIT, Script
from plezi.launch.scaffold import new_command

WAIT = 10_000 * UNIT  # ms, for page waits
CONNECTED = "() => document.querySelector('#status').textContent === 'connected'"


def lines(page: Any) -> list[str]:
    return list(page.locator("#messages li").all_inner_texts())


def test_the_welcome_page_shows_messages_live(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: Callable[..., Script],
    pages: Pages,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert new_command(["hello"]) == 0
    server = script(tmp_path / "hello" / "hello.py")
    first = pages.open(server.url + "/")
    second = pages.open(server.url + "/")
    for page in (first, second):
        page.wait_for_function(CONNECTED, timeout=WAIT)
        assert page.title() == "hello"
        # public/style.css is served and applied (#status.online is green there)
        color = "() => getComputedStyle(document.querySelector('#status')).color"
        assert page.evaluate(color) == "rgb(0, 102, 0)"

    first.fill("#text", "typed in the first tab")
    first.click("button")
    for page in (first, second):
        page.wait_for_function(
            "() => document.querySelectorAll('#messages li').length === 1", timeout=WAIT
        )
        assert lines(page) == ["typed in the first tab"]

    with connect(server.ws_url + "/") as ws:
        ws.send('{"event": "chat", "text": "from a WebSocket client"}')
    answer = httpx.post(
        server.url + "/chat", data={"text": "from curl"}, trust_env=False, timeout=5 * UNIT
    )
    assert answer.json() == {"event": "delivered"}
    for page in (first, second):
        page.wait_for_function(
            "() => document.querySelectorAll('#messages li').length === 3", timeout=WAIT
        )
        assert lines(page) == [
            "typed in the first tab",
            "from a WebSocket client",
            "from curl",
        ]
    code, err = server.stop()
    assert code == 0, err
