"""``/metrics`` with the Redis engine: the engine's state and its reconnects, through an outage
of a real redis-server (killed, then started again on the same port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import start_script, wait_for
from promclient import scrape, value
from pubsub.redis.redisproc import RedisProcess

APP = """
import plezi


class Room:
    def on_open(self):
        self.subscribe("room")

    def on_message(self, data):
        plezi.publish("room", data)


plezi.route("/", Room)
plezi.route("/metrics", "metrics")
"""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path).start()
    yield server
    server.kill()


def test_redis_state_and_reconnects(redis: RedisProcess, tmp_path: Path) -> None:
    path = tmp_path / "redis_metrics.py"
    path.write_text(APP)
    script = start_script(path, "--redis", redis.url + "?health_check_interval=0.3")
    try:

        def figures() -> tuple[float, float, float]:
            samples = scrape(script.url)
            return (
                value(samples, "plezi_pubsub_connected", engine="redis"),
                value(samples, "plezi_redis_outages_total"),
                value(samples, "plezi_redis_reconnects_total"),
            )

        assert figures() == (1, 0, 0)
        redis.kill()
        wait_for(lambda: figures() == (0, 1, 0), "the outage in the figures")
        redis.start()
        wait_for(lambda: figures() == (1, 1, 1), "the reconnect in the figures")
    finally:
        code, log = script.stop()
    assert code == 0, log
