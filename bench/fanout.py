"""Fan-out (the chat pattern): plezi against its peers, in one run, with ratios.

    bench/.venv/bin/python bench/fanout.py --runs 3

1,000 WebSocket subscribers on one channel; one of them sends 32-byte messages and the server
publishes each one to all (see fanload.py for the lockstep, burst and steady modes). Servers on
core 0 (a private redis-server too, for "plezi redis"), the load generator on core 1;
"--workers 2" servers get both cores. python-socketio is driven by the same load generator
speaking raw Socket.IO over the WebSocket transport (``fanload.py --protocol socketio``).

    bench/.venv/bin/python bench/fanout.py --deflate --runs 3

``--deflate``: permessage-deflate instead. ~300-byte JSON chat messages (``fanload.py --chat``),
lockstep and burst, for plezi without compression, plezi with every subscriber compressing
(``--deflate``: each message compressed once for all of them) and the ``websockets`` package's
broadcast with its default compression (context takeover, a compressor per connection); prints
deliveries/s, bytes on the wire per delivery and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from run import IODINE_BUILT, PY, cpu_seconds, free_port, iodine_command, measure, wait_port

HERE = Path(__file__).resolve().parent
REDIS_PORT = free_port()
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
#: The private redis-server's pid (set in ``main``): its CPU is counted per message published.
REDIS_PID = [0]
FANOUT_APP = str(HERE / "servers/plezi_fanout.py")


def _plezi(*extra: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, FANOUT_APP, "--port", str(port), "--bind", "127.0.0.1", *extra]


def _history(*extra: str) -> Callable[[int], list[str]]:
    """plezi with ``history=1000`` on the channel (``env`` execs: the pid measured is plezi's)."""
    return lambda port: ["env", "PLEZI_BENCH_HISTORY=1000", *_plezi(*extra)(port)]


def _script(name: str, *extra: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, str(HERE / "servers" / name), *extra, "--port", str(port)]


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "plezi": _plezi(),
    # The pure-Python modules instead of the compiled ones (src/plezi/compiled.py).
    "plezi pure": lambda port: ["env", "PLEZI_PURE_PYTHON=1", *_plezi()(port)],
    "plezi --workers 2": _plezi("--workers", "2"),
    # The batched flush's fallback: one send() per subscriber instead of one io_uring_enter.
    "plezi no io_uring": lambda port: ["env", "PLEZI_NO_IO_URING=1", *_plezi()(port)],
    "plezi redis": _plezi("--redis", REDIS_URL),
    "plezi history": _history(),
    "plezi redis history": _history("--redis", REDIS_URL),
    "handwritten write": _script("handwritten.py", "--mode", "write"),
    "handwritten cork": _script("handwritten.py", "--mode", "cork"),
    "websockets broadcast": _script("websockets_broadcast.py"),
    "uvicorn+starlette loop": lambda port: [
        PY,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE / "servers"),
        "starlette_fanout:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--ws",
        "websockets",
        "--ws-ping-interval",
        "3600",
        "--backlog",
        "4096",
    ],
    "python-socketio": _script("socketio_fanout.py"),
    "socketify publish": _script("socketify_app.py", "--fanout"),
}
if IODINE_BUILT:
    SERVERS["iodine publish"] = lambda port: iodine_command(port, fanout=True)
SOCKETIO = {"python-socketio"}
#: Not in the default list (``--servers`` names them): the cost of a channel with history.
OPTIONAL = {"plezi history", "plezi redis history", "plezi no io_uring"}
#: Pairs whose ratio (with history / without) the summary prints.
HISTORY_PAIRS = (("plezi history", "plezi"), ("plezi redis history", "plezi redis"))
KEYS = ("lockstep", "burst", "p50_ms", "p99_ms", "server_cpu", "client_cpu")


#: ``--deflate`` runs: (server, fanload flags).
DEFLATE_RUNS: dict[str, tuple[str, list[str]]] = {
    "plezi uncompressed": ("plezi", ["--chat"]),
    "plezi deflate": ("plezi", ["--deflate"]),
    # Lockstep only: in a burst, broadcast() skips connections whose buffer is full (about 5%
    # of the messages were lost per receiver with compression on), so no burst figure is fair.
    "websockets deflate": ("websockets broadcast", ["--deflate", "--mode", "lockstep"]),
}
DEFLATE_KEYS = ("lockstep", "burst", "wire_bytes", "server_cpu", "client_cpu")


