"""History and recovery through Redis, with real redis-server and plezi processes: positions are
the same on every server and from a plain script, a client that comes back (to any server) gets
exactly what it missed even while the channel is busy, and a Redis that lost its data, or a
client away longer than ``history_ttl``, gives ``recovered: false`` and no replay."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from wsclient import connect

from helpers import ROOT, UNIT, Script, wait_for

from .redisproc import RedisProcess

APP = Path(__file__).with_name("history_app.py")
#: The app's channel and meta key on Redis (app_name: the script's name plus ``_app``).
REMOTE = "history_app_app:chat"
META = "history_app_app:\x00plz:meta:chat"


def subscribers(redis: RedisProcess) -> int:
    """How many processes are subscribed to the app's ``chat`` on Redis."""
    reply = redis.command("PUBSUB", "NUMSUB", REMOTE)
    return int(reply.rstrip().rsplit(":", 1)[1])


def top_offset(redis: RedisProcess) -> int:
    reply = redis.command("HGET", META, "o")
    return int(reply.split("\r\n")[1]) if reply.startswith("$") and "$-1" not in reply else 0


class Client:
    """A browser-like subscriber of ``/sub/chat``: records the messages and its last position."""

    def __init__(
        self,
        server: Script,
        stack: contextlib.ExitStack,
        position: dict[str, Any] | None = None,
    ) -> None:
        url = server.ws_url + "/sub/chat"
        if position is not None:
            since = [position["epoch"], position["offset"]]
            url += "?_recover=" + urllib.parse.quote(json.dumps({"chat": since}))
        self.ws: ClientConnection = stack.enter_context(connect(url))
        ready, pid = str(self.ws.recv(timeout=10 * UNIT)).split()
        assert ready == "ready"
        #: The process that serves this client.
        self.pid = int(pid)
        self.notices: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []

    def read(self) -> dict[str, Any]:
        """The next message of the channel (notices are kept aside)."""
        while True:
            got = json.loads(self.ws.recv(timeout=10 * UNIT))
            if got.get("event") in ("_recover_", "on_recover"):
                self.notices.append(got)
                continue
            self.messages.append(got)
            return got  # type: ignore[no-any-return]

    def take(self, count: int) -> list[dict[str, Any]]:
        return [self.read() for _ in range(count)]

    def until(self, n: int) -> None:
        while not self.messages or self.messages[-1]["n"] != n:
            self.read()

    def notice(self, event: str = "_recover_") -> dict[str, Any]:
        """The notice ``event`` (``_recover_`` to the client; ``on_recover``: the server-side
        callback ran), read before the channel's next message."""
        while not any(m["event"] == event for m in self.notices):
            self.notices.append(json.loads(self.ws.recv(timeout=10 * UNIT)))
        return next(m for m in self.notices if m["event"] == event)

    @property
    def position(self) -> dict[str, Any]:
        return dict(self.messages[-1]["_pos"])


def publisher(server: Script, stack: contextlib.ExitStack) -> ClientConnection:
    ws = stack.enter_context(connect(server.ws_url + "/sub/control"))
    assert str(ws.recv(timeout=10 * UNIT)).startswith("ready ")
    return ws


def seen_then_gone(
    server: Script, redis: RedisProcess, stack: contextlib.ExitStack, count: int
) -> tuple[ClientConnection, dict[str, Any]]:
    """A client gets the channel's first ``count`` messages and leaves: a publisher on
    ``server`` and the client's last position."""
    sub = Client(server, stack)
    wait_for(lambda: subscribers(redis) == 1, "subscribed on Redis")
    pub = publisher(server, stack)
    pub.send(f"pub chat {count} 0")
    assert_exact(sub.take(count), 1, count)
    sub.ws.close()
    return pub, sub.position


def assert_exact(messages: list[dict[str, Any]], first: int, last: int) -> None:
    """Offsets ``first`` to ``last``, each once, in order, each the message ``n = offset - 1``
    (every message of the test is published in ``n`` order, one per offset)."""
    offsets = [m["_pos"]["offset"] for m in messages]
    assert offsets == list(range(first, last + 1)), offsets
    assert all(m["n"] == m["_pos"]["offset"] - 1 for m in messages)
    assert len({m["_pos"]["epoch"] for m in messages}) == 1


