"""The browser's own ``EventSource`` against a real plezi server, in headless Chromium.

One route serves the page (a navigation: ``Accept: text/html``) and the stream (``EventSource``
sends ``Accept: text/event-stream``). The page gets published messages and named events, and
reconnects, with ``Last-Event-ID``, after the server ends the stream. Every wait is on a page
condition, with a bounded timeout; nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import plezi
from browser.conftest import Pages
from helpers import UNIT, Running

WAIT = 10_000 * UNIT  # ms, for page waits

PAGE = """<!doctype html><html><head><meta charset="utf-8"><script>
window.log = [];
const source = new EventSource("/feed?channel=news");
source.onopen = () => log.push({ open: true });
source.onmessage = (e) => log.push({ data: e.data, id: e.lastEventId });
source.addEventListener("hello", (e) => log.push({ hello: e.data, id: e.lastEventId }));
source.onerror = () => log.push({ error: source.readyState });
window.source = source;
</script></head><body>feed</body></html>"""


def feed_app(streams: list[Any], last_ids: list[str | None], opened: threading.Semaphore) -> Any:
    class Feed:
        def index(self) -> str:
            return PAGE

        def on_open(self) -> None:
            streams.append(self)
            last_ids.append(self.request.headers.get("last-event-id"))  # type: ignore[attr-defined]
            self.subscribe(self.params["channel"])  # type: ignore[attr-defined]
            n = len(streams)
            # A short retry so that the reconnect comes quickly.
            self.write_event(f"connection {n}", event="hello", id=f"e{n}", retry=100)  # type: ignore[attr-defined]
            opened.release()

        def on_message(self, data: Any) -> None:
            pass

    app = plezi.App()
    app.route("/feed", Feed)
    return app


def test_event_source_gets_events_and_reconnects(
    serve: Callable[..., Running], pages: Pages
) -> None:
    streams: list[Any] = []
    last_ids: list[str | None] = []
    opened = threading.Semaphore(0)
    running = serve(feed_app(streams, last_ids, opened))
    page = pages.open(running.url + "/feed")
    assert page.evaluate("document.body.textContent") == "feed"
    page.wait_for_function("() => log.some((e) => e.hello)", timeout=WAIT)
    assert opened.acquire(timeout=5 * UNIT)

    plezi.publish("news", "first")
    plezi.publish("news", {"multi": "line\nvalue"})
    page.wait_for_function("() => log.filter((e) => 'data' in e).length === 2", timeout=WAIT)
    # The server ends the stream; the browser reconnects and says what it saw last.
    running.call(lambda: streams[0].close())
    assert opened.acquire(timeout=10 * UNIT), "the browser did not reconnect"
    page.wait_for_function("() => log.filter((e) => e.hello).length === 2", timeout=WAIT)
    plezi.publish("news", "after the reconnect")
    page.wait_for_function("() => log.filter((e) => 'data' in e).length === 3", timeout=WAIT)

    log = page.evaluate("log")
    assert [e for e in log if "hello" in e] == [
        {"hello": "connection 1", "id": "e1"},
        {"hello": "connection 2", "id": "e2"},
    ]
    assert [e for e in log if "data" in e] == [
        {"data": "first", "id": "e1"},
        {"data": '{"multi":"line\\nvalue"}', "id": "e1"},
        {"data": "after the reconnect", "id": "e2"},
    ]
    assert sum(1 for e in log if "open" in e) == 2
    assert {"error": 0} in log  # CONNECTING: the end of the stream, then the reconnect
    assert last_ids == [None, "e1"]
    page.evaluate("source.close()")
