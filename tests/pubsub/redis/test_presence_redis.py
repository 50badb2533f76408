"""Presence through Redis: two servers on one private redis-server, real clients.

Both servers run ``presence_app.py`` with a short ``presence_ttl`` so that expiry is observable;
faults are real: a server killed with SIGKILL, Redis killed and started again (no persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from helpers import UNIT, Script
from plezi.pubsub.redis_presence import RedisPresence

from ..presence_client import APP, Member
from .redisproc import RedisProcess

TTL = 2.0


def servers(
    redis: RedisProcess, script: Callable[..., Script], count: int = 2, app: str = "presence"
) -> list[Script]:
    env = {"PRESENCE_TTL": str(TTL * UNIT), "APP_NAME": app}
    return [script(APP, "--redis", redis.url, env=env) for _ in range(count)]


def room_on_two_servers(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> tuple[Script, Script, Member, Member]:
    """Two servers, ann on the first and bob on the second, both seen in ``room.1``."""
    s1, s2 = servers(redis, script)
    ann = Member(clients, s1.ws_url, "room.1", "ann")
    bob = Member(clients, s2.ws_url, "room.1", "bob")
    both = {ann.id: {"name": "ann"}, bob.id: {"name": "bob"}}
    assert ann.wait_who(lambda got: got == both) == bob.who() == both
    return s1, s2, ann, bob


def test_two_servers_share_the_table_and_announce_each_others_joins_and_leaves(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    s1, s2, ann, bob = room_on_two_servers(redis, script, clients)
    both = {ann.id: {"name": "ann"}, bob.id: {"name": "bob"}}
    # bob's join reached ann's server once its subscription to the notifications was live:
    # a third member joining now is announced to both.
    cat = Member(clients, s2.ws_url, "room.1", "cat")
    for m in (ann, bob):
        assert m.joined(cat)["join"] == {cat.id: {"name": "cat"}}
    cat.close()
    for m in (ann, bob):
        assert m.left(cat)["leave"] == {cat.id: {"name": "cat"}}
    assert ann.who() == both
    # A join is two HSETs and a PUBLISH (written together: see the round-trip test below).
    before = redis.calls("hset")
    dan = Member(clients, s1.ws_url, "room.1", "dan")
    ann.joined(dan)
    assert redis.calls("hset") - before == 2


def test_joins_of_one_iteration_share_one_round_trip(redis: RedisProcess) -> None:
    token = "feedc0ffee00"
    presence = RedisPresence(redis.url, "rt:", token, b"\x00plz:t", lambda: True)

    async def main() -> tuple[int, dict[str, Any], int]:
        for i in range(200):
            presence.join("room.1", f"{token}-{i:x}", b'{"n":%d}' % i, 60.0)
        members = await presence.members("room.1", 60.0)
        trips = presence.round_trips
        for i in range(0, 200, 2):
            presence.leave("room.1", f"{token}-{i:x}")
        left = await presence.members("room.1", 60.0)
        await presence.stop()
        return trips, members, len(left)

    trips, members, left = asyncio.run(main())
    assert members == {f"{token}-{i:x}": {"n": i} for i in range(200)}
    assert trips == 2  # the 200 joins (and this server's registration), then the read
    assert left == 100
    assert presence.round_trips == 4
    # Stopped: nothing of this server is left on Redis.
    assert redis.command("EXISTS", "rt:presence:room.1").strip() == ":0"
    assert redis.command("EXISTS", "rt:presence-servers").strip() == ":0"


def test_a_server_killed_without_a_goodbye_loses_its_entries_within_the_ttl(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    _, s2, ann, bob = room_on_two_servers(redis, script, clients)
    eve = Member(clients, s2.ws_url, "room.1", "eve")
    everyone = {m.id: {"name": m.name} for m in (ann, bob, eve)}
    ann.wait_who(lambda got: got == everyone)
    killed = time.monotonic()
    s2.stop(signal.SIGKILL)
    # Gone from the answers once the server has been silent for the TTL ...
    ann.wait_who(lambda got: got == {ann.id: {"name": "ann"}}, timeout=4 * TTL)
    assert time.monotonic() - killed <= (TTL + 1.0) * UNIT
    # ... and their leave, one message for both, from the server that swept them.
    leave = ann.left(bob, eve, timeout=4 * TTL)
    assert leave["leave"] == {bob.id: {"name": "bob"}, eve.id: {"name": "eve"}}
    # Swept from Redis too: only ann's entry and server are left.
    assert redis.command("HLEN", "presence:presence:room.1").strip() == ":1"
    assert redis.command("ZCARD", "presence:presence-servers").strip() == ":1"


def test_a_stopped_server_takes_its_entries_away(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    _, s2, ann, bob = room_on_two_servers(redis, script, clients)
    code, _ = s2.stop()
    assert code == 0
    assert ann.left(bob)["leave"] == {bob.id: {"name": "bob"}}
    assert ann.who() == {ann.id: {"name": "ann"}}
    assert redis.command("ZCARD", "presence:presence-servers").strip() == ":1"


def test_after_a_redis_restart_without_persistence_the_servers_register_again(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    _, s2, ann, bob = room_on_two_servers(redis, script, clients)
    both = {ann.id: {"name": "ann"}, bob.id: {"name": "bob"}}
    redis.kill()
    redis.start()  # empty: nothing was saved
    assert redis.command("EXISTS", "presence:presence:room.1").strip() == ":0"
    # Each server's next refresh finds itself missing and writes its entries again.
    assert ann.wait_who(lambda got: got == both, timeout=6 * TTL) == both
    assert bob.who() == both
    # And joins and leaves flow again once the engines have resubscribed.
    cat = Member(clients, s2.ws_url, "room.1", "cat")
    ann.wait_who(lambda got: cat.id in got)
    cat.close()
    ann.wait_who(lambda got: cat.id not in got)


ASK = """
import asyncio, json, os, plezi
plezi.app_name = os.environ["APP_NAME"]
plezi.channel("room.*", presence=True)
print(json.dumps(asyncio.run(plezi.presence("room.1"))))
"""


def test_a_plain_script_asks_who_is_there(
    redis: RedisProcess, script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    (server,) = servers(redis, script, count=1)
    ann = Member(clients, server.ws_url, "room.1", "ann")
    ann.wait_who(lambda got: ann.id in got)
    env = {**os.environ, "PL_REDIS_URL": redis.url, "APP_NAME": "presence"}
    done = subprocess.run(
        [sys.executable, "-c", ASK], env=env, capture_output=True, text=True, timeout=30 * UNIT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {ann.id: {"name": "ann"}}
    assert "Traceback" not in done.stderr and "nclosed" not in done.stderr, done.stderr
