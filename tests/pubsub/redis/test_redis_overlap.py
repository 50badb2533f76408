"""A connection subscribed to a channel and to patterns that match it gets a message once per
subscription, through Redis as in one process (Redis sends a copy per matching subscription
of the process; only one of them may be delivered)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection
from wsclient import connect

from helpers import UNIT, Script, wait_for

from .redisproc import RedisProcess

APP = """
import plezi

class Both:
    def on_open(self):
        self.subscribe("room")
        self.subscribe("ro*", pattern=True)
        self.subscribe("r*", pattern=True)
        self.write("ready")

    def on_message(self, data):
        plezi.publish(data.split(":", 1)[0], data)

plezi.route("/", Both)
"""


def copies(ws: ClientConnection, channel: str) -> list[str]:
    """The copies of one message published on ``channel`` that reach ``ws``: a second message
    published after it ends the count (messages keep their order)."""
    ws.send(f"{channel}:one")
    ws.send(f"{channel}:two")
    got: list[str] = []
    while True:
        message = ws.recv(timeout=10 * UNIT)
        assert isinstance(message, str)
        if message.endswith(":two"):
            return got
        got.append(message)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "both.py"
    path.write_text(APP)
    return path


def live_patterns(redis: RedisProcess) -> int:
    return int(redis.command("PUBSUB", "NUMPAT").strip().lstrip(":"))


@pytest.mark.parametrize(
    ("channel", "expected"),
    [("room", 3), ("rover", 2), ("rx", 1)],  # room: channel, ro*, r*; rover: ro*, r*; rx: r*
)
def test_one_copy_per_subscription_through_redis_as_in_one_process(
    redis: RedisProcess,
    script: Callable[..., Script],
    app: Path,
    channel: str,
    expected: int,
) -> None:
    local = script(app)
    shared = script(app, "--redis", redis.url)
    for server in (local, shared):
        with connect(server.ws_url + "/") as ws:
            assert ws.recv(timeout=10 * UNIT) == "ready"
            if server is shared:  # the direct-message pattern and ro*, r* are live on Redis
                wait_for(lambda: live_patterns(redis) >= 3, "the patterns on Redis")
            got = copies(ws, channel)
            assert got == [f"{channel}:one"] * expected, (server is shared, got)
