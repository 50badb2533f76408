"""Helpers of the Redis tests: plezi servers (``redis_app.py``) sharing one private Redis, the
WebSocket clients that talk through them, and their ``plezi.pubsub_status()``."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection
from wsclient import connect

from helpers import UNIT, Script

from .redisproc import RedisProcess

APP = Path(__file__).with_name("redis_app.py")


def status(server: Script) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/", timeout=5 * UNIT) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def join(server: Script, stack: contextlib.ExitStack) -> tuple[ClientConnection, str]:
    ws = stack.enter_context(connect(server.ws_url + "/"))
    greeting = ws.recv(timeout=5 * UNIT)
    assert isinstance(greeting, str) and greeting.startswith("id:")
    return ws, greeting[3:]


def sync(
    sender: ClientConnection,
    receivers: list[ClientConnection],
    tag: str,
    ignore: frozenset[str] = frozenset(),
) -> None:
    """Send numbered probes until every receiver got one: subscriptions are live on Redis.
    Drains the probes (and messages in ``ignore``), so later reads see only what the test
    sends next."""
    deadline = time.monotonic() + 15 * UNIT
    n = 0
    pending = list(receivers)
    while pending:
        assert time.monotonic() < deadline, "subscriptions never became live"
        n += 1
        sender.send(f"{tag}-{n}")
        still = []
        for ws in pending:
            try:
                message = ws.recv(timeout=0.3 * UNIT)
            except TimeoutError:
                still.append(ws)
                continue
            if message in ignore:
                still.append(ws)
                continue
            assert isinstance(message, str) and message.startswith(tag)
        pending = still
    # Let late probes land, then drop them.
    sender.send(f"{tag}-end")
    for ws in {*receivers, sender}:
        while (m := ws.recv(timeout=10 * UNIT)) != f"{tag}-end":
            assert isinstance(m, str) and (m.startswith(tag) or m in ignore)


@dataclass
class Pair:
    """Two servers sharing one Redis, a client on each, their subscriptions live on Redis."""

    s1: Script
    s2: Script
    a: ClientConnection
    b: ClientConnection
    b_id: str


def two_servers(
    redis: RedisProcess,
    script: Callable[..., Script],
    clients: contextlib.ExitStack,
    app_name: str | None = None,
    query: str = "",
) -> Pair:
    """``query``: options appended to the Redis URL (``"?protocol=3"``)."""
    env = {"APP_NAME": app_name} if app_name else None
    s1 = script(APP, "--redis", redis.url + query, env=env)
    s2 = script(APP, "--redis", redis.url + query, env=env)
    a, _ = join(s1, clients)
    b, b_id = join(s2, clients)
    sync(a, [a, b], "warm")
    return Pair(s1, s2, a, b, b_id)


def recv_all(ws: ClientConnection, count: int) -> list[str | bytes]:
    return [ws.recv(timeout=10 * UNIT) for _ in range(count)]
