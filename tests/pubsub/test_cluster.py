"""Pub/sub across worker processes: real ``--workers N`` clusters in subprocesses, real clients.

The test application reports its worker's pid (and pub/sub state) in the first message of every
connection, so a test knows which worker serves which client. The kernel alone may hand nearly
every connection to the same worker, so :meth:`Cluster.clients_on` holds each worker it has found
busy (its loop blocked on a socket the test controls) while it connects the next client: that
one can only land on another worker. The master's stderr (workers inherit it) is read by a
thread, so tests can wait for log lines ("worker 2 started (pid X)", "died") as they happen.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from conftest import UNIT, Script, start_script
from server.wsclient import connect

APP = """
import asyncio
import json
import os
import socket

import plezi


def hold(port):
    # Blocks this worker's loop (so it accepts no client) until the test lets go.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.recv(1)


class Status:
    def index(self):
        return {**plezi.pubsub_status(), "pid": os.getpid()}


class Member:
    def on_open(self):
        self.subscribe("room")
        status = plezi.pubsub_status()
        self.write(json.dumps(
            {"pid": os.getpid(), "id": self.id, "engine": status["engine"],
             "connected": status["connected"]}
        ))

    def on_message(self, data):
        command, _, rest = data.partition(" ")
        if command == "pub":
            self.publish("room", rest)
        elif command == "many":
            tag, count = rest.split()
            for i in range(int(count)):
                self.publish("room", f"{tag}:{i}")
            self.publish("room", f"{tag}:end")
        elif command == "to":
            target, _, text = rest.partition(" ")
            self.write(f"sent {plezi.write_to(target, text)}")
        elif command == "echo":
            self.write(f"echo {rest}")
        elif command == "status":
            self.write(json.dumps(plezi.pubsub_status()))
        elif command == "hold":
            self.write("holding")  # sent when this callback returns, before the hold starts
            asyncio.get_running_loop().call_soon(hold, int(rest))

    def on_shutdown(self):
        self.write(f"bye {os.getpid()}")


