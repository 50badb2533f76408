"""Pub/sub across worker processes: real ``--workers N`` clusters in subprocesses, real clients.

The test application reports its worker's pid (and pub/sub state) in the first message of every
connection, so a test knows which worker serves which client. Each worker listens on a socket of
its own (SO_REUSEPORT) and the kernel hashes each connection to one of them, so
:meth:`Cluster.clients_on` opens clients until every worker it wants has one. The master's stderr
(workers inherit it) is read by a thread, so tests can wait for log lines ("worker 2 started
(pid X)", "died") as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from wsclient import connect

from helpers import UNIT, Script, start_script

APP = """
import json
import os

import plezi


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

    def on_shutdown(self):
        self.write(f"bye {os.getpid()}")


plezi.route("/status", Status)
plezi.route("/", Member)
plezi.run()
"""

#: The cluster engine, whatever the environment says about Redis.
NO_REDIS = {"PL_REDIS_URL": "", "REDIS_URL": ""}
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
#: A bound on the clients :meth:`Cluster.clients_on` opens to find one per worker: with each
#: connection hashed to one of 3 workers, missing one of them 64 times has a chance of 2e-11.
MAX_CLIENTS = 64


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
        """One client on each worker in ``pids`` (the other clients opened meanwhile are closed)."""
        found: dict[int, tuple[ClientConnection, dict[str, Any]]] = {}
        spare: list[ClientConnection] = []
        for _ in range(MAX_CLIENTS):
            ws, hello = self.client()
            if hello["pid"] in pids and hello["pid"] not in found:
                found[hello["pid"]] = (ws, hello)
                if len(found) == len(pids):
                    break
            else:
                spare.append(ws)
        else:
            raise AssertionError(f"no client landed on {pids - set(found)}")
        for ws in spare:
            ws.close()
        return found

    def kill(self) -> None:
        """Close the clients, kill the master and every worker, close the pipes (teardown)."""
        self.clients.close()
        if self.script.proc.poll() is None:
            self.script.proc.kill()
            self.script.proc.wait()
        for pid in self.worker_pids().values():  # workers outlive a killed master briefly
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reader.join(10 * UNIT)
        for stream in (self.script.proc.stdout, self.script.proc.stderr):
            if stream is not None:
                stream.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20 * UNIT) -> tuple[int, str]:
        """Signal the master; its exit code and whole log once it and its workers are done."""
        proc = self.script.proc
        if proc.poll() is None:
            proc.send_signal(sig)
        code = proc.wait(timeout)
        self.reader.join(timeout)  # EOF once every worker has exited too
        assert not self.reader.is_alive(), "a worker outlived its master"
        return code, self.log


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """``cluster(workers, *args)`` starts the test app with ``--workers`` (on port 0 unless
    ``args`` say otherwise); stopped after the test."""
    path = tmp_path / "member.py"
    path.write_text(APP)
    started: list[Cluster] = []

    def start(workers: int, *args: str) -> Cluster:
        c = Cluster(start_script(path, "--workers", str(workers), *args, env=NO_REDIS))
        started.append(c)
        for index in range(1, workers + 1):
            c.wait_for(rf"worker {index} ready \(pid \d+\)")
        return c

    yield start
    for c in started:
        c.kill()


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


# -- listening sockets: one per worker ---------------------------------------------------------


async def websocket_pids(url: str, count: int) -> Counter[int]:
    """Open ``count`` WebSocket clients at once (a burst of connects): connections per pid."""

    async def one() -> tuple[int, AsyncClientConnection]:
        ws = await async_connect(url, open_timeout=30 * UNIT)
        return json.loads(await asyncio.wait_for(ws.recv(), 10 * UNIT))["pid"], ws

    opened = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.gather(*(ws.close() for _, ws in opened))
    return Counter(pid for pid, _ in opened)


async def http_pids(port: int, count: int) -> Counter[int]:
    """Open ``count`` keep-alive HTTP connections at once, one request each: connections per
    pid."""

    async def one() -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        assert length is not None, head
        return json.loads(await reader.readexactly(int(length[1])))["pid"], writer

    opened = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 30 * UNIT)
    for _, writer in opened:
        writer.close()
    return Counter(pid for pid, _ in opened)


@pytest.mark.parametrize("kind", ["websocket", "http"])
def test_a_burst_of_connections_spreads_over_the_workers(cluster: Any, kind: str) -> None:
    """With one shared socket, Linux gave one worker 66% to 92% of such a burst; a socket per
    worker (SO_REUSEPORT) gives each close to half. 20% cannot fail by chance (on port 0)."""
    c = cluster(2)
    n = 400
    if kind == "websocket":
        counts = asyncio.run(websocket_pids(c.script.ws_url + "/", n))
    else:
        counts = asyncio.run(http_pids(c.script.port, n))
    assert sum(counts.values()) == n
    assert set(counts) == set(c.worker_pids().values()), counts
    assert min(counts.values()) >= n // 5, counts


def test_connections_made_while_a_worker_restarts_are_served(cluster: Any) -> None:
    """The master keeps every worker's socket: connections the kernel gives to a dead worker's
    socket wait in its backlog for the worker that replaces it."""
    c = cluster(2)
    workers = c.worker_pids()
    mark = c.mark()
    os.kill(workers[2], signal.SIGKILL)
    c.wait_for(rf"worker 2 \(pid {workers[2]}\) died", start=mark)
    pids = [c.client()[1]["pid"] for _ in range(30)]  # from the "died" line on, no waiting
    new = int(c.wait_for(r"worker 2 ready \(pid (\d+)\)", start=mark)[1])
    assert set(pids) == {workers[1], new}, (pids, c.log)
    assert children(c.script.proc.pid) == {workers[1], new}


def run_app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The test app in the foreground (it is expected to exit)."""
    path = tmp_path / "refused.py"
    path.write_text(APP)
    env = {**os.environ, **NO_REDIS}
    env.pop("PLEZI_NO_AUTOSTART", None)
    return subprocess.run(
        [sys.executable, str(path), "--bind", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=20 * UNIT,
    )


def assert_refused(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 1, result.stderr
    assert (
        f"plezi: cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr
    )
    assert "started" not in result.stderr


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_port_another_program_listens_on_is_refused(tmp_path: Path, reuse_port: bool) -> None:
    """Even a program of the same user whose socket allows SO_REUSEPORT: plezi binds its first
    socket without the option, so it never joins another program's group."""
    with socket.socket() as other:
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert_refused(run_app(tmp_path, "--port", str(port), "--workers", "2"), port)


def test_a_second_server_on_a_clusters_port_is_refused(cluster: Any, tmp_path: Path) -> None:
    """Two plezi servers of the same user never share a port silently."""
    c = cluster(2)
    port = c.script.port
    assert_refused(run_app(tmp_path, "--port", str(port), "--workers", "2"), port)
    assert_refused(run_app(tmp_path, "--port", str(port)), port)
    pids = set(c.worker_pids().values())
    assert set(c.clients_on(pids)) == pids  # the first one serves on


def test_workers_share_a_unix_socket(cluster: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "plezi.sock")
    c = cluster(2, "--bind", path)
    assert c.script.url == path
    transport = httpx.HTTPTransport(uds=path)
    with httpx.Client(transport=transport, base_url="http://plezi", timeout=10 * UNIT) as client:
        for _ in range(10):
            reply = client.get("/status", headers={"Connection": "close"})
            assert reply.json()["pid"] in c.worker_pids().values()
    code, log = c.stop()
    assert code == 0, log
    assert not os.path.exists(path)  # the master removes the socket's path, as one process does
