"""Pub/sub without a server: glob patterns, the registry, messages and their frames, relay framing.

The pattern tables were checked against a real ``redis-server`` (7.0, ``KEYS``/``PSUBSCRIBE`` share
one matcher); the property test compares :func:`compile_glob` with :func:`redis_match`, a direct
port of Redis's ``stringmatchlen`` written here independently of ``plezi.pubsub.patterns``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import UNIT
from plezi.protocol.frames import OP_BINARY, OP_TEXT, encode_frame
from plezi.pubsub import cluster
from plezi.pubsub.engine import MemoryEngine
from plezi.pubsub.hub import DIRECT_PREFIX, Hub
from plezi.pubsub.message import Message, encode_payload
from plezi.pubsub.patterns import compile_glob
from plezi.pubsub.registry import Handler, Registry
from plezi.server.websocket import PROCESS_TOKEN

# -- patterns ---------------------------------------------------------------------------------


def redis_match(p: str, s: str) -> bool:
    """Redis's ``stringmatchlen`` (util.c), case-sensitive, ported line by line."""
    pi, si, plen, slen = 0, 0, len(p), len(s)
    while pi < plen and si < slen:
        c = p[pi]
        if c == "*":
            while pi + 1 < plen and p[pi + 1] == "*":
                pi += 1
            if pi + 1 == plen:
                return True
            return any(redis_match(p[pi + 1 :], s[k:]) for k in range(si, slen))
        if c == "?":
            si += 1
        elif c == "[":
            pi += 1
            negate = pi < plen and p[pi] == "^"
            if negate:
                pi += 1
            match = False
            while True:
                if pi < plen and p[pi] == "\\" and plen - pi >= 2:
                    pi += 1
                    match = match or p[pi] == s[si]
                elif pi < plen and p[pi] == "]":
                    break
                elif pi >= plen:
                    pi -= 1
                    break
                elif plen - pi >= 3 and p[pi + 1] == "-":
                    low, high = sorted((p[pi], p[pi + 2]))
                    pi += 2
                    match = match or low <= s[si] <= high
                else:
                    match = match or p[pi] == s[si]
                pi += 1
            if negate:
                match = not match
            if not match:
                return False
            si += 1
        else:
            if c == "\\" and plen - pi >= 2:
                pi += 1
            if p[pi] != s[si]:
                return False
            si += 1
        pi += 1
        if si == slen:
            while pi < plen and p[pi] == "*":
                pi += 1
            break
    return pi == plen and si == slen


GLOBS = [
    # (pattern, names it matches, names it does not match)
    ("chat.*", ["chat.", "chat.x", "chat.x.y"], ["chat", "chatx", "xchat.y"]),
    ("*", ["x", "a\nb", "*"], []),
    ("a*b*c", ["abc", "aXbYc", "abbc"], ["ac", "abcx"]),
    ("a**", ["a", "ab"], ["b"]),
    ("h?llo", ["hello", "hallo", "h\nllo"], ["hllo", "heello"]),
    ("h[ae]llo", ["hello", "hallo"], ["hillo", "h[ae]llo"]),
    ("h[^e]llo", ["hallo", "hbllo"], ["hello", "hllo"]),
    ("h[a-b]llo", ["hallo", "hbllo"], ["hcllo", "h-llo"]),
    ("h[b-a]llo", ["hallo", "hbllo"], ["hcllo"]),  # a reversed range is the same range
    ("[^a-c]x", ["dx", "-x"], ["ax", "bx", "x"]),
    ("[a-c-e]", ["a", "b", "c", "-", "e"], ["d"]),
    ("[-a]", ["-", "a"], ["b"]),
    ("a\\*b", ["a*b"], ["axb", "a\\xb"]),
    ("a\\?b", ["a?b"], ["axb"]),
    ("\\[a]", ["[a]"], ["a"]),
    ("a\\", ["a\\"], ["a"]),  # a trailing backslash is literal
    ("[\\]]", ["]"], ["\\"]),  # escapes work inside sets
    ("[a\\-z]", ["a", "-", "z"], ["m", "\\"]),
    ("[\\\\]", ["\\"], ["a"]),
    ("[[]", ["["], ["]"]),
    ("[a&&b]", ["a", "&", "b"], ["c"]),  # not a regex set operation
    ("[a|~]", ["a", "|", "~"], ["b"]),
    ("x.+(y)$", ["x.+(y)$"], ["xa(y)", "x.y"]),  # regex syntax is literal
    ("[]", [], ["a", "]", "[]"]),  # an empty set matches nothing
    ("[]a", [], ["a", "]a", "[]a"]),
    ("[^]", ["a", "]"], ["ab"]),  # a negated empty set is any character
    ("[^]a", ["xa", "]a"], ["a"]),
    ("a[bc", ["ab", "ac"], ["a[bc", "abc"]),  # an unclosed set takes the rest of the pattern
    ("a[", [], ["a", "a[", "ab"]),
    ("[a-]", ["a", "]", "^", "_"], ["-", "b"]),  # "a-]" is the range "]".."a", unclosed
]


