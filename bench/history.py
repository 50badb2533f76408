"""The reconnect storm: many clients come back at once, each behind on a channel with history.

    bench/.venv/bin/python bench/history.py --runs 3                # one process
    bench/.venv/bin/python bench/history.py --runs 3 --redis        # through Redis

The server (``servers/plezi_history.py``, ``history=1000``) runs on core 0 (and a private
redis-server with ``--redis``); this script is the load generator, on core 1. Each run: one
client learns the channel's position, ``--behind`` messages are published, then ``--clients``
clients connect at the same moment with that position (``_recover``). Timed: from the first
connection attempt until every client has its ``_recover_`` notice and all the missed messages
(the WebSocket handshakes included). Checked: every client recovered, and got each missed
message once, in order. The fan-out cost of history is measured by fanout.py::

    bench/.venv/bin/python bench/fanout.py --runs 3 \\
        --servers "plezi,plezi history,plezi redis,plezi redis history"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from run import PY, cpu_seconds, free_port, wait_port
from websockets.asyncio.client import connect

HERE = Path(__file__).resolve().parent
APP = str(HERE / "servers" / "plezi_history.py")


async def comes_back(url: str, behind: int) -> tuple[bool, list[int]]:
    """One client: connect with the position, read the notice and ``behind`` messages."""
    async with connect(url, max_queue=None, open_timeout=120, ping_interval=None) as ws:
        recovered = False
        got: list[int] = []
        while len(got) < behind:
            message = await ws.recv()
            if message == "ready":
                continue
            data = json.loads(message)
            if data.get("event") == "_recover_":
                recovered = data["recovered"]
                if not recovered:
                    break
                continue
            got.append(data["_pos"]["offset"])
        return recovered, got


async def storm(port: int, clients: int, behind: int) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{port}"
    async with connect(base + "/pub") as pub, connect(base + "/sub") as first:
        assert await first.recv() == "ready"
        await pub.send("1")
        position = json.loads(await first.recv())["_pos"]
        assert await pub.recv() == "done"
    async with connect(base + "/pub") as pub:
        await pub.send(str(behind))
        assert await pub.recv() == "done"
    since = {"bench": [position["epoch"], position["offset"]]}
    url = f"{base}/sub?_recover={urllib.parse.quote(json.dumps(since))}"
    start = time.perf_counter()
    results = await asyncio.gather(*(comes_back(url, behind) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    expected = list(range(position["offset"] + 1, position["offset"] + behind + 1))
    return {
        "seconds": elapsed,
        "recovered": sum(ok for ok, _ in results),
        "exact": sum(got == expected for _, got in results),
    }


def one(args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    port = free_port()
    command = ["taskset", "-c", "0", PY, APP, "--port", str(port), "--bind", "127.0.0.1"]
    if redis_url:
        command += ["--redis", redis_url]
    env = {**os.environ, "PLEZI_BENCH_HISTORY": str(args.history)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        cpu = cpu_seconds(proc.pid)
        result = asyncio.run(storm(port, args.clients, args.behind))
        result["server_cpu_s"] = cpu_seconds(proc.pid) - cpu
        return result
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--behind", type=int, default=100)
    p.add_argument("--history", type=int, default=1000)
    p.add_argument("--redis", action="store_true", help="through a private redis-server")
    args = p.parse_args()
    os.sched_setaffinity(0, {1})  # the load generator's core
    redis = None
    redis_url = None
    if args.redis:
        redis_port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis = subprocess.Popen(
            ["taskset", "-c", "0", "redis-server", "--port", str(redis_port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(redis_port)
    try:
        times = []
        for run in range(args.runs):
            r = one(args, redis_url)
            times.append(r["seconds"])
            ok = r["recovered"] == r["exact"] == args.clients
            print(
                f"run {run + 1}: {args.clients} clients, {args.behind} behind: all back in "
                f"{r['seconds']:.2f} s (server cpu {r['server_cpu_s']:.2f} s); recovered "
                f"{r['recovered']}, exact {r['exact']}{'' if ok else '  <- NOT ALL'}",
                flush=True,
            )
        print(f"median {statistics.median(times):.2f} s ({'redis' if args.redis else 'memory'})")
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)


if __name__ == "__main__":
    sys.exit(main())
