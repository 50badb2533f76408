"""History and recovery under ``--workers``: the master assigns positions and keeps the history,
so every worker sees the same positions, a client recovers on any worker, and the history
outlives a worker killed with SIGKILL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import start_script

from .redis.test_history_redis import APP, Client, assert_exact, publisher
from .test_cluster import MAX_CLIENTS, NO_REDIS, Cluster


@pytest.fixture
def two_workers() -> Iterator[Cluster]:
    c = Cluster(start_script(APP, "--workers", "2", env=NO_REDIS))
    try:
        for index in (1, 2):
            c.wait_for(rf"worker {index} ready \(pid \d+\)")
        yield c
    finally:
        c.kill()


def on_each_worker(c: Cluster, pids: set[int], **kwargs: Any) -> dict[int, Client]:
    """One ``Client`` on each worker of ``pids`` (the others opened meanwhile are closed)."""
    found: dict[int, Client] = {}
    for _ in range(MAX_CLIENTS):
        client = Client(c.script, c.clients, **kwargs)
        if client.pid in pids and client.pid not in found:
            found[client.pid] = client
            if len(found) == len(pids):
                return found
        else:
            client.ws.close()
    raise AssertionError(f"no client landed on {pids - set(found)}")


def test_positions_and_recovery_across_workers_and_a_killed_worker(two_workers: Cluster) -> None:
    c = two_workers
    pids = c.worker_pids()
    subs = on_each_worker(c, set(pids.values()))
    first, second = subs[pids[1]], subs[pids[2]]
    pub = publisher(c.script, c.clients)
    pub.send("pub chat 5 0")
    assert_exact(first.take(5), 1, 5)
    assert_exact(second.take(5), 1, 5)
    position = second.position
    second.ws.close()
    pub.send("pub chat 5 5")
    assert_exact(first.take(5), 6, 10)
    # Back on any worker: exactly the five it missed, then live.
    back = Client(c.script, c.clients, position)
    assert back.notice()["recovered"] is True
    pub.send("pub chat 1 10")
    back.until(10)
    assert_exact(back.messages, 6, 11)
    assert_exact(first.take(1), 11, 11)
    # A worker killed: the master keeps the history, its replacement serves recoveries.
    position = first.position
    first.ws.close()
    pub.send("pub chat 2 11")
    back.until(12)
    mark = c.mark()
    os.kill(pids[1], signal.SIGKILL)
    new = int(c.wait_for(r"worker 1 ready \(pid (\d+)\)", start=mark)[1])
    returned = on_each_worker(c, {new}, position=position)[new]
    assert returned.notice()["recovered"] is True
    returned.until(12)
    assert_exact(returned.messages, 12, 13)