plezi.route("/status", Status)
plezi.route("/", Member)
plezi.run()
"""

_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
#: A bound on the clients :meth:`Cluster.clients_on` opens (it needs one per worker).
MAX_CLIENTS = 16


@dataclass
class Cluster:
    """A ``--workers N`` master in a subprocess, with its log read as it comes."""

    script: Script
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    clients: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stream = self.script.proc.stderr
        assert stream is not None
        with contextlib.suppress(ValueError, OSError):  # closed under us by a failed test
            for raw in stream:
                with self.changed:
                    self.lines.append(raw.decode(errors="replace"))
                    self.changed.notify_all()

    @property
    def log(self) -> str:
        with self.changed:
            return "".join(self.lines)

    def wait_for(
        self, pattern: str, *, start: int = 0, timeout: float = 10 * UNIT
    ) -> re.Match[str]:
        """The first log line (from line ``start`` on) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[start:]:
                    if m := regex.search(line):
                        return m
                left = deadline - time.monotonic()
                assert left > 0, f"no log line matching {pattern!r}:\n{''.join(self.lines)}"
                self.changed.wait(left)

    def mark(self) -> int:
        with self.changed:
            return len(self.lines)

    def has_line(self, pattern: str, *, start: int = 0) -> bool:
        regex = re.compile(pattern)
        with self.changed:
            return any(regex.search(line) for line in self.lines[start:])

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest start."""
        with self.changed:
            return {int(m[1]): int(m[2]) for line in self.lines if (m := _STARTED.search(line))}

    def client(self) -> tuple[ClientConnection, dict[str, Any]]:
        """A new client and its greeting (pid, id, engine state of its worker)."""
        ws = self.clients.enter_context(connect(self.script.ws_url + "/"))
        return ws, json.loads(ws.recv(timeout=10 * UNIT))

    def clients_on(self, pids: set[int]) -> dict[int, tuple[ClientConnection, dict[str, Any]]]:
        """One client on each worker in ``pids``.

        Each worker a client lands on is held busy (its loop blocked until this returns), so
        the next client can only land on another worker: the kernel alone may give most
        connections to the same one or two workers."""
        found: dict[int, tuple[ClientConnection, dict[str, Any]]] = {}
        spare: list[ClientConnection] = []
        with Holder() as holder:
            for _ in range(MAX_CLIENTS):
                ws, hello = self.client()
                if hello["pid"] in pids and hello["pid"] not in found:
                    found[hello["pid"]] = (ws, hello)
                    if len(found) == len(pids):
                        break
                else:
                    spare.append(ws)
                holder.hold(ws)
            else:
                raise AssertionError(f"no client landed on {pids - set(found)}")
        for ws in spare:
            ws.close()
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20 * UNIT) -> tuple[int, str]:
        """Signal the master; its exit code and whole log once it and its workers are done."""
        proc = self.script.proc
        if proc.poll() is None:
            proc.send_signal(sig)
        code = proc.wait(timeout)
        self.reader.join(timeout)  # EOF once every worker has exited too
        assert not self.reader.is_alive(), "a worker outlived its master"
        return code, self.log


class Holder:
    """Holds workers busy: a held worker connects here and waits for one byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10 * UNIT)
        self.held: list[socket.socket] = []

    def hold(self, ws: ClientConnection) -> None:
        ws.send(f"hold {self.listener.getsockname()[1]}")
        assert recv(ws) == "holding"
        conn, _ = self.listener.accept()  # the worker is now blocked
        self.held.append(conn)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.held:
            with conn:
                conn.sendall(b"!")
        self.listener.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """``cluster(workers)`` starts the test app with ``--workers``; stopped after the test."""
    path = tmp_path / "member.py"
    path.write_text(APP)
    started: list[Cluster] = []

    def start(workers: int) -> Cluster:
        # The cluster engine, whatever the environment says about Redis.
        no_redis = {"PL_REDIS_URL": "", "REDIS_URL": ""}
        c = Cluster(start_script(path, "--workers", str(workers), env=no_redis))
        started.append(c)
        for index in range(1, workers + 1):
            c.wait_for(rf"worker {index} ready \(pid \d+\)")
        return c

    yield start
    for c in started:
        c.clients.close()
        if c.script.proc.poll() is None:
            c.script.proc.kill()
            c.script.proc.wait()
        for pid in c.worker_pids().values():  # workers outlive a killed master briefly
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        c.reader.join(10 * UNIT)
        for stream in (c.script.proc.stdout, c.script.proc.stderr):
            if stream is not None:
                stream.close()


def recv(ws: ClientConnection) -> Any:
    return ws.recv(timeout=10 * UNIT)


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


# -- delivery across workers -------------------------------------------------------------------


def test_every_client_on_every_worker_gets_every_message_once_in_order(cluster: Any) -> None:
    c = cluster(3)
    pids = set(c.worker_pids().values())
    assert pids == children(c.script.proc.pid)
    on = c.clients_on(pids)
    for _, hello in on.values():
        assert hello["engine"] == "cluster"
        assert hello["connected"] is True, hello
    clients = [ws for ws, _ in on.values()]
    n = 300
    for i, ws in enumerate(clients):
        ws.send(f"many w{i} {n}")  # three publishers, one per worker, at once
    for ws in clients:
        got: dict[str, list[int]] = {f"w{i}": [] for i in range(len(clients))}
        ends = 0
        while ends < len(clients):
            tag, value = recv(ws).split(":")
            if value == "end":
                ends += 1
            else:
                got[tag].append(int(value))
        assert all(values == list(range(n)) for values in got.values()), got
    clients[0].send("pub final")  # a duplicate would come before it
    for ws in clients:
        assert recv(ws) == "final"


