"""What a Redis outage does to the messages published during it, with real redis-server and
plezi processes: every server that was there before the outage gets what the others queued
(a server that comes back late is waited for), a server's own subscribers get its messages at
once and once only, and the recovery log line reports how long Redis was really gone."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection

from helpers import UNIT, Script, wait_for

from .redispair import APP, join, recv_all, status, sync, two_servers
from .redisproc import RedisProcess

#: The health check interval of these tests, in seconds.
EVERY = 0.3


def go_down(redis: RedisProcess, fault: str) -> None:
    if fault == "killed":
        redis.kill()
    else:
        redis.freeze()


def come_back(redis: RedisProcess, fault: str) -> None:
    if fault == "killed":
        redis.start()
    else:
        redis.thaw()


def both_down(*servers: Script) -> None:
    wait_for(
        lambda: not any(status(s)["connected"] for s in servers),
        "the servers to notice the outage",
    )


@contextlib.contextmanager
def paused(server: Script) -> Iterator[None]:
    """The plezi process stopped (SIGSTOP) for the block: it cannot reconnect to Redis."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def assert_next(ws: ClientConnection, expected: str) -> None:
    got = ws.recv(timeout=10 * UNIT)
    assert got == expected, f"expected {expected!r}, got {got!r}"


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_queued_messages_wait_for_a_server_that_resubscribes_later(
    redis, script, clients, fault
) -> None:
    """B queues messages during the outage and reconnects first; A is held back (its process is
    stopped) until after B is connected again. B must not publish its queue before A has
    resubscribed: A's clients get every queued message, in order, once."""
    pair = two_servers(redis, script, clients, query=f"?health_check_interval={EVERY}")
    s1, s2, a, b = pair.s1, pair.s2, pair.a, pair.b
    go_down(redis, fault)
    both_down(s1, s2)
    sent = [f"q{i}" for i in range(20)]
    for m in sent:
        b.send(m)
    wait_for(lambda: status(s2)["queued"] == len(sent), "s2 to queue what it published")
    with paused(s1):
        come_back(redis, fault)
        wait_for(lambda: status(s2)["connected"], "s2 to reconnect")
        # s2 is back and s1 is not: s2 keeps its queue for s1.
        state = status(s2)
        assert state["queued"] == len(sent), state
        assert state.get("waiting_for") == 1, state
    assert recv_all(a, len(sent)) == sent
    wait_for(lambda: status(s2)["queued"] == 0 and status(s2)["waiting_for"] == 0, "the flush")
    # Nothing twice anywhere: the next message each client gets is a fresh one.
    a.send("marker")
    for ws in (a, b):
        got = ws.recv(timeout=10 * UNIT)
        if ws is b and got != "marker":  # b got its own messages at once, during the outage
            assert [got, *recv_all(b, len(sent) - 1)] == sent
            got = ws.recv(timeout=10 * UNIT)
        assert got == "marker"
    sync(a, [a, b], "after")
    code, err = s2.stop()
    assert code == 0 and "published 20 queued message(s)" in err


def test_a_servers_own_subscribers_get_its_messages_at_once_and_once(
    redis, script, clients
) -> None:
    """During an outage the publishing server delivers to its own subscribers at once, in
    publish order (the message written just before a silent Redis was noticed included), and
    the flush through Redis after recovery does not deliver them a second time."""
    pair = two_servers(redis, script, clients, query=f"?health_check_interval={EVERY}")
    s1, s2, a, b = pair.s1, pair.s2, pair.a, pair.b
    c, _ = join(s1, clients)  # a second subscriber on the publishing server
    sync(a, [a, b, c], "warm-c")
    redis.freeze()
    a.send("m1")  # written to Redis, never answered: delivered here when the loss is noticed
    both_down(s1, s2)
    a.send("m2")
    c.send("m3")
    local = ["m1", "m2", "m3"]
    # Redis is still frozen: these come from s1 itself.
    assert recv_all(a, 3) == local
    assert recv_all(c, 3) == local
    redis.thaw()
    wait_for(
        lambda: all(status(s)["connected"] and status(s)["queued"] == 0 for s in (s1, s2)),
        "the servers to reconnect and flush",
    )
    assert recv_all(b, 3) == local  # the other server gets them through Redis, in order
    a.send("marker")
    for ws in (a, b, c):
        assert_next(ws, "marker")


def test_a_silent_redis_does_not_delay_local_delivery_until_it_is_noticed(
    redis, script, clients
) -> None:
    """A frozen Redis is noticed by the health check in one to two intervals (10 to 20 s here);
    a PUBLISH unanswered for half a second already makes the server deliver to its own
    subscribers at once. When Redis answers again, the copies it brings back are skipped and
    the other server gets everything, in order, once."""
    pair = two_servers(redis, script, clients, query="?health_check_interval=10")
    s1, a, b = pair.s1, pair.a, pair.b
    c, _ = join(s1, clients)
    sync(a, [a, b, c], "warm-c")
    redis.freeze()
    sent = ["m1", "m2", "m3"]
    a.send("m1")  # written to the frozen Redis: unanswered
    # Well before the check could notice anything (10 s at least):
    for ws in (a, c):
        assert ws.recv(timeout=5 * UNIT) == "m1"
    a.send("m2")
    c.send("m3")
    for ws in (a, c):
        assert [ws.recv(timeout=5 * UNIT) for _ in range(2)] == sent[1:]
    assert status(s1)["connected"]  # not an outage (yet): Redis only stopped answering
    redis.thaw()
    assert recv_all(b, 3) == sent
    wait_for(lambda: status(s1)["queued"] == 0, "s1 to publish what it kept")
    a.send("marker")
    for ws in (a, b, c):
        assert_next(ws, "marker")
    assert status(s1)["outages"] == 0
    code, err = s1.stop()
    assert code == 0
    assert "has not answered for" in err and "answers again" in err