@pytest.mark.parametrize(("pattern", "matching", "other"), GLOBS)
def test_glob_patterns_mean_what_they_mean_to_redis(
    pattern: str, matching: list[str], other: list[str]
) -> None:
    match = compile_glob(pattern)
    for name in matching:
        assert match(name), (pattern, name)
        assert redis_match(pattern, name), (pattern, name)  # the table itself is Redis's
    for name in other:
        assert not match(name), (pattern, name)
        assert not redis_match(pattern, name), (pattern, name)


@settings(max_examples=1500, deadline=None)
@given(
    st.text(alphabet="ab-^]\\[*?", max_size=8),
    st.lists(st.text(alphabet="ab-^]\\[", min_size=1, max_size=6), min_size=1, max_size=8),
)
def test_any_glob_agrees_with_redis_matcher(pattern: str, names: list[str]) -> None:
    """Any pattern compiles (no re.error, no FutureWarning: warnings are errors in the tests)
    and agrees with Redis's matcher on every (non-empty) channel name."""
    match = compile_glob(pattern)
    for name in names:
        assert bool(match(name)) == redis_match(pattern, name), (pattern, name)


def test_many_stars_match_in_linear_time() -> None:
    """``*a*a*...*b`` against ``aaaa...``: a backtracking translation takes minutes on 40
    characters (Redis's CVE-2022-36021); matching must stay linear, it runs on every publish."""
    match = compile_glob("*a" * 12 + "*b")
    started = time.perf_counter()
    assert not match("a" * 5000)
    assert match("a" * 5000 + "b")
    assert compile_glob("a*?*a")("a" * 5000)
    assert time.perf_counter() - started < 0.5 * UNIT


# -- messages ---------------------------------------------------------------------------------


def test_payload_types() -> None:
    assert encode_payload("héllo") == ("héllo".encode(), True)
    assert encode_payload(b"\x00\xff") == (b"\x00\xff", False)
    assert encode_payload(bytearray(b"ab")) == (b"ab", False)
    assert encode_payload(memoryview(b"ab")) == (b"ab", False)
    assert encode_payload({"a": [1, "é"]}) == ('{"a":[1,"é"]}'.encode(), True)
    assert encode_payload([1, None]) == (b"[1,null]", True)
    for bad in (1, 1.5, None, ("a",), {"a"}):
        with pytest.raises(TypeError):
            encode_payload(bad)


def test_a_message_is_framed_once_per_kind() -> None:
    text = Message.of("c", "hi")
    frame = text.frame()
    assert frame == encode_frame(OP_TEXT, b"hi")
    assert text.frame() is frame  # cached: the same object for every subscriber
    forced = text.frame(True)
    assert forced == encode_frame(OP_BINARY, b"hi")
    assert text.frame(True) is forced
    assert text.value == "hi"

    binary = Message.of("c", b"\x01\x02")
    assert binary.frame() == encode_frame(OP_BINARY, b"\x01\x02")
    assert binary.frame() is binary.frame(True)  # a binary message has one frame
    assert binary.value == b"\x01\x02"

    big = Message.of("c", "x" * 70_000)  # 64-bit length header
    assert big.frame() == encode_frame(OP_TEXT, b"x" * 70_000)
    assert Message.of("c", {"k": 1}).frame() == encode_frame(OP_TEXT, b'{"k":1}')


# -- the registry -----------------------------------------------------------------------------


