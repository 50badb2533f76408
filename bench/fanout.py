"""Fan-out (the chat pattern): plezi against its peers, in one run, with ratios.

    bench/.venv/bin/python bench/fanout.py --runs 3

1,000 WebSocket subscribers on one channel; one of them sends 32-byte messages and the server
publishes each one to all (see fanload.py for the lockstep and burst modes). Servers on core 0,
the load generator on core 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from run import PY, free_port, measure, wait_port

HERE = Path(__file__).resolve().parent

SERVERS = {
    "plezi": lambda port: [
        PY,
        str(HERE / "servers/plezi_fanout.py"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
    ],
    "plezi --workers 2": lambda port: [
        PY,
        str(HERE / "servers/plezi_fanout.py"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--workers",
        "2",
    ],
    "handwritten write": lambda port: [
        PY,
        str(HERE / "servers/handwritten.py"),
        "--mode",
        "write",
        "--port",
        str(port),
    ],
    "handwritten cork": lambda port: [
        PY,
        str(HERE / "servers/handwritten.py"),
        "--mode",
        "cork",
        "--port",
        str(port),
    ],
    "websockets broadcast": lambda port: [
        PY,
        str(HERE / "servers/websockets_broadcast.py"),
        "--port",
        str(port),
    ],
}


def one(name: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    pin = ["taskset", "-c", "0,1" if "workers" in name else "0"]
    proc = subprocess.Popen(
        [*pin, *SERVERS[name](port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        out, server_cpu, _ = measure(
            proc.pid,
            [
                PY,
                str(HERE / "fanload.py"),
                "--port",
                str(port),
                "--subs",
                str(args.subs),
                "--seconds",
                str(args.seconds),
                "--bursts",
                str(args.bursts),
            ],
        )
        result = json.loads(out.strip().splitlines()[-1])
        result["server_cpu"] = server_cpu
        return result
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--servers", default=",".join(SERVERS))
    args = p.parse_args()
    names = args.servers.split(",")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for run in range(args.runs):
        for name in names:
            r = one(name, args)
            results[name].append(r)
            print(
                f"run {run + 1}: {name:22} lockstep {r['lockstep']:>11.0f}/s  burst "
                f"{r['burst']:>12.0f}/s  server cpu {r['server_cpu']:.0%} (master only with "
                f"workers)  load cpu {r['client_cpu']:.0%}",
                flush=True,
            )
    print(
        f"\nmedians of {args.runs} run(s); deliveries per second counted at the clients; "
        f"{args.subs} subscribers"
    )
    med = {
        n: {k: statistics.median(r[k] for r in results[n]) for k in ("lockstep", "burst")}
        for n in names
    }
    print(f"{'server':22} {'lockstep':>12} {'burst':>14}   plezi / server")
    for n in names:
        ratio = ""
        if "plezi" in med and n != "plezi":
            ratio = (
                f"lockstep {med['plezi']['lockstep'] / med[n]['lockstep']:.2f}x, "
                f"burst {med['plezi']['burst'] / med[n]['burst']:.2f}x"
            )
        print(f"{n:22} {med[n]['lockstep']:>12.0f} {med[n]['burst']:>14.0f}   {ratio}")


if __name__ == "__main__":
    sys.exit(main())
