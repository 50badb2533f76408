"""Presence notifications reach the browser client (headless Chromium, a real server).

A page's client connects to a controller that forwards the notification channel of ``room.1``
and joins it: the page sees other pages join and leave as ``presence`` events, through a
handler property and a listener alike, with no change to the client. Every wait is on a page
condition, with a bounded timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import plezi
from browser.conftest import Pages
from helpers import UNIT, Running
from plezi.pubsub import channels

WAIT = 10_000 * UNIT  # ms, for page waits

PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="/client.js"></script>
<script>
window.seen = [];
window.start = (name) => {
  window.client = new PleziClient("/room?name=" + name);
  client.presence = (msg) => seen.push(["property", msg]);
  client.on("presence", (msg) => seen.push(["listener", msg]));
};
</script></head><body>room</body></html>"""


class Room:
    auto_dispatch = True

    def index(self) -> str:
        return PAGE

    def on_open(self) -> None:
        self.subscribe(plezi.presence_channel("room.1"))  # type: ignore[attr-defined]
        self.subscribe("room.1", info={"name": self.params["name"]})  # type: ignore[attr-defined]


@pytest.fixture
def room(serve: Callable[..., Running]) -> Iterator[Running]:
    channels.configure("room.*", presence=True)
    app = plezi.App()
    app.route("/client.js", "client")
    app.route("/room", Room)
    try:
        yield serve(app)
    finally:
        channels.clear()


def presence_events(page: Any, kind: str, name: str) -> list[Any]:
    """The ``kind`` (join/leave) notifications about ``name`` that the page saw: one per way of
    listening."""
    return [  # type: ignore[no-any-return]
        (how, msg)
        for how, msg in page.evaluate("seen")
        if any(info == {"name": name} for info in msg.get(kind, {}).values())
    ]


def test_a_page_sees_other_pages_join_and_leave(room: Running, pages: Pages) -> None:
    ann = pages.open(room.url + "/room")
    ann.evaluate("start('ann')")
    # Her own join comes back to her once she is subscribed: then she is in the room.
    ann.wait_for_function("() => seen.length === 2", timeout=WAIT)
    bob = pages.open(room.url + "/room")
    bob.evaluate("start('bob')")
    ann.wait_for_function("() => seen.length === 4", timeout=WAIT)
    joins = presence_events(ann, "join", "bob")
    assert [how for how, _ in joins] == ["property", "listener"]
    _, msg = joins[0]
    assert msg["event"] == "presence" and msg["channel"] == "room.1"
    (bob_id,) = msg["join"]
    bob.evaluate("client.close()")
    ann.wait_for_function("() => seen.length === 6", timeout=WAIT)
    leaves = presence_events(ann, "leave", "bob")
    assert [m for _, m in leaves] == [
        {"event": "presence", "channel": "room.1", "leave": {bob_id: {"name": "bob"}}}
    ] * 2