def one(
    name: str, args: argparse.Namespace, load_flags: list[str] | None = None
) -> dict[str, float]:
    port = free_port()
    pin = ["taskset", "-c", "0,1" if "workers" in name else "0"]
    proc = subprocess.Popen(
        [*pin, *SERVERS[name](port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        load = [
            PY,
            str(HERE / "fanload.py"),
            "--port",
            str(port),
            "--subs",
            str(args.subs),
            "--seconds",
            str(args.seconds),
            "--bursts",
            # python-socketio takes minutes per burst (2,000,000 deliveries at ~10k/s): one is
            # enough, and it needs a longer wait than fanload's default 60 s.
            "1" if name in SOCKETIO else str(args.bursts),
            "--mode",
            "all" if load_flags is None else "both",
            *(["--protocol", "socketio", "--timeout", "600"] if name in SOCKETIO else []),
            *(load_flags or []),
        ]
        redis_before = cpu_seconds(REDIS_PID[0]) if "redis" in name else 0.0
        out, server_cpu, _ = measure(proc.pid, load)
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        result["server_cpu"] = server_cpu
        if "redis" in name:  # Redis's own CPU per message published (all modes together)
            redis_cpu = cpu_seconds(REDIS_PID[0]) - redis_before
            result["redis_us"] = 1e6 * redis_cpu / max(1, result["sent"])
        if result.get("lost") or result.get("extra"):
            print(f"  note: {name}: {result['lost']} lost, {result['extra']} extra", flush=True)
        return result
    finally:
        proc.terminate()
        proc.wait(20)


def run_all(args: argparse.Namespace, names: list[str]) -> None:
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for run in range(args.runs):
        for name in names:
            r = one(name, args)
            results[name].append(r)
            print(
                f"run {run + 1}: {name:22} lockstep {r['lockstep']:>9.0f}/s  burst "
                f"{r['burst']:>10.0f}/s  steady p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f}"
                f" ms  server cpu {r['server_cpu']:.0%}  load cpu {r['client_cpu']:.0%}"
                + (f"  redis cpu {r['redis_us']:.1f} us/msg" if "redis_us" in r else ""),
                flush=True,
            )
    print(
        f"\nmedians of {args.runs} run(s); deliveries/s counted at the clients; {args.subs} "
        "subscribers; steady: 100 msgs/s, publish-to-delivery latency"
    )
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in KEYS} for n in names}
    print(
        f"{'server':22} {'lockstep':>10} {'burst':>11} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu srv/load':>12}   plezi / server (lockstep, burst)"
    )
    for n in names:
        ratio = ""
        if "plezi" in med and n != "plezi":
            ratio = (
                f"{med['plezi']['lockstep'] / med[n]['lockstep']:.2f}x, "
                f"{med['plezi']['burst'] / med[n]['burst']:.2f}x"
            )
        m = med[n]
        cpu = f"{m['server_cpu']:.0%} / {m['client_cpu']:.0%}"
        print(
            f"{n:22} {m['lockstep']:>10.0f} {m['burst']:>11.0f} {m['p50_ms']:>7.2f} "
            f"{m['p99_ms']:>7.2f} {cpu:>12}   {ratio}"
        )
    for with_history, without in HISTORY_PAIRS:
        if with_history in med and without in med:
            a, b = med[with_history], med[without]
            print(
                f"{with_history} / {without}: lockstep {a['lockstep'] / b['lockstep']:.2f}x, "
                f"burst {a['burst'] / b['burst']:.2f}x"
            )


def run_deflate(args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {n: [] for n in DEFLATE_RUNS}
    for run in range(args.runs):
        for label, (server, flags) in DEFLATE_RUNS.items():
            r = one(server, args, flags)
            r.setdefault("burst", float("nan"))  # not measured (lockstep only)
            results[label].append(r)
            print(
                f"run {run + 1}: {label:20} lockstep {r['lockstep']:>9.0f}/s  burst "
                f"{r['burst']:>10.0f}/s  {r['wire_bytes']:.0f} bytes/delivery  server cpu "
                f"{r['server_cpu']:.0%}  load cpu {r['client_cpu']:.0%}",
                flush=True,
            )
    med = {
        n: {k: statistics.median(r[k] for r in results[n]) for k in DEFLATE_KEYS}
        for n in DEFLATE_RUNS
    }
    print(
        f"\nmedians of {args.runs} run(s); {args.subs} subscribers; ~300-byte JSON messages\n"
        f"{'server':20} {'lockstep':>10} {'burst':>11} {'bytes/delivery':>15}"
    )
    for n, m in med.items():
        print(f"{n:20} {m['lockstep']:>10.0f} {m['burst']:>11.0f} {m['wire_bytes']:>15.0f}")
    d, u, w = med["plezi deflate"], med["plezi uncompressed"], med["websockets deflate"]
    print(
        f"\nplezi deflate: bytes on the wire {d['wire_bytes'] / u['wire_bytes']:.2f}x "
        f"uncompressed; lockstep {d['lockstep'] / u['lockstep']:.2f}x plezi uncompressed, "
        f"{d['lockstep'] / w['lockstep']:.2f}x websockets deflate; burst "
        f"{d['burst'] / u['burst']:.2f}x, {d['burst'] / w['burst']:.2f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--subs", type=int, default=1000)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--servers", default=",".join(n for n in SERVERS if n not in OPTIONAL))
    p.add_argument("--deflate", action="store_true", help="permessage-deflate runs (see above)")
    args = p.parse_args()
    if args.deflate:
        run_deflate(args)
        return
    redis = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            "redis-server",
            "--port",
            str(REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    REDIS_PID[0] = redis.pid
    wait_port(REDIS_PORT)
    try:
        run_all(args, args.servers.split(","))
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    sys.exit(main())
