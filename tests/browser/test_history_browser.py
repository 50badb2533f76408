"""Recovery in headless Chromium: a page loses its connection (its server stopped, then started
again on the same port) while another server on the same Redis keeps publishing, and ends with
every message exactly once, in order, told that it recovered."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from browser.conftest import Pages
from helpers import UNIT, free_port, wait_for
from pubsub.redis.redisproc import RedisProcess
from pubsub.redis.test_history_redis import APP, publisher, subscribers, top_offset

WAIT = 15_000 * UNIT  # ms, for page waits


def test_a_page_recovers_every_message_after_its_server_restarts(
    tmp_path: Any, script: Any, pages: Pages, clients: contextlib.ExitStack
) -> None:
    redis = RedisProcess(tmp_path).start()
    try:
        port = free_port()
        near = script(APP, "--redis", redis.url, "--port", str(port))
        far = script(APP, "--redis", redis.url)
        page = pages.open(near.url + "/page")
        page.wait_for_function("() => window.opens === 1", timeout=WAIT)
        wait_for(lambda: subscribers(redis) == 1, "the page's subscription on Redis")
        pub = publisher(far, clients)
        pub.send("pub chat 10 0")
        page.wait_for_function("() => window.got.length === 10", timeout=WAIT)

        near.stop(signal.SIGTERM)  # the page's connection drops; it keeps trying
        pub.send("pub chat 20 10")  # published on the other server meanwhile
        wait_for(lambda: top_offset(redis) == 30, "the messages published while it was away")
        again = script(APP, "--redis", redis.url, "--port", str(port))
        assert again.port == port
        page.wait_for_function("() => window.outcomes.length === 1", timeout=WAIT)
        pub.send("pub chat 10 30")  # live ones after the recovery
        page.wait_for_function("() => window.got.length >= 40", timeout=WAIT)
        # Nothing more comes: a duplicate would arrive with the live ones, in the same flow.
        pub.send("pub chat 1 40")
        page.wait_for_function("() => window.got.length >= 41", timeout=WAIT)
        assert page.evaluate("window.got") == list(range(41))
        assert page.evaluate("window.outcomes") == [{"channel": "chat", "recovered": True}]
        assert page.evaluate("window.opens") == 2
    finally:
        redis.kill()