class FakeConn:
    """A subscriber: records the frames queued for it and runs its handlers inline."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.handled: list[Any] = []

    def queue_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def run_handler(self, handler: Handler, message: Message) -> None:
        self.handled.append(handler.call(message))


def test_every_forwarding_subscriber_gets_the_same_frame_object() -> None:
    registry = Registry()
    a, b, c = FakeConn(), FakeConn(), FakeConn()
    registry.forward("room", a)
    registry.forward("room", b)
    registry.forward("room", c, binary=True)
    message = Message.of("room", "hello")
    assert registry.deliver(message) == 3
    assert a.frames == [encode_frame(OP_TEXT, b"hello")]
    assert a.frames[0] is b.frames[0]  # encode once, write many
    assert c.frames == [encode_frame(OP_BINARY, b"hello")]


def test_subscribing_again_replaces_and_never_duplicates() -> None:
    first: list[tuple[str, bool]] = []
    last: list[tuple[str, bool]] = []
    registry = Registry(lambda n, p: first.append((n, p)), lambda n, p: last.append((n, p)))
    conn = FakeConn()
    registry.forward("room", conn)
    registry.forward("room", conn)
    assert registry.count("room") == 1
    registry.forward("room", conn, binary=True)  # replaces the text forward
    assert registry.count("room") == 1
    registry.handle("room", lambda m: m, owner=conn)  # replaces the forward
    assert registry.count("room") == 1
    assert registry.deliver(Message.of("room", "x")) == 1
    assert conn.frames == []
    assert conn.handled == ["x"]
    assert first == [("room", False)]  # the engine hears of the channel once
    assert registry.remove("room", conn)
    assert not registry.remove("room", conn)
    assert registry.count("room") == 0
    assert last == [("room", False)]
    assert registry.names() == ([], [])


def test_a_channel_and_a_matching_pattern_deliver_once_each() -> None:
    """Like Redis (``message`` + ``pmessage``): once per matching subscription."""
    registry = Registry()
    conn = FakeConn()
    registry.forward("chat.1", conn)
    registry.forward("chat.*", conn, pattern=True)
    registry.forward("chat.?", conn, pattern=True)
    registry.forward("news.*", conn, pattern=True)
    assert registry.deliver(Message.of("chat.1", "m")) == 3
    assert len(conn.frames) == 3
    assert registry.count("chat.*", pattern=True) == 1
    assert registry.count("chat.*") == 0  # a channel and a pattern with one name are distinct
    assert sorted(registry.names()[1]) == ["chat.*", "chat.?", "news.*"]
    assert registry.remove("chat.*", conn, pattern=True)
    assert registry.deliver(Message.of("chat.1", "m")) == 2


def test_connectionless_handlers_one_and_two_arguments() -> None:
    registry = Registry()
    got: list[Any] = []

    def one(message: Any) -> None:
        got.append(("one", message))

    def two(channel: str, message: Any) -> None:
        got.append(("two", channel, message))

    class Obj:
        def method(self, message: Any) -> None:
            got.append(("method", message))

        def __call__(self, channel: str, message: Any) -> None:
            got.append(("call", channel, message))

    obj = Obj()
    registry.handle("c", one)
    registry.handle("c", two)
    registry.handle("c", obj.method)
    registry.handle("c", obj)
    registry.handle("c", one)  # the same handler again: still one subscription
    registry.handle("c", obj.method)  # a new bound-method object, equal to the first
    assert registry.count("c") == 4
    registry.deliver(Message.of("c", b"\x01"))
    assert sorted(got, key=str) == sorted(
        [("one", b"\x01"), ("two", "c", b"\x01"), ("method", b"\x01"), ("call", "c", b"\x01")],
        key=str,
    )
    assert registry.remove("c", obj.method)
    assert not registry.remove("c", obj.method)
    assert not registry.remove("nothing", one)


def test_a_failing_handler_is_logged_and_the_others_still_get_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry()
    got: list[str] = []
    conn = FakeConn()

    def bad(message: str) -> None:
        raise RuntimeError("boom")

    registry.handle("c", bad)
    registry.handle("c", got.append)
    registry.forward("c", conn)
    with caplog.at_level(logging.ERROR, logger="plezi"):
        assert registry.deliver(Message.of("c", "m")) == 3
    assert got == ["m"]
    assert len(conn.frames) == 1
    [record] = [r for r in caplog.records if r.name == "plezi"]
    assert record.getMessage().startswith("error in pub/sub handler")
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"


def test_hub_rejects_reserved_and_empty_channels() -> None:
    hub = Hub()
    for bad in ("", DIRECT_PREFIX + "x", 5):
        with pytest.raises(ValueError):
            hub.publish(bad, "m")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            hub.subscribe(bad, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hub.subscribe("c", "not callable")  # type: ignore[arg-type]


def test_hub_without_a_server_delivers_inline_and_refuses_async_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = Hub()
    hub.use_engine(MemoryEngine(hub))  # whatever PL_REDIS_URL/REDIS_URL say
    got: list[Any] = []

    async def later(message: Any) -> None:
        got.append(("async", message))

    hub.subscribe("c", got.append)
    hub.subscribe("c", later)
    with caplog.at_level(logging.ERROR, logger="plezi"):
        hub.publish("c", {"n": 1})
    assert got == ['{"n":1}']  # the coroutine was closed, not left un-awaited
    assert any("no running server" in r.getMessage() for r in caplog.records)
    assert hub.unsubscribe("c", later)
    assert hub.unsubscribe("c", got.append)
    assert not hub.unsubscribe("c", got.append)
    assert hub.status() == {"engine": "memory", "connected": True, "channels": 0, "patterns": 0}
    assert hub.write_to("0-1", "elsewhere")  # another process's id: sent on its way
    assert not hub.write_to(f"{PROCESS_TOKEN}-ffff", "gone")  # a local id that is not open


# -- the cluster relay's framing --------------------------------------------------------------


def test_relay_frames_survive_any_split() -> None:
    messages = [
        Message.of("chat", "héllo"),
        Message.of("çhännel/ü", b"\x00\x01\xff"),
        Message.of("e", ""),
        Message.of(DIRECT_PREFIX + "abc-1", {"to": "one"}),
        Message.of("big", b"z" * 100_000),
    ]
    wire = b"".join(cluster.encode_relay_record(m) for m in messages)
    for step in (1, 3, 7, 4096, len(wire)):
        buffer = bytearray()
        got: list[Message] = []
        for start in range(0, len(wire), step):
            buffer += wire[start : start + step]
            got.extend(cluster.decode_relay_records(buffer))
        assert buffer == b""
        assert [(m.channel, m.payload, m.is_text) for m in got] == [
            (m.channel, m.payload, m.is_text) for m in messages
        ]


def test_the_master_relay_survives_empty_and_malformed_records(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers' ends of the master's Unix socket, written to and read raw: a record with an
    empty channel and no payload (valid, the shortest there is) is relayed even as the last
    bytes the master has; records too short for their head or channel, and history records
    too short for their kind, are dropped; a short channel starting with NUL is not control.
    The records around them reach the other worker, byte for byte, in order."""
    head = cluster._HEAD

    def record(channel: bytes, payload: bytes = b"", flags: int = 1) -> bytes:
        return head.pack(3 + len(channel) + len(payload), flags, len(channel)) + channel + payload

    empty = record(b"", flags=0)
    assert empty == b"\x00\x00\x00\x03\x00\x00\x00"
    # What one worker writes, one write after another, and what the other must get for each.
    writes = [
        (record(b"a", b"before") + empty, record(b"a", b"before") + empty),
        (empty + record(b"a", b"after"), empty + record(b"a", b"after")),
        (record(b"\x00", b"ctl:join"), record(b"\x00", b"ctl:join")),  # channel "\0": relayed
        (b"\x00\x00\x00\x00" + record(b"b", b"1"), record(b"b", b"1")),  # length 0: no head
        (b"\x00\x00\x00\x02\x00\x00" + record(b"b", b"2"), record(b"b", b"2")),  # half a head
        (head.pack(5, 0, 4) + b"ch" + record(b"b", b"3"), record(b"b", b"3")),  # 4 in 2 bytes
        (record(b"h", b"\x00", cluster.ASSIGN) + record(b"b", b"4"), record(b"b", b"4")),
        (record(b"h", b"\x00" * 8, cluster.QUERY) + record(b"b", b"5"), record(b"b", b"5")),
        (record(b"b", b"last"), record(b"b", b"last")),
    ]

    async def run() -> list[bytes]:
        relay = cluster.Relay(str(tmp_path / "relay.sock"))
        await relay.start()
        try:
            reader_a, writer_a = await asyncio.open_unix_connection(relay.path)
            reader_b, writer_b = await asyncio.open_unix_connection(relay.path)
            while len(relay.links) < 2:
                await asyncio.sleep(0.01)
            got: list[bytes] = []
            for sent, expected in writes:
                writer_a.write(sent)
                await writer_a.drain()
                await asyncio.sleep(0.05 * UNIT)  # one write, one read on the master
                got.append(await asyncio.wait_for(reader_b.readexactly(len(expected)), 5 * UNIT))
            assert len(relay.links) == 2, "the master dropped a worker"
            assert not reader_a.at_eof()
            writer_a.close()
            writer_b.close()
            return got
        finally:
            await relay.stop()

    with caplog.at_level(logging.ERROR, logger="plezi"):
        got = asyncio.run(run())
    assert got == [expected for _, expected in writes]
    dropped = [r for r in caplog.records if "malformed cluster record" in r.getMessage()]
    assert len(dropped) == 5