def test_write_to_reaches_a_connection_on_another_worker(cluster: Any) -> None:
    c = cluster(2)
    (a, hello_a), (b, hello_b) = c.clients_on(set(c.worker_pids().values())).values()
    assert hello_a["pid"] != hello_b["pid"]
    a.send(f"to {hello_b['id']} just for b")
    assert recv(a) == "sent True"  # another process's connection: sent on its way
    assert recv(b) == "just for b"
    b.send(f"to {hello_a['id']} and back")
    assert recv(b) == "sent True"
    assert recv(a) == "and back"
    a.send(f"to {hello_a['id']} to myself")
    assert recv(a) == "to myself"
    assert recv(a) == "sent True"
    a.send("pub barrier")  # nothing else reached anyone
    assert recv(a) == "barrier"
    assert recv(b) == "barrier"


def test_pubsub_status_in_a_worker(cluster: Any) -> None:
    c = cluster(2)
    response = httpx.get(c.script.url + "/status", timeout=10 * UNIT)
    status = response.json()
    assert status["engine"] == "cluster"
    assert status["connected"] is True
    assert status["pid"] in c.worker_pids().values()
    assert status["pid"] != c.script.proc.pid


# -- worker failure ----------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_the_new_one_joins_pubsub(cluster: Any) -> None:
    c = cluster(2)
    workers = c.worker_pids()
    on = c.clients_on(set(workers.values()))
    victim_index = 2
    victim = workers[victim_index]
    survivor = workers[1]
    a, _ = on[survivor]
    doomed, _ = on[victim]
    mark = c.mark()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        doomed.recv(timeout=10 * UNIT)
    # The survivor keeps serving while the master notices and restarts the dead worker: messages
    # go back and forth between the "died" line and the new worker's "ready" line.
    died = rf"worker {victim_index} \(pid {victim}\) died \(signal 9\)"
    ready = rf"worker {victim_index} ready \(pid (\d+)\)"
    exchanged = during_restart = 0
    deadline = time.monotonic() + 10 * UNIT
    while not c.has_line(ready, start=mark):
        assert time.monotonic() < deadline, c.log
        a.send(f"echo {exchanged}")
        assert recv(a) == f"echo {exchanged}"
        exchanged += 1
        during_restart += c.has_line(died, start=mark)
    assert during_restart > 0, c.log
    new = int(c.wait_for(ready, start=mark)[1])
    assert c.wait_for(rf"worker {victim_index} started \(pid (\d+)\)", start=mark)[1] == str(new)
    assert new != victim
    assert children(c.script.proc.pid) == {survivor, new}
    # The new worker serves and is part of pub/sub, both ways.
    new_client, hello = c.clients_on({new})[new]
    assert hello["connected"] is True, hello
    new_client.send("pub from the new worker")
    assert recv(new_client) == "from the new worker"
    assert recv(a) == "from the new worker"
    a.send("pub from the survivor")
    assert recv(a) == "from the survivor"
    assert recv(new_client) == "from the survivor"


# -- graceful shutdown -------------------------------------------------------------------------


def test_sigterm_to_the_master_shuts_every_worker_down_gracefully(cluster: Any) -> None:
    c = cluster(3)
    pids = set(c.worker_pids().values())
    on = c.clients_on(pids)
    c.script.proc.send_signal(signal.SIGTERM)
    byes = set()
    for pid, (ws, _) in on.items():
        assert recv(ws) == f"bye {pid}"  # on_shutdown ran in its worker
        byes.add(pid)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10 * UNIT)
        assert info.value.rcvd is not None, "no close frame"
        assert info.value.rcvd.code == 1001
    assert byes == pids
    code, log = c.stop()
    assert code == 0, log
    assert "stopping 3 worker(s)" in log
    assert "died" not in log
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_shut_down_gracefully_when_the_master_is_killed(cluster: Any) -> None:
    """No orphans: a worker that loses the master's relay shuts down (on_shutdown, 1001)."""
    c = cluster(2)
    pids = set(c.worker_pids().values())
    on = c.clients_on(pids)
    c.script.proc.kill()
    for pid, (ws, _) in on.items():
        assert recv(ws) == f"bye {pid}"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10 * UNIT)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001
    code, log = c.stop()  # returns once every worker has closed the log pipe: exited
    assert code == -signal.SIGKILL
    assert log.count("lost the connection to the cluster master") == 2, log
