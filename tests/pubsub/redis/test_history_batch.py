"""Batched history publishes on Redis, on one engine against a real redis-server: the
recoverable messages of one channel published one after the other in one loop iteration go in
one run of the publish script, without changing what subscribers get (every message, in publish
order across channels, positions one apart) or what ``max_backlog`` counts (messages)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import UNIT
from plezi.pubsub.channels import ChannelOptions
from plezi.pubsub.history import Positioned
from plezi.pubsub.message import Message
from plezi.pubsub.redis import PubSubUnavailable, RedisEngine
from plezi.pubsub.redis_history import BATCH_MAX

from .redisproc import RedisProcess

CHAT = ChannelOptions("chat", history=1000)
OTHER = ChannelOptions("other", history=50)


class Collect:
    """A sink that keeps what the engine delivers."""

    def __init__(self) -> None:
        self.got: list[Message] = []

    def deliver(self, message: Message) -> None:
        self.got.append(message)

    def flush(self) -> None:
        pass


Body = Callable[[RedisProcess, RedisEngine, Collect], Awaitable[None]]


def with_engine(tmp_path: Path, body: Body, **options: Any) -> None:
    """Run ``body(redis, engine, sink)`` with a private Redis and an engine subscribed
    (confirmed by Redis) to ``chat``, ``other`` and ``plain``."""
    redis = RedisProcess(tmp_path).start()

    async def main() -> None:
        sink = Collect()
        engine = RedisEngine(sink, redis.url, "batch", "tok", **options)
        await engine.start()
        try:
            for name in ("chat", "other", "plain"):
                engine.subscribed(name, False)
                await engine.subscription_live(name)
            await body(redis, engine, sink)
        finally:
            await engine.stop()

    try:
        asyncio.run(main())
    finally:
        redis.kill()


async def until(test: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds * UNIT
    while not test():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def send(engine: RedisEngine, channel: str, n: int) -> None:
    """Publish ``{"n": n}`` on ``channel`` (recoverable for ``chat`` and ``other``)."""
    message = Message(channel, b'{"n":%d}' % n, True)
    options = {"chat": CHAT, "other": OTHER}.get(channel)
    if options is None:
        engine.publish(message)
    else:
        engine.publish_recoverable(Positioned.at(message, "", 0), options)


def offsets(messages: list[Message]) -> list[int]:
    """The offsets of positioned ``messages`` (0 for any other)."""
    return [m.offset if isinstance(m, Positioned) else 0 for m in messages]


def test_one_script_run_per_run_of_one_channel_and_the_order_kept(tmp_path: Path) -> None:
    """In one iteration: 300 on chat, one plain, 2 on chat, 3 on other, 1 on chat. The first
    message leaves alone, the others in one script run per run of one channel (4 more); a
    subscriber gets them all in publish order, each channel's offsets one apart."""
    plan = ["chat"] * 300 + ["plain"] + ["chat"] * 2 + ["other"] * 3 + ["chat"]

    async def body(redis: RedisProcess, engine: RedisEngine, sink: Collect) -> None:
        redis.command("CONFIG", "RESETSTAT")
        for n, channel in enumerate(plan):  # one iteration: nothing awaited in between
            send(engine, channel, n)
        await until(lambda: len(sink.got) == len(plan), "every message")
        assert [m.channel for m in sink.got] == plan
        assert [m.payload for m in sink.got] == [b'{"n":%d}' % n for n in range(len(plan))]
        for channel, count in (("chat", 303), ("other", 3)):
            mine = [m for m in sink.got if m.channel == channel]
            assert offsets(mine) == list(range(1, count + 1))
            assert len({m.epoch for m in mine if isinstance(m, Positioned)}) == 1
        assert not isinstance(sink.got[300], Positioned)
        assert redis.calls("evalsha") == 5
        assert redis.calls("xadd") == 306 and redis.calls("publish") == 307
        await until(lambda: engine.status()["queued"] == 0, "every reply")

    with_engine(tmp_path, body)


