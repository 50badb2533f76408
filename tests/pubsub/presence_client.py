"""A client of ``presence_app.py`` for the presence tests: joins on connect, keeps what it
receives, and waits for a message that matches (every wait bounded)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed
from wsclient import connect

from helpers import UNIT

#: In a folder of its own: run as a script from ``tests/pubsub``, ``import redis`` would find
#: the tests' ``redis`` package.
APP = Path(__file__).parent / "apps" / "presence_app.py"

Message = dict[str, Any]


class Member:
    """One connection of ``presence_app.py``: ``id`` and ``pid`` from its hello."""

    def __init__(self, stack: contextlib.ExitStack, ws_url: str, room: str, name: str) -> None:
        query = urlencode({"room": room, "name": name})
        self.ws = stack.enter_context(connect(f"{ws_url}/?{query}"))
        self.name = name
        self.seen: list[Message] = []
        hello = self.expect(lambda m: m["event"] == "hello")
        self.id: str = hello["id"]
        self.pid: int = hello["pid"]

    def expect(self, match: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        """The first message (seen before or arriving now) for which ``match`` holds; it is
        taken out of :attr:`seen`."""
        deadline = time.monotonic() + timeout * UNIT
        while True:
            for message in self.seen:
                if match(message):
                    self.seen.remove(message)
                    return message
            left = deadline - time.monotonic()
            assert left > 0, f"{self.name}: nothing matched in {timeout * UNIT:g}s: {self.seen}"
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            self.seen.append(json.loads(raw))

    def who(self) -> dict[str, Any]:
        """``plezi.presence(room)`` as the server answers it."""
        self.ws.send("who")
        members: dict[str, Any] = self.expect(lambda m: m["event"] == "who")["members"]
        return members

    def wait_who(self, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> Any:
        """Ask ``who`` until ``check(members)`` holds; returns those members."""
        deadline = time.monotonic() + timeout * UNIT
        while True:
            members = self.who()
            if check(members):
                return members
            assert time.monotonic() < deadline, f"{self.name}: presence stayed {members}"
            time.sleep(0.1 * UNIT)

    def joined(self, other: Member) -> Message:
        """The ``join`` notification of ``other``."""
        return self.expect(lambda m: m["event"] == "presence" and other.id in m.get("join", {}))

    def left(self, *others: Member, timeout: float = 10.0) -> Message:
        """The ``leave`` notification naming every one of ``others`` (in one message)."""
        ids = {o.id for o in others}
        return self.expect(
            lambda m: m["event"] == "presence" and ids <= set(m.get("leave", {})), timeout
        )

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.close()