def test_positions_are_shared_by_servers_and_plain_scripts(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    a = script(APP, "--redis", redis.url)
    b = script(APP, "--redis", redis.url)
    on_a, on_b = Client(a, clients), Client(b, clients)
    wait_for(lambda: subscribers(redis) == 2, "both servers subscribed on Redis")
    publisher(a, clients).send("pub chat 3 0")
    assert_exact(on_a.take(3), 1, 3)
    publisher(b, clients).send("pub chat 2 3")
    # A script with no server publishes through the same Redis (REDIS_URL), positions too.
    source = (
        "import plezi\nplezi.app_name = 'history_app_app'\n"
        "plezi.channel('chat', history=1000)\nplezi.publish('chat', {'n': 5})\n"
    )
    env = {**os.environ, "REDIS_URL": redis.url}
    env.pop("PLEZI_NO_AUTOSTART", None)
    done = subprocess.run(
        [sys.executable, "-c", source], env=env, cwd=str(ROOT), timeout=20 * UNIT, check=False
    )
    assert done.returncode == 0
    assert_exact(on_a.take(3), 4, 6)
    assert_exact(on_b.take(6), 1, 6)
    assert on_a.messages[0]["_pos"]["epoch"] == on_b.messages[0]["_pos"]["epoch"]


def test_recovery_on_another_server_while_the_channel_is_busy(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    """A client leaves A, messages are published on B meanwhile, and the client comes back to
    A (where nobody else subscribes: A's subscription starts with the recovery) or to B, while
    B keeps publishing: every message after its position, once, in order, then live ones."""
    a = script(APP, "--redis", redis.url)
    b = script(APP, "--redis", redis.url)
    first = Client(a, clients)
    wait_for(lambda: subscribers(redis) == 1, "A subscribed on Redis")
    pub = publisher(b, clients)
    pub.send("pub chat 5 0")
    assert_exact(first.take(5), 1, 5)
    position = first.position
    first.ws.close()
    wait_for(lambda: subscribers(redis) == 0, "A unsubscribed from Redis")
    pub.send("pub chat 20 5")
    wait_for(lambda: top_offset(redis) == 25, "25 messages in the history")

    floods, per = 40, 10
    stop = threading.Event()

    def flood() -> None:
        for k in range(floods):
            pub.send(f"pub chat {per} {25 + k * per}")
            time.sleep(0.01)
        stop.set()

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        back = [Client(server, clients, position) for server in (a, b, a, b)]
    finally:
        thread.join(30 * UNIT)
    last_n = 25 + floods * per - 1
    for client in back:
        client.until(last_n)
        assert client.notice()["recovered"] is True
        assert client.notice("on_recover") == {
            "event": "on_recover",
            "channel": "chat",
            "recovered": True,
        }
        assert_exact(client.messages, position["offset"] + 1, last_n + 1)


def _persistent(tmp_path: Path, persist: bool) -> RedisProcess:
    args = ("--appendonly", "yes", "--appendfsync", "always") if persist else ()
    return RedisProcess(tmp_path, *args).start()


@pytest.mark.parametrize("persist", [True, False], ids=["persistent", "not-persistent"])
def test_redis_killed_and_restarted(
    tmp_path: Path, script: Any, clients: contextlib.ExitStack, persist: bool
) -> None:
    """With persistence the history survives: the client recovers, the messages published
    during the outage included. Without, the epoch changes: ``recovered`` is false, nothing is
    replayed (never a silent gap), and the client's next messages are live ones."""
    redis = _persistent(tmp_path, persist)
    try:
        server = script(APP, "--redis", redis.url + "?health_check_interval=0.5")
        pub, position = seen_then_gone(server, redis, clients, 3)
        redis.kill()
        time.sleep(0.3 * UNIT)
        pub.send("pub chat 2 3")  # queued by the server while Redis is down
        redis.start()
        # Reconnected and the queued messages published: offsets 4, 5 (persistent), or 1, 2.
        wait_for(lambda: top_offset(redis) == (5 if persist else 2), "the queued messages")
        back = Client(server, clients, position)
        notice = back.notice()
        if persist:
            assert notice["recovered"] is True and notice["offset"] == 5
            back.until(4)
            assert_exact(back.messages, 4, 5)
        else:
            assert notice["recovered"] is False and notice["epoch"] != position["epoch"]
            pub.send("pub chat 1 2")  # offset 3 of the new epoch: n == offset - 1 holds
            got = back.read()
            assert got["n"] == 2 and got["_pos"]["offset"] == 3  # live, nothing replayed
    finally:
        redis.kill()


def test_a_client_away_longer_than_history_ttl_does_not_recover(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    server = script(APP, "--redis", redis.url, env={"HISTORY_TTL": str(UNIT)})
    pub, position = seen_then_gone(server, redis, clients, 1)
    pub.send("pub chat 1 1")
    wait_for(lambda: top_offset(redis) == 2, "the second message in the history")
    time.sleep(1.5 * UNIT)
    back = Client(server, clients, position)
    notice = back.notice()
    assert notice == {
        "event": "_recover_",
        "channel": "chat",
        "recovered": False,
        "epoch": position["epoch"],
        "offset": 2,
    }
    assert back.notice("on_recover")["recovered"] is False


def test_the_history_on_redis_is_bounded_by_size_and_ttl(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    """``history=50``: after 1,000 messages the stream holds about 50 (Redis trims whole nodes
    of up to 100 entries), and a read gives exactly the last 50; ``history_ttl``: the stream
    is gone that long after the last message, and a client behind it does not recover."""
    stream = "history_app_app:\x00plz:stream:chat"
    env = {"HISTORY": "50", "HISTORY_TTL": str(UNIT)}
    server = script(APP, "--redis", redis.url, env=env)
    sub = Client(server, clients)
    wait_for(lambda: subscribers(redis) == 1, "subscribed on Redis")
    publisher(server, clients).send("pub chat 1000 0")
    sub.until(999)
    length = int(redis.command("XLEN", stream).strip().lstrip(":"))
    assert 50 <= length <= 150, length
    assert 0 < int(redis.command("PTTL", stream).strip().lstrip(":")) <= 1000 * UNIT
    back = Client(server, clients, {"epoch": sub.position["epoch"], "offset": 950})
    assert back.notice()["recovered"] is True
    back.until(999)
    assert_exact(back.messages, 951, 1000)
    too_far = Client(server, clients, {"epoch": sub.position["epoch"], "offset": 940})
    assert too_far.notice()["recovered"] is False  # 60 behind, 50 kept
    wait_for(lambda: redis.command("EXISTS", stream).strip() == ":0", "the stream to expire")
    assert top_offset(redis) == 1000  # the meta key stays: the next message is 1001


def test_a_recovery_while_redis_is_down_says_recovered_false(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    """The history cannot be read (nor the subscription confirmed): after the connection
    timeout the client is told ``recovered: false`` (no position to offer), never left waiting
    on a silent gap; once Redis is back the live flow reaches it."""
    server = script(APP, "--redis", redis.url + "?health_check_interval=0.5")
    pub, position = seen_then_gone(server, redis, clients, 2)
    redis.kill()
    back = Client(server, clients, position)
    notice = back.notice()
    assert notice == {"event": "_recover_", "channel": "chat", "recovered": False}
    assert back.notice("on_recover")["recovered"] is False
    redis.start()  # empty: a new epoch, offsets from 1
    wait_for(lambda: subscribers(redis) == 1, "the server resubscribed")
    pub.send("pub chat 1 0")
    got = back.read()
    assert got["n"] == 0 and got["_pos"]["offset"] == 1
    assert got["_pos"]["epoch"] != position["epoch"]


def test_a_burst_from_two_servers_at_once(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    """Two servers publish 500 messages each at the same moment (each server's burst goes to
    Redis in batches: two script runs, the first message alone): every subscriber on both
    servers gets all 1,000 with the same positions, one apart, each server's messages in
    their order; then a client 200 behind recovers exactly the rest."""
    a = script(APP, "--redis", redis.url)
    b = script(APP, "--redis", redis.url)
    subs = [Client(server, clients) for server in (a, a, b, b)]
    wait_for(lambda: subscribers(redis) == 2, "both servers subscribed on Redis")
    pub_a, pub_b = publisher(a, clients), publisher(b, clients)
    redis.command("CONFIG", "RESETSTAT")
    pub_a.send("pub chat 500 0")
    pub_b.send("pub chat 500 1000")
    for sub in subs:
        sub.take(1000)
    first = subs[0].messages
    assert [m["_pos"]["offset"] for m in first] == list(range(1, 1001))
    assert len({m["_pos"]["epoch"] for m in first}) == 1
    for sub in subs[1:]:
        assert sub.messages == first  # the same messages at the same positions everywhere
    ns = [m["n"] for m in first]
    assert [n for n in ns if n < 1000] == list(range(500))
    assert [n for n in ns if n >= 1000] == list(range(1000, 1500))
    assert redis.calls("evalsha") == 4  # 2 per server for 500 messages, not 500
    assert top_offset(redis) == 1000

    position = {"epoch": first[0]["_pos"]["epoch"], "offset": 200}
    for server in (a, b):
        back = Client(server, clients, position)
        assert back.notice()["recovered"] is True
        back.take(800)
        assert back.messages == first[200:]


def test_many_recoveries_at_once_all_recover(
    redis: RedisProcess, script: Any, clients: contextlib.ExitStack
) -> None:
    """150 clients come back while Redis is frozen, so their 150 history reads are all waiting
    at once when it thaws: each one recovers (redis-py's default pool refused the 101st)."""
    server = script(APP, "--redis", redis.url)
    keeper = Client(server, clients)  # keeps the channel subscribed on Redis
    pub, position = seen_then_gone(server, redis, clients, 1)
    keeper.take(1)
    pub.send("pub chat 2 1")
    wait_for(lambda: top_offset(redis) == 3, "three messages in the history")
    keeper.take(2)
    redis.freeze()
    try:
        back = [Client(server, clients, position) for _ in range(150)]
    finally:
        redis.thaw()
    for client in back:
        assert client.notice()["recovered"] is True
        assert_exact(client.take(2), 2, 3)
