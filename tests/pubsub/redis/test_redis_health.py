"""The Redis engine's health check, with real redis-server processes: a Redis that goes silent
without closing anything (frozen with SIGSTOP: the kernel keeps the connections open and
acknowledges what we send, but nothing answers) is noticed within two intervals, and the engine
reconnects; a healthy idle connection is never dropped."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from helpers import UNIT, wait_for
from plezi.pubsub.redis import RedisStartError, _split_url, check_redis
from plezi.pubsub.redis_link import Link, open_link

from .redispair import join, status, sync, two_servers
from .redisproc import RedisProcess

#: The health check interval of these tests, in seconds.
EVERY = 0.3


def test_the_interval_comes_from_the_url_and_is_hidden_from_redis_py(tmp_path) -> None:
    assert _split_url("redis://h:1/0") == ("redis://h:1/0", {})
    assert _split_url("redis://h/0?health_check_interval=0.25") == (
        "redis://h/0",
        {"health_check_interval": 0.25},
    )
    assert _split_url("redis://:p@h/0?protocol=3&health_check_interval=0&db=2") == (
        "redis://:p@h/0?protocol=3&db=2",
        {"health_check_interval": 0.0},
    )
    assert _split_url("unix:///tmp/r.sock?health_check_interval=5&peer_wait=2.5") == (
        "unix:///tmp/r.sock",
        {"health_check_interval": 5.0, "peer_wait": 2.5},
    )
    # A bad value is a clear start error, before anything is contacted.
    for bad in ("-1", "soon", "inf", ""):
        url = RedisProcess(tmp_path).url + f"?health_check_interval={bad}"
        with pytest.raises(RedisStartError, match="health_check_interval must be"):
            check_redis(url)
        with pytest.raises(RedisStartError, match="peer_wait must be"):
            check_redis(url.replace("health_check_interval", "peer_wait"))


async def _watch_a_link(redis: RedisProcess, every: float) -> dict[str, Any]:
    """Open a subscribed link with a health check of ``every`` seconds, let it idle three
    intervals, freeze Redis and time how long the link takes to give up."""
    lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    pool = aioredis.ConnectionPool.from_url(redis.url, protocol=2)
    link = Link(
        lambda reply: None,
        lambda _link, exc: lost.set_result(exc),
        health_check_interval=every,
    )
    try:
        await open_link(pool, link)
        link.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nx\r\n")  # the RESP2 pong is then an array
        assert link.transport is not None
        sock = link.transport.get_extra_info("socket")
        keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        pings = redis.calls("ping")
        await asyncio.sleep(3 * every)  # idle on purpose: the check must keep the link
        result: dict[str, Any] = {
            "pings": redis.calls("ping") - pings,
            "alive": not lost.done(),
            "keepalive": (keepalive, idle),
        }
        redis.freeze()
        frozen = time.monotonic()
        result["exc"] = await asyncio.wait_for(lost, 10 * UNIT)
        result["noticed"] = time.monotonic() - frozen
        return result
    finally:
        await link.release()
        await pool.disconnect()


def test_a_link_pings_when_idle_and_gives_up_on_a_frozen_redis(redis) -> None:
    every = 0.2
    result = asyncio.run(_watch_a_link(redis, every))
    assert result["alive"], "a healthy idle link was dropped"
    assert result["pings"] >= 2  # one PING per quiet interval, each answered
    assert result["keepalive"] == (1, 30)  # TCP keepalive: the second line of defence
    assert isinstance(result["exc"], TimeoutError) and "no reply to a PING" in str(result["exc"])
    # Silent since the last PONG: a PING within one interval, given up one interval later.
    assert every / 2 <= result["noticed"] <= 2 * every + 0.5 * UNIT


@pytest.mark.parametrize("comeback", ["thawed", "replaced"])
def test_a_frozen_redis_is_noticed_and_delivery_resumes(redis, script, clients, comeback) -> None:
    pair = two_servers(redis, script, clients, query=f"?health_check_interval={EVERY}")
    s1, s2, a, b = pair.s1, pair.s2, pair.a, pair.b
    redis.freeze()
    frozen = time.monotonic()
    a.send("m1")  # written to a connection nobody reads: kept until Redis answers it
    wait_for(
        lambda: not status(s1)["connected"] and not status(s2)["connected"],
        "both servers to notice the silence",
        timeout=2 * EVERY + 5,
    )
    noticed = time.monotonic() - frozen
    assert noticed < 2 * EVERY + 2 * UNIT
    a.send("m2")  # queued during the outage
    wait_for(lambda: status(s1)["queued"] == 2, "s1 to keep both messages")
    if comeback == "thawed":
        redis.thaw()
    else:  # a new Redis on the same address
        redis.kill()
        redis.start()
    wait_for(
        lambda: status(s1)["connected"] and status(s2)["connected"], "both servers to reconnect"
    )
    # s1 delivered both to its own subscribers when it knew Redis was gone (m1, unanswered, when
    # the loss was noticed), in order, once; s2 gets them through Redis after the recovery.
    assert a.recv(timeout=10 * UNIT) == "m1"
    assert a.recv(timeout=10 * UNIT) == "m2"
    assert b.recv(timeout=10 * UNIT) == "m1"
    assert b.recv(timeout=10 * UNIT) == "m2"
    during, _ = join(s2, clients)
    sync(a, [a, b, during], "after-a")
    sync(b, [a, b, during], "after-b")
    for server in (s1, s2):
        state = status(server)
        assert state["connected"] and state["outages"] == 1 and state["queued"] == 0
    code, err = s1.stop()
    assert code == 0
    assert "lost the connection to Redis" in err and "no reply to a PING" in err
    assert "reconnected to Redis" in err


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_a_healthy_idle_connection_is_kept(redis, script, clients, protocol) -> None:
    query = f"?protocol={protocol}&health_check_interval={EVERY}"
    pair = two_servers(redis, script, clients, query=query)
    s1, s2, a, b = pair.s1, pair.s2, pair.a, pair.b
    checks = redis.calls("ping") + redis.calls("publish")
    time.sleep(5 * EVERY)  # not a synchronisation: idle time is what this test is about
    # Each link of each server was checked more than once (a PING, or the presence message
    # each server publishes every interval, which both servers read), and every check answered.
    assert redis.calls("ping") + redis.calls("publish") - checks >= 8
    for server in (s1, s2):
        state = status(server)
        assert state["connected"] and state["outages"] == 0
    a.send("after a rest")
    assert a.recv(timeout=10 * UNIT) == "after a rest"
    assert b.recv(timeout=10 * UNIT) == "after a rest"
    b.send("and back")
    assert a.recv(timeout=10 * UNIT) == "and back"
    assert b.recv(timeout=10 * UNIT) == "and back"
    code, err = s1.stop()
    assert code == 0 and "lost the connection" not in err
