"""Recoveries and presence entries in ``plezi.stats()`` and ``/metrics``, after real traffic: a
real server on port 0 (or ``--workers 2``), real WebSocket clients, the scrape parsed by
``prometheus_client``'s own text parser.

Each server counts in its own :class:`~plezi.server.stats.ServerStats`, so the figures of a
fresh server are exact (unlike the hub's process-wide publishes)."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wsclient import connect

import plezi
from helpers import UNIT, Running, app_of, start_script, wait_for
from plezi.pubsub import channels
from plezi.pubsub.hub import hub
from plezi.server.stats import RECOVERY_FAILURES
from promclient import open_on_both_workers, scrape, value, wait_for_both_workers


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    channels.clear()
    hub.engine.__dict__.pop("_local_history", None)  # a new history: a new epoch
    yield
    channels.clear()
    hub.engine.__dict__.pop("_local_history", None)


class Sub:
    """Subscribes to the channel named by the path (with presence info, when given), then
    says ``ready``."""

    def on_open(self) -> None:
        name = self.params.get("name")  # type: ignore[attr-defined]
        info = None if name is None else {"name": name}
        self.subscribe(self.params["id"], info=info)  # type: ignore[attr-defined]
        self.write("ready")  # type: ignore[attr-defined]

    def on_message(self, data: str) -> None:
        pass


class Twice(Sub):
    """Subscribes twice in a row: the second subscription replaces the recovering one."""

    def on_open(self) -> None:
        self.subscribe("chat")  # type: ignore[attr-defined]
        super().on_open()


def _recv_json(ws: Any) -> Any:
    return json.loads(ws.recv(timeout=5 * UNIT))


def _publish(running: Running, channel: str, count: int) -> None:
    def run() -> None:
        for i in range(count):
            plezi.publish(channel, {"n": i})

    running.call(run)


def _recover(
    running: Running, channel: str, since: list[Any], path: str = "/sub"
) -> dict[str, Any]:
    """Connect to ``channel`` asking to recover from ``since``; the ``_recover_`` notice."""
    query = "?_recover=" + urllib.parse.quote(json.dumps({channel: since}))
    with connect(f"{running.ws_url}{path}/{channel}{query}") as ws:
        first = ws.recv(timeout=5 * UNIT)
        second = ws.recv(timeout=5 * UNIT)
        # Without history the notice comes at the subscribe, before "ready"; else after it.
        notice = json.loads(second if first == "ready" else first)
        assert notice["event"] == "_recover_"
        if notice["recovered"]:
            for _ in range(notice["offset"] - since[1]):  # the replayed messages
                _recv_json(ws)
        return dict(notice)


def test_recoveries_counted_by_result_reason_and_messages_replayed(
    serve: Callable[..., Running],
) -> None:
    plezi.channel("chat", history=3)
    running = serve(app_of(("/sub/:id", Sub), ("/twice/:id", Twice), ("/metrics", "metrics")))
    before = scrape(running.url)
    assert value(before, "plezi_recoveries_total", result="recovered") == 0
    assert value(before, "plezi_recoveries_total", result="failed") == 0
    assert value(before, "plezi_recovered_messages_total") == 0

    _publish(running, "chat", 1)
    epoch = hub.engine.local_history.epoch
    _publish(running, "chat", 2)  # offsets 2 and 3: a client at 1 missed 2
    assert _recover(running, "chat", [epoch, 1])["recovered"] is True
    assert _recover(running, "chat", [epoch, 3])["recovered"] is True  # up to date: 0 replayed
    assert _recover(running, "chat", ["0123abcd", 1])["recovered"] is False  # another epoch
    _publish(running, "chat", 3)  # offsets 4..6: 2 and 3 are gone (3 kept)
    assert _recover(running, "chat", [epoch, 1])["recovered"] is False  # the gap
    assert _recover(running, "chat", [epoch, 99])["recovered"] is False  # past the end
    assert _recover(running, "plain", ["e", 1])["recovered"] is False  # no history
    assert _recover(running, "chat", [epoch, 6], "/twice")["recovered"] is False  # superseded

    expected_failures = dict.fromkeys(RECOVERY_FAILURES, 0)
    expected_failures.update(epoch=1, gap=2, no_history=1, superseded=1)
    # The outcome is counted before the notice is sent: no wait needed.
    after = scrape(running.url)
    assert value(after, "plezi_recoveries_total", result="recovered") == 2
    assert value(after, "plezi_recoveries_total", result="failed") == 5
    assert value(after, "plezi_recovered_messages_total") == 2
    for reason, count in expected_failures.items():
        assert value(after, "plezi_recovery_failures_total", reason=reason) == count, reason

    stats = running.call(plezi.stats)
    assert stats["recoveries"] == {"recovered": 2, "failed": 5}
    assert stats["recovery_failures"] == expected_failures
    assert stats["recovered_messages"] == 2


def test_presence_entries_gauge_follows_joins_and_leaves(serve: Callable[..., Running]) -> None:
    channels.configure("room.*", presence=True)
    running = serve(app_of(("/sub/:id", Sub), ("/metrics", "metrics")))
    assert value(scrape(running.url), "plezi_presence_entries") == 0
    with contextlib.ExitStack() as clients:
        for path in ("room.1?name=ann", "room.1?name=bob", "room.2?name=cy"):
            ws = clients.enter_context(connect(f"{running.ws_url}/sub/{path}"))
            assert ws.recv(timeout=5 * UNIT) == "ready"
        assert value(scrape(running.url), "plezi_presence_entries") == 3
        assert running.call(plezi.stats)["presence_entries"] == 3
    wait_for(lambda: running.call(plezi.stats)["presence_entries"] == 0, "the entries left")


CLUSTER_APP = """
import os

import plezi

plezi.channel("chat", history=10)


class Pid:
    def on_open(self):
        self.write(str(os.getpid()))
        self.subscribe("chat")

    def on_message(self, data):
        pass


plezi.route("/ws", Pid)
plezi.route("/metrics", "metrics")
"""


def test_workers_scrape_adds_up_the_recoveries_of_every_worker(tmp_path: Path) -> None:
    """Under ``--workers 2``: one recovery fails (a made-up epoch; its notice tells the real
    one), the others recover; every scrape counts those of both workers."""
    path = tmp_path / "cluster_recoveries.py"
    path.write_text(CLUSTER_APP)
    script = start_script(path, "--workers", "2", env={"PL_REDIS_URL": "", "REDIS_URL": ""})
    try:
        with contextlib.ExitStack() as clients:
            since: list[Any] = ["made-up", 0]

            def url() -> str:
                query = "?_recover=" + urllib.parse.quote(json.dumps({"chat": since}))
                return script.ws_url + "/ws" + query

            def notice(ws: Any, n: int) -> None:
                answer = _recv_json(ws)
                assert answer["recovered"] is (n > 1)
                since[:] = [answer["epoch"], answer["offset"]]

            opened = len(open_on_both_workers(clients, url, notice))
            wait_for_both_workers(script.url)
            for _ in range(4):  # several scrapes: both workers answer some (SO_REUSEPORT)
                samples = scrape(script.url)
                assert value(samples, "plezi_processes") == 2
                assert value(samples, "plezi_recoveries_total", result="failed") == 1
                assert value(samples, "plezi_recovery_failures_total", reason="epoch") == 1
                assert value(samples, "plezi_recoveries_total", result="recovered") == opened - 1
                assert value(samples, "plezi_recovered_messages_total") == 0
    finally:
        code, log = script.stop()
    assert code == 0, log