def test_a_server_that_stopped_is_not_waited_for_and_a_vanished_one_only_so_long(
    redis, script, clients
) -> None:
    """A server that shut down said goodbye: nobody waits for it after an outage. One that
    vanished (SIGKILL) is waited for ``peer_wait`` seconds at most, then forgotten."""
    query = f"?health_check_interval={EVERY}&peer_wait=1"
    pair = two_servers(redis, script, clients, query=query)
    s1, s2, b = pair.s1, pair.s2, pair.b
    s3 = script(APP, "--redis", redis.url + query)
    d, _ = join(s3, clients)
    sync(b, [b, d], "warm-3")
    wait_for(lambda: status(s2)["peers"] == 2, "s2 to know both other servers")
    code, _ = s3.stop()
    assert code == 0
    wait_for(lambda: status(s2)["peers"] == 1, "s2 to hear s3 leave")
    redis.kill()
    both_down(s1, s2)
    b.send("while s1 is gone")
    assert_next(b, "while s1 is gone")
    s1.stop(signal.SIGKILL)  # vanishes without a word
    redis.start()
    started = time.monotonic()
    wait_for(lambda: status(s2)["connected"], "s2 to reconnect")
    wait_for(lambda: status(s2)["queued"] == 0, "s2 to give up on s1 and flush")
    waited = time.monotonic() - started
    assert waited < 1 + 5 * UNIT
    assert status(s2)["peers"] == 0
    code, err = s2.stop()
    assert code == 0
    assert "1 server(s) of the app did not resubscribe within 1.0s" in err


def test_a_server_killed_before_the_outage_is_not_waited_for(redis, script, clients) -> None:
    """Servers repeat their presence every health check interval: one killed without a word
    is forgotten three intervals later, and an outage after that does not wait for it
    (``peer_wait`` is 10.6 s here)."""
    pair = two_servers(redis, script, clients, query=f"?health_check_interval={EVERY}")
    s1, s2, b = pair.s1, pair.s2, pair.b
    wait_for(lambda: status(s2)["peers"] == 1, "s2 to know s1")
    s1.stop(signal.SIGKILL)
    wait_for(lambda: status(s2)["peers"] == 0, "s2 to forget s1")
    redis.kill()
    both_down(s2)
    b.send("alone")
    assert_next(b, "alone")
    redis.start()
    wait_for(lambda: status(s2)["connected"] and status(s2)["queued"] == 0, "the flush", 5.0)
    b.send("after")
    assert_next(b, "after")
    code, err = s2.stop()
    assert code == 0 and "did not resubscribe" not in err


def test_the_recovery_line_reports_the_whole_outage(redis, script, clients) -> None:
    """A frozen Redis is noticed an interval or two after it went silent; the recovery line
    must count from the silence, not from when it was noticed."""
    every = 1.0
    s1 = script(APP, "--redis", redis.url + f"?health_check_interval={every}")
    a, _ = join(s1, clients)
    sync(a, [a], "warm")
    redis.freeze()
    frozen = time.monotonic()
    wait_for(lambda: not status(s1)["connected"], "s1 to notice the silence")
    time.sleep(1.0)  # not a synchronisation: the outage must last beyond its detection
    redis.kill()  # replaced by a new Redis on the same address
    redis.start()
    outage = time.monotonic() - frozen
    wait_for(lambda: status(s1)["connected"], "s1 to reconnect")
    code, err = s1.stop()
    assert code == 0
    found = re.search(r"reconnected to Redis at \S+ after (\d+\.\d)s", err)
    assert found, err
    reported = float(found.group(1))
    # From the last answer Redis gave (at most an interval before the freeze) to the reconnect.
    assert outage - 0.15 <= reported <= outage + every + 3 * UNIT, (reported, outage)


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_servers_of_an_app_know_each_other(redis, script, clients, protocol) -> None:
    """The presence channel, in RESP2 and RESP3: servers learn of each other when they start and
    forget one that stops; another app on the same Redis is not a peer."""
    query = f"?protocol={protocol}"
    pair = two_servers(redis, script, clients, query=query)
    other = script(APP, "--redis", redis.url + query, env={"APP_NAME": "other"})
    for server in (pair.s1, pair.s2):
        wait_for(lambda s=server: status(s)["peers"] == 1, "the servers to know each other")
    s3 = script(APP, "--redis", redis.url + query)
    for server in (pair.s1, pair.s2, s3):
        wait_for(lambda s=server: status(s)["peers"] == 2, "everyone to know the newcomer")
    assert status(other)["peers"] == 0
    code, _ = s3.stop()
    assert code == 0
    for server in (pair.s1, pair.s2):
        wait_for(lambda s=server: status(s)["peers"] == 1, "the others to hear it leave")