def test_a_batch_holds_at_most_batch_max_messages(tmp_path: Path) -> None:
    count = 2 * BATCH_MAX + 100

    async def body(redis: RedisProcess, engine: RedisEngine, sink: Collect) -> None:
        redis.command("CONFIG", "RESETSTAT")
        for n in range(count):
            send(engine, "chat", n)
        await until(lambda: len(sink.got) == count, "every message")
        assert offsets(sink.got) == list(range(1, count + 1))
        assert redis.calls("evalsha") == 1 + math.ceil((count - 1) / BATCH_MAX)
        reply = redis.command("XLEN", "batch:\x00plz:stream:chat")
        assert int(reply.strip().lstrip(":")) >= 1000  # MAXLEN ~ 1000 trims whole nodes

    with_engine(tmp_path, body)


def test_max_backlog_counts_the_messages_of_a_batch(tmp_path: Path) -> None:
    """``max_backlog=50``: 50 messages in one iteration fill it (one sent, 49 in a batch), the
    51st is refused, a plain one too; once Redis has answered, 50 more fit again."""

    async def body(redis: RedisProcess, engine: RedisEngine, sink: Collect) -> None:
        for n in range(50):
            send(engine, "chat", n)
        assert engine.status()["queued"] == 50
        with pytest.raises(PubSubUnavailable, match="not keeping up"):
            send(engine, "chat", 50)
        with pytest.raises(PubSubUnavailable):
            send(engine, "plain", 50)
        await until(lambda: len(sink.got) == 50, "the first 50")
        await until(lambda: engine.status()["queued"] == 0, "every reply")
        for n in range(50, 100):
            send(engine, "chat", n)
        await until(lambda: len(sink.got) == 100, "50 more")
        assert offsets(sink.got) == list(range(1, 101))

    with_engine(tmp_path, body, max_backlog=50)


def test_a_refused_batch_is_logged_with_its_channel_and_message_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's user denied ``EVALSHA`` (not PUBLISH), then in one iteration: the first
    message on chat (alone), 3 more (one batch), one plain. The log says how many messages of
    which channel each refusal lost; the plain one is delivered, and once ``EVALSHA`` is allowed
    again the next message on chat is its first."""

    async def body(redis: RedisProcess, engine: RedisEngine, sink: Collect) -> None:
        redis.command("ACL", "SETUSER", "default", "-evalsha")
        for n in range(4):
            send(engine, "chat", n)
        send(engine, "plain", 4)
        await until(lambda: engine.status()["queued"] == 0, "every reply")
        await until(lambda: len(sink.got) == 1, "the plain message")
        redis.command("ACL", "SETUSER", "default", "+evalsha")
        send(engine, "chat", 5)
        await until(lambda: len(sink.got) == 2, "the message after")
        assert [m.payload for m in sink.got] == [b'{"n":4}', b'{"n":5}']
        assert offsets(sink.got) == [0, 1]

    with caplog.at_level(logging.ERROR, logger="plezi"):
        with_engine(tmp_path, body)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert [line.split(": ")[0] for line in refused] == [
        "Redis refused to publish 1 message on channel 'chat'",
        "Redis refused to publish 3 messages on channel 'chat'",
    ]
    assert all("NOPERM" in line for line in refused)


def test_a_batch_unanswered_when_redis_dies_is_published_once_it_is_back(tmp_path: Path) -> None:
    """Redis frozen (it reads nothing more), then killed and started again empty, with a message
    and a batch of 299 written but unanswered: both are sent again after the reconnect, so the
    new stream holds the 300 messages in order at offsets 1 to 300."""

    async def body(redis: RedisProcess, engine: RedisEngine, sink: Collect) -> None:
        redis.freeze()
        for n in range(300):
            send(engine, "chat", n)
        await asyncio.sleep(0)  # the end of the iteration: the batch is written
        assert engine.status()["queued"] == 300
        redis.kill()
        await until(lambda: not engine.status()["connected"], "the loss to be noticed")
        redis.start()
        await until(lambda: engine.status()["queued"] == 0, "the queue to be answered")
        page = await engine.history("chat", CHAT)
        assert [m.offset for m in page.messages] == list(range(1, 301))
        assert [m.value for m in page.messages] == [f'{{"n":{n}}}' for n in range(300)]

    with_engine(tmp_path, body)
