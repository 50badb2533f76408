"""The cost of presence: N WebSocket connections joining one room, with and without presence.

    bench/.venv/bin/python bench/presence.py --clients 1000 --runs 3

For each engine (one process on memory; one process on a private redis-server; ``--workers 2``)
the server (``servers/plezi_presence.py``) runs twice: ``room`` a plain channel, then a presence
channel. The load generator (on core 1; the server on core 0, Redis too) opens the N connections
in waves of 100 at once and waits for each one's ``ready``, written after its subscription (and
join). Printed per engine: the time for all N (median of the runs), its ratio to the plain
channel, then with presence: the room's size as ``plezi.presence`` answers it (must be N),
the Redis commands per join (``INFO commandstats``: HSET, PUBLISH, the scripts...) and the round
trips presence made (the joins of one loop iteration share one), and the time from closing all N
until ``plezi.presence`` answers an empty room.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import PY, free_port, wait_port
from websockets.asyncio.client import connect

HERE = Path(__file__).resolve().parent
APP = str(HERE / "servers" / "plezi_presence.py")
WAVE = 100


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def redis_command(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def redis_calls(port: int) -> int:
    """Every command Redis has run but INFO (``INFO commandstats``)."""
    total = 0
    for line in redis_command(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_") and not line.startswith("cmdstat_info:"):
            total += int(line.split("calls=", 1)[1].split(",", 1)[0])
    return total


async def stats(url: str) -> dict[str, Any]:
    async with connect(url + "/?watch=1", open_timeout=30) as ws:
        await ws.send("stats")
        return json.loads(await asyncio.wait_for(ws.recv(), 30))  # type: ignore[no-any-return]


async def load(url: str, clients: int, presence: bool, redis_port: int | None) -> dict[str, Any]:
    async def one(n: int) -> Any:
        ws = await connect(f"{url}/?n={n}", open_timeout=60, max_queue=None)
        assert await asyncio.wait_for(ws.recv(), 60) == "ready"
        return ws

    before = redis_calls(redis_port) if redis_port and presence else 0
    start = time.perf_counter()
    conns: list[Any] = []
    for first in range(0, clients, WAVE):
        conns += await asyncio.gather(*(one(n) for n in range(first, min(clients, first + WAVE))))
    joined = time.perf_counter() - start
    result: dict[str, Any] = {"joined": joined}
    if presence:
        seen = await stats(url)
        result["count"] = seen["count"]
        if redis_port:
            result["commands"] = (redis_calls(redis_port) - before) / clients
            result["round_trips"] = seen["round_trips"]
    start = time.perf_counter()
    await asyncio.gather(*(ws.close() for ws in conns))
    if presence:
        deadline = time.monotonic() + 60
        while (await stats(url))["count"] > 0:
            assert time.monotonic() < deadline, "the room never emptied"
            await asyncio.sleep(0.01)
        result["emptied"] = time.perf_counter() - start
    return result


def run_once(engine: str, presence: bool, clients: int, redis_port: int | None) -> dict[str, Any]:
    port = free_port()
    cmd = [PY, APP, "--port", str(port), "--bind", "127.0.0.1"]
    if engine == "redis":
        cmd += ["--redis", f"redis://127.0.0.1:{redis_port}/0"]
    elif engine == "workers":
        cmd += ["--workers", "2"]
    env = {**os.environ, "BENCH_PRESENCE": "1" if presence else "0"}
    env.pop("REDIS_URL", None)
    env.pop("PL_REDIS_URL", None)
    core = "0,1" if engine == "workers" else "0"
    server = subprocess.Popen(
        ["taskset", "-c", core, *cmd] if shutil.which("taskset") else cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        if engine == "workers":
            time.sleep(1.0)  # both workers ready (the master binds before they start)
        return asyncio.run(load(f"ws://127.0.0.1:{port}", clients, presence, redis_port))
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="memory,redis,workers")
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    engines = args.engines.split(",")
    redis_port = None
    redis = None
    workdir = tempfile.mkdtemp(prefix="plezi-bench-")
    if "redis" in engines:
        redis_port = free_port()
        redis = subprocess.Popen(
            pinned(0, ["redis-server", "--port", str(redis_port), "--save", "", "--dir", workdir]),
            stdout=subprocess.DEVNULL,
        )
        wait_port(redis_port)
    try:
        print(f"{args.clients} connections joining one room, median of {args.runs} run(s)")
        for engine in engines:
            plain = [run_once(engine, False, args.clients, redis_port) for _ in range(args.runs)]
            runs = [run_once(engine, True, args.clients, redis_port) for _ in range(args.runs)]
            base = statistics.median(r["joined"] for r in plain)
            with_p = statistics.median(r["joined"] for r in runs)
            line = (
                f"{engine:8} plain {base:.3f}s  presence {with_p:.3f}s "
                f"({with_p / base:.2f}x, {with_p / args.clients * 1e6:.0f} us per connection)  "
                f"room size {runs[-1]['count']}  emptied in "
                f"{statistics.median(r['emptied'] for r in runs):.3f}s"
            )
            if engine == "redis":
                line += (
                    f"  Redis commands/join {statistics.median(r['commands'] for r in runs):.2f}"
                    f"  round trips {runs[-1]['round_trips']}"
                )
            print(line, flush=True)
            assert all(r["count"] == args.clients for r in runs), "a join is missing"
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
