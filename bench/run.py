"""Run plezi and its peers in one run and print figures and ratios.

    bash bench/setup.sh              # once: bench/.venv with plezi and the peers
    bench/.venv/bin/python bench/run.py --runs 3

Each server is pinned to core 0 and each load generator to core 1 (``taskset``). For every
measurement the server's and the load generator's CPU use are printed: a server below ~90% of a
core means the load generator (or something else) was the bottleneck, and the run says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "plezi": lambda port: [
        PY,
        str(HERE / "servers/plezi_app.py"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
    ],
    "uvicorn+starlette": lambda port: [
        PY,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE / "servers"),
        "starlette_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        "websockets",
    ],
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(server_pid: int, cmd: list[str]) -> tuple[str, float, float]:
    """Run a load generator on core 1; return its stdout, server CPU share, client CPU share."""
    c0, s0, t0 = children_cpu(), cpu_seconds(server_pid), time.perf_counter()
    out = subprocess.run(
        ["taskset", "-c", "1", *cmd], capture_output=True, text=True, check=True
    ).stdout
    elapsed = time.perf_counter() - t0
    return out, (cpu_seconds(server_pid) - s0) / elapsed, (children_cpu() - c0) / elapsed


def http_hello(port: int, pid: int, seconds: float) -> dict[str, float]:
    subprocess.run(
        ["wrk", "-t1", "-c50", "-d1s", f"http://127.0.0.1:{port}/"], capture_output=True, check=True
    )  # warm-up
    out, server_cpu, client_cpu = measure(
        pid, ["wrk", "-t1", "-c50", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"]
    )
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out or ("Socket errors" in out and "timeout" in out):
        raise RuntimeError(f"wrk failed:\n{out}")
    return {"value": float(m.group(1)), "server_cpu": server_cpu, "client_cpu": client_cpu}


def ws_echo(port: int, pid: int, seconds: float, size: int) -> dict[str, float]:
    out, server_cpu, _ = measure(
        pid,
        [
            PY,
            str(HERE / "wsload.py"),
            "--port",
            str(port),
            "--size",
            str(size),
            "--seconds",
            str(seconds),
        ],
    )
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "value": result["msgs_per_s"],
        "server_cpu": server_cpu,
        "client_cpu": result["client_cpu"],
    }


SCENARIOS: dict[str, Callable[[int, int, float], dict[str, float]]] = {
    "http hello (req/s, wrk -c50)": http_hello,
    "ws echo 32 B (msgs/s, 50 conns)": lambda p, pid, s: ws_echo(p, pid, s, 32),
    "ws echo 4 KiB (msgs/s, 50 conns)": lambda p, pid, s: ws_echo(p, pid, s, 4096),
}


def run_server(name: str, seconds: float, scenarios: list[str]) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *SERVERS[name](port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        return {sc: SCENARIOS[sc](port, proc.pid, seconds) for sc in scenarios}
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args()
    names = args.servers.split(",")
    scenarios = list(SCENARIOS)
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        n: {sc: [] for sc in scenarios} for n in names
    }
    for run in range(args.runs):
        for name in names:
            for sc, value in run_server(name, args.seconds, scenarios).items():
                results[name][sc].append(value)
                print(
                    f"run {run + 1}: {name:20} {sc:34} {value['value']:>10.0f}  "
                    f"server cpu {value['server_cpu']:.0%} load cpu {value['client_cpu']:.0%}",
                    flush=True,
                )
    print(
        f"\nmedians of {args.runs} run(s), {args.seconds:g}s each; server on core 0, load on core 1"
    )
    header = f"{'scenario':34} " + " ".join(f"{n:>18}" for n in names)
    print(header + "   plezi/peer")
    for sc in scenarios:
        med = {n: statistics.median(v["value"] for v in results[n][sc]) for n in names}
        ratios = ", ".join(
            f"{med['plezi'] / med[n]:.2f}x {n}" for n in names if n != "plezi" and "plezi" in med
        )
        print(f"{sc:34} " + " ".join(f"{med[n]:>18.0f}" for n in names) + f"   {ratios}")
        for n in names:
            low = [v for v in results[n][sc] if v["server_cpu"] < 0.9]
            if low:
                print(
                    f"  note: {n}: server core below 90% in {len(low)} run(s): "
                    "the load generator may be the bottleneck"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
