"""Presence in one process and under ``--workers``: real servers, real WebSocket clients.

The subprocess tests run ``presence_app.py`` (one process, memory engine; or a ``--workers``
master whose table is the cluster's). The in-thread tests check what a controller and a
connectionless handler see, and the errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator

import pytest
from wsclient import connect

import plezi
from helpers import UNIT, Events, Running, Script, app_of
from plezi.pubsub import channels
from plezi.pubsub.presence import (
    MAX_INFO_BYTES,
    PresenceError,
    encode_info,
    notice,
    presence_options,
)

from .presence_client import APP, Member

NO_REDIS = {"PL_REDIS_URL": "", "REDIS_URL": ""}


@pytest.fixture
def room_config() -> Iterator[None]:
    """``room.*`` is a presence channel in this process for the test."""
    channels.configure("room.*", presence=True)
    yield
    channels.clear()


# -- the pieces ----------------------------------------------------------------------------------


def test_info_is_json_of_at_most_the_limit_and_none_records_an_empty_object() -> None:
    assert encode_info(None) == b"{}"
    assert encode_info({"name": "ann"}) == b'{"name":"ann"}'
    assert encode_info("x" * (MAX_INFO_BYTES - 2)) == b'"' + b"x" * (MAX_INFO_BYTES - 2) + b'"'
    with pytest.raises(PresenceError, match="limit is 4096"):
        encode_info("x" * MAX_INFO_BYTES)
    with pytest.raises(PresenceError, match="JSON-serialisable"):
        encode_info({"when": object()})


def test_a_notice_splices_stored_infos_into_one_event() -> None:
    text = notice("room.1", "leave", [("a-1", b'{"n":1}'), ("b-2", b"{}")])
    assert json.loads(text) == {
        "event": "presence",
        "channel": "room.1",
        "leave": {"a-1": {"n": 1}, "b-2": {}},
    }


def test_a_glob_makes_presence_channels_but_never_of_notification_channels(
    room_config: None,
) -> None:
    assert presence_options("room.1") is not None
    assert presence_options("room.2") is not None
    assert presence_options("hall") is None
    channels.configure("*", presence=True)
    assert presence_options(plezi.presence_channel("room.1")) is None
    assert plezi.presence_channel("room.1") == "presence:room.1"


def test_names_starting_with_nul_are_plezis_own() -> None:
    for name in ("\x00ctl:join", "\x00to:x"):
        with pytest.raises(ValueError, match="invalid channel name"):
            plezi.publish(name, "x")
        with pytest.raises(ValueError, match="invalid channel name"):
            plezi.subscribe(name, print)


# -- one process, in a thread --------------------------------------------------------------------


def test_controller_and_connectionless_handler_see_joins_leaves_and_the_table(
    serve: Callable[..., Running], clients: contextlib.ExitStack, room_config: None
) -> None:
    events = Events()

    class Room:
        def on_open(self) -> None:
            self.subscribe("room.1", info={"name": self.params["name"]})  # type: ignore[attr-defined]
            self.write(self.id)  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            if data == "leave":
                self.unsubscribe("room.1")  # type: ignore[attr-defined]
                self.write("left")  # type: ignore[attr-defined]

    def on_change(message: str) -> None:
        events.add(json.loads(message))

    running = serve(app_of(("/", Room)))
    notify = plezi.presence_channel("room.1")
    running.call(lambda: plezi.subscribe(notify, on_change))
    try:
        ann = clients.enter_context(connect(running.ws_url + "/?name=ann"))
        ann_id = ann.recv(timeout=5 * UNIT)
        bob = clients.enter_context(connect(running.ws_url + "/?name=bob"))
        bob_id = bob.recv(timeout=5 * UNIT)
        for conn_id, name in ((ann_id, "ann"), (bob_id, "bob")):
            events.take(
                {"event": "presence", "channel": "room.1", "join": {conn_id: {"name": name}}}
            )
        members = asyncio.run(plezi.presence("room.1"))  # from another loop: asked on the server's
        assert members == {ann_id: {"name": "ann"}, bob_id: {"name": "bob"}}
        bob.send("leave")
        assert bob.recv(timeout=5 * UNIT) == "left"
        events.take({"event": "presence", "channel": "room.1", "leave": {bob_id: {"name": "bob"}}})
        ann.close()
        events.take({"event": "presence", "channel": "room.1", "leave": {ann_id: {"name": "ann"}}})
        assert asyncio.run(plezi.presence("room.1")) == {}
        bob.close()  # not in the room any more: no second leave
    finally:
        running.call(lambda: plezi.unsubscribe(notify, on_change))
    assert all(e["event"] == "presence" for e in events.events)
    assert len(events.events) == 0, events.events


def test_bad_info_is_a_clear_error_and_leaves_nothing_subscribed(
    serve: Callable[..., Running], clients: contextlib.ExitStack, room_config: None
) -> None:
    class Room:
        def on_open(self) -> None:
            for channel, info in (
                ("room.1", {"blob": "x" * MAX_INFO_BYTES}),
                ("room.1", {"when": object()}),
                ("hall", {"name": "ann"}),
                ("room.*", {"name": "ann"}),
            ):
                try:
                    self.subscribe(channel, info=info, pattern=channel.endswith("*"))  # type: ignore[attr-defined]
                except PresenceError as exc:
                    self.write(f"refused {channel}: {exc}")  # type: ignore[attr-defined]
            self.write("done")  # type: ignore[attr-defined]

        def on_message(self, data: str) -> None:
            pass

    running = serve(app_of(("/", Room)))
    ws = clients.enter_context(connect(running.ws_url + "/"))
    replies = [ws.recv(timeout=5 * UNIT) for _ in range(5)]
    assert replies[-1] == "done"
    assert "4096" in replies[0] and "JSON-serialisable" in replies[1]
    assert "'hall', which is not a presence channel" in replies[2]
    assert "patterns never join" in replies[3]
    assert running.call(lambda: plezi.pubsub.hub.hub.registry.names()) == ([], [])
    assert asyncio.run(plezi.presence("room.1")) == {}
    with pytest.raises(PresenceError, match="not a presence channel"):
        asyncio.run(plezi.presence("hall"))


# -- one process, a subprocess -------------------------------------------------------------------


def test_one_server_tracks_each_room_of_a_glob_apart(
    script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    server = script(APP, env=NO_REDIS)
    ann = Member(clients, server.ws_url, "room.1", "ann")
    bob = Member(clients, server.ws_url, "room.1", "bob")
    cat = Member(clients, server.ws_url, "room.2", "cat")
    assert ann.joined(bob)["join"] == {bob.id: {"name": "bob"}}
    assert ann.who() == {ann.id: {"name": "ann"}, bob.id: {"name": "bob"}}
    assert cat.who() == {cat.id: {"name": "cat"}}
    bob.ws.send("join robert")  # subscribing again: the new info, announced as a join
    assert ann.joined(bob)["join"] == {bob.id: {"name": "robert"}}
    bob.close()
    assert ann.left(bob)["leave"] == {bob.id: {"name": "robert"}}
    assert ann.who() == {ann.id: {"name": "ann"}}
    assert not [m for m in cat.seen if m["event"] == "presence" and m["channel"] != "room.2"]


# -- --workers: the master keeps the table -------------------------------------------------------


def test_workers_share_one_table_and_a_killed_worker_leaves_at_once(
    script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    master = script(APP, "--workers", "2", env=NO_REDIS)
    members: dict[int, Member] = {}
    for i in range(64):  # the kernel spreads connections: open until both workers have one
        m = Member(clients, master.ws_url, "room.1", f"m{i}")
        if m.pid in members:
            m.close()
        else:
            members[m.pid] = m
        if len(members) == 2:
            break
    (pid_a, a), (pid_b, b) = members.items()
    assert pid_a != pid_b
    expected = {a.id: {"name": a.name}, b.id: {"name": b.name}}
    assert a.wait_who(lambda got: got == expected) == b.who() == expected
    os.kill(pid_b, signal.SIGKILL)  # no goodbye: the master drops its entries when its link ends
    assert a.left(b)["leave"] == {b.id: {"name": b.name}}
    assert a.who() == {a.id: {"name": a.name}}


def test_a_member_on_another_worker_is_announced(
    script: Callable[..., Script], clients: contextlib.ExitStack
) -> None:
    master = script(APP, "--workers", "2", env=NO_REDIS)
    first = Member(clients, master.ws_url, "room.3", "first")
    for i in range(64):
        other = Member(clients, master.ws_url, "room.3", f"o{i}")
        if other.pid != first.pid:
            break
        other.close()
    else:
        raise AssertionError("every connection landed on one worker")
    assert first.joined(other)["join"] == {other.id: {"name": other.name}}
    other.ws.send("leave")
    other.expect(lambda m: m["event"] == "left")
    assert first.left(other)["leave"] == {other.id: {"name": other.name}}


# -- the test client -----------------------------------------------------------------------------


def test_presence_works_in_the_test_client(room_config: None) -> None:
    from plezi.testing import TestClient

    class Room:
        def on_open(self) -> None:
            self.subscribe(plezi.presence_channel("room.1"))  # type: ignore[attr-defined]
            self.subscribe("room.1", info={"n": self.params["n"]})  # type: ignore[attr-defined]

        async def on_message(self, data: str) -> None:
            self.write(await plezi.presence("room.1"))  # type: ignore[attr-defined]

    with TestClient(app_of(("/", Room))) as client, client.websocket_connect("/?n=1") as a:
        a_id = next(iter(a.receive_json()["join"]))
        with client.websocket_connect("/?n=2") as b:
            b_id = next(iter(a.receive_json()["join"]))
            assert b.receive_json()["join"] == {b_id: {"n": "2"}}
            b.send_text("who")
            assert b.receive_json() == {a_id: {"n": "1"}, b_id: {"n": "2"}}
        assert a.receive_json() == {
            "event": "presence",
            "channel": "room.1",
            "leave": {b_id: {"n": "2"}},
        }
