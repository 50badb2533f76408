"""The Redis engine with real, private redis-server processes: several plezi servers sharing
one Redis, app_name namespaces, publishing from a plain script, and Redis killed mid-stream."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from websockets.sync.client import ClientConnection
from wsclient import MASK, RawClient

from helpers import ROOT, UNIT, wait_for
from plezi.protocol.frames import OP_TEXT, encode_frame

from .redispair import APP, join, recv_all, status, sync, two_servers
from .redisproc import RedisProcess


def assert_quiet(ws: ClientConnection, sender: ClientConnection, tag: str) -> None:
    """Nothing more is queued for ``ws``: the next message it gets is a fresh marker."""
    sender.send(tag)
    assert ws.recv(timeout=10 * UNIT) == tag


def test_two_servers_exchange_messages_once_each_in_order(redis, script, clients) -> None:
    pair = two_servers(redis, script, clients)
    s1, a, b = pair.s1, pair.a, pair.b
    sent = [f"m{i}" for i in range(100)]
    for m in sent:
        a.send(m)
    assert recv_all(a, 100) == sent
    assert recv_all(b, 100) == sent
    assert_quiet(b, a, "marker")
    assert status(s1)["engine"] == "redis" and status(s1)["connected"] is True


def test_binary_stays_binary_and_patterns_cross_servers(redis, script, clients) -> None:
    pair = two_servers(redis, script, clients)
    a, b = pair.a, pair.b
    a.send("news:goal")  # published on news.sport, matched by news.* on both servers
    assert a.recv(timeout=10 * UNIT) == "goal"
    assert b.recv(timeout=10 * UNIT) == "goal"


def test_write_to_reaches_a_connection_on_another_server(redis, script, clients) -> None:
    pair = two_servers(redis, script, clients)
    a, b, b_id = pair.a, pair.b, pair.b_id
    a.send(f"to:{b_id}:just for you")
    assert b.recv(timeout=10 * UNIT) == "just for you"
    assert_quiet(a, b, "marker")  # a got nothing of it


def run_publisher(redis_url: str, app_name: str, channel: str, message: str) -> None:
    code = (
        "import plezi, sys\n"
        f"plezi.app_name = {app_name!r}\n"
        f"plezi.publish({channel!r}, {message!r})\n"
    )
    env = {**os.environ, "REDIS_URL": redis_url}
    subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, timeout=30 * UNIT, cwd=str(ROOT)
    )


def test_a_plain_script_publishes_to_the_servers(redis, script, clients) -> None:
    pair = two_servers(redis, script, clients, app_name="shop")
    s1, a, b = pair.s1, pair.a, pair.b
    run_publisher(redis.url, "shop", "room", "from a script")
    assert a.recv(timeout=10 * UNIT) == "from a script"
    assert b.recv(timeout=10 * UNIT) == "from a script"
    assert status(s1)["app_name"] == "shop"


def test_default_app_name_is_the_script_name(redis, script, clients) -> None:
    s1 = script(APP, "--redis", redis.url)
    assert status(s1)["app_name"] == "redis_app_app"


def test_app_names_isolate_and_share(redis, script, clients) -> None:
    one = script(APP, "--redis", redis.url, env={"APP_NAME": "one"})
    two = script(APP, "--redis", redis.url, env={"APP_NAME": "two"})
    also_one = script(APP, "--redis", redis.url, env={"APP_NAME": "one"})
    a, _ = join(one, clients)
    b, _ = join(two, clients)
    c, _ = join(also_one, clients)
    sync(a, [a, c], "warm")
    sync(b, [b], "warm-two")
    a.send("for app one")
    assert a.recv(timeout=10 * UNIT) == "for app one"  # Redis has delivered it everywhere
    assert c.recv(timeout=10 * UNIT) == "for app one"  # same app_name: shared
    # Redis delivers in order on b's server's connection: had "for app one" reached app two,
    # it would come before this message, published later.
    run_publisher(redis.url, "two", "room", "for app two")
    assert b.recv(timeout=10 * UNIT) == "for app two"


def test_redis_killed_and_restarted_delivery_resumes_everywhere(redis, script, clients) -> None:
    pair = two_servers(redis, script, clients)
    s1, s2, a, b = pair.s1, pair.s2, pair.a, pair.b
    redis.kill()
    wait_for(
        lambda: not status(s1)["connected"] and not status(s2)["connected"],
        "both servers to notice the outage",
    )
    # HTTP keeps being served during the outage (status() itself is HTTP), and WebSockets too:
    during, _ = join(s1, clients)
    a.send("sent during the outage")  # queued by s1's engine, and delivered on s1 at once
    assert a.recv(timeout=10 * UNIT) == "sent during the outage"
    assert during.recv(timeout=10 * UNIT) == "sent during the outage"
    assert status(s1)["queued"] >= 1
    redis.start()
    wait_for(
        lambda: status(s1)["connected"] and status(s2)["connected"], "both servers to reconnect"
    )
    # s1 publishes its queue once s2 (known before the outage) has resubscribed: s2 gets it,
    # and s1 does not deliver it a second time.
    assert b.recv(timeout=10 * UNIT) == "sent during the outage"
    sync(a, [a, b, during], "after-a")
    sync(b, [a, b, during], "after-b")
    assert status(s1)["outages"] == 1 and status(s2)["outages"] == 1
    code, err = s1.stop()
    assert code == 0
    assert "lost the connection to Redis" in err and "reconnected to Redis" in err


def test_wrong_url_is_a_clear_error_at_start(tmp_path) -> None:
    closed = RedisProcess(tmp_path)  # a free port nobody listens on
    proc = subprocess.run(
        [sys.executable, str(APP), "--port", "0", "--bind", "127.0.0.1", "--redis", closed.url],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
        cwd=str(ROOT),
    )
    assert proc.returncode == 1
    assert "cannot use Redis at" in proc.stderr
    assert "listening on" not in proc.stderr


def test_refused_auth_is_a_clear_error_at_start(tmp_path) -> None:
    guarded = RedisProcess(tmp_path, "--requirepass", "s3cret").start()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(APP),
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--redis",
                guarded.url.replace("redis://", "redis://:wrong@"),
            ],
            capture_output=True,
            text=True,
            timeout=30 * UNIT,
            cwd=str(ROOT),
        )
    finally:
        guarded.kill()
    assert proc.returncode == 1
    assert "cannot use Redis at" in proc.stderr
    assert "wrong" not in proc.stderr  # the password is never printed


def test_workers_each_receive_each_message_once(redis, script, clients) -> None:
    server = script(APP, "--redis", redis.url, "--workers", "2")
    a, a_id = join(server, clients)
    # Each connection is hashed to one worker's socket: a few clients reach the other worker.
    for _ in range(64):
        b, b_id = join(server, clients)
        if b_id.split("-")[0] != a_id.split("-")[0]:
            break
    else:
        raise AssertionError("64 clients, all on one worker")
    sync(a, [a, b], "warm")
    sent = [f"w{i}" for i in range(50)]
    for m in sent:
        a.send(m)
    assert recv_all(a, 50) == sent
    assert recv_all(b, 50) == sent
    assert_quiet(b, a, "marker")


def burst_commands(n: int, target: str) -> tuple[list[str], list[str], list[str]]:
    """``n`` commands cycling through the channel ``room``, the pattern ``news.*`` and direct
    writes to ``target``; and what a subscriber, and ``target``, must get, in order."""
    commands, everyone, for_target = [], [], []
    for i in range(n):
        kind = i % 5
        if kind in (0, 1):  # runs of two: consecutive messages to one topic share a batch
            commands.append(f"r{i}")
            everyone.append(f"r{i}")
            for_target.append(f"r{i}")
        elif kind in (2, 3):
            commands.append(f"news:n{i}")
            everyone.append(f"n{i}")
            for_target.append(f"n{i}")
        else:
            commands.append(f"to:{target}:d{i}")
            for_target.append(f"d{i}")
    return commands, everyone, for_target


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_a_burst_arrives_complete_and_in_order_everywhere(redis, script, clients, protocol) -> None:
    """A burst read from Redis in bulk is batched per topic; mixing a channel, a pattern and
    direct writes, it must still reach every subscriber complete and in publishing order (and
    so in RESP3, where Redis sends push notifications)."""
    url = f"{redis.url}?protocol={protocol}"
    s1 = script(APP, "--redis", url)
    s2 = script(APP, "--redis", url)
    a, _ = join(s1, clients)
    b, b_id = join(s2, clients)
    c, _ = join(s2, clients)
    sync(a, [a, b, c], "warm")
    commands, everyone, for_b = burst_commands(1500, b_id)
    sender = RawClient(s1.port, "/")
    try:
        assert sender.recv_frame().text.startswith("id:")
        # One TCP write: s1 reads the burst at once, publishes it in one write to Redis, and
        # s2 reads it back in a few large reads.
        sender.send_raw(b"".join(encode_frame(OP_TEXT, m.encode(), mask=MASK) for m in commands))
        assert recv_all(b, len(for_b)) == for_b
        assert recv_all(c, len(everyone)) == everyone
        assert recv_all(a, len(everyone)) == everyone
        assert [sender.recv_frame().text for _ in everyone] == everyone
    finally:
        sender.close()
    a.send("marker")  # nothing more was queued anywhere: the next message is a fresh one
    for ws in (a, b, c):
        assert ws.recv(timeout=10 * UNIT) == "marker"


def numsub(redis: RedisProcess, channel: str) -> int:
    reply = redis.command("PUBSUB", "NUMSUB", channel)
    return int(reply.rsplit(":", 1)[1].split()[0])


def test_subscriptions_follow_the_local_subscribers(redis, script, clients) -> None:
    """The engine subscribes on Redis when a channel gets its first local subscriber and
    unsubscribes when it loses the last one (commands written on the taken-over link)."""
    pair = two_servers(redis, script, clients)
    assert numsub(redis, "redis_app_app:room") == 2
    c, _ = join(pair.s2, clients)
    pair.b.close()
    assert numsub(redis, "redis_app_app:room") == 2  # c still listens on s2
    c.close()
    wait_for(lambda: numsub(redis, "redis_app_app:room") == 1, "s2 to unsubscribe")
    d, _ = join(pair.s2, clients)
    wait_for(lambda: numsub(redis, "redis_app_app:room") == 2, "s2 to subscribe again")
    sync(pair.a, [pair.a, d], "again")


def test_a_message_redis_refuses_is_logged_and_does_not_hold_back_the_next(
    redis, script, clients
) -> None:
    # This user may use ``room`` and the ``news.*`` pattern, not the channel ``secret``.
    redis.command(
        "ACL", "SETUSER", "plz", "on", ">pw", "~*", "+@all", "resetchannels",
        "&redis_app_app:room", "&redis_app_app:news.*",
    )  # fmt: skip
    url = redis.url.replace("redis://", "redis://plz:pw@")
    s1 = script(APP, "--redis", url)
    a, _ = join(s1, clients)
    sync(a, [a], "warm")
    a.send("pub:secret:refused")
    a.send("after")
    assert a.recv(timeout=10 * UNIT) == "after"
    assert status(s1)["queued"] == 0
    code, err = s1.stop()
    assert code == 0
    assert "Redis refused to publish 1 message on channel 'secret': NOPERM" in err
    assert ":pw@" not in err  # the password is never printed
