"""Where a server's time goes under load: perf (kernel and native code) and py-spy (Python).

    bench/.venv/bin/python bench/profile.py --scenario hello           # plezi, wrk -c50
    bench/.venv/bin/python bench/profile.py --scenario echo --server picows

The server runs on core 0 and the load (wrk, or bench/wsload.c for ``echo``) on core 1, as in
run.py. Two passes: ``perf record`` on the server's process for ``--seconds`` (needs perf and
root or ``kernel.perf_event_paranoid`` <= 1 for kernel symbols), then the share of samples per
binary (kernel, interpreter, uvloop, httptools ...) and the top symbols; ``py-spy record`` for as
long, then the Python functions with the most samples of their own and the share of samples
under the main steps. py-spy stops the process for each sample, which slows the server (its
shares are what count, not the throughput during that pass) and counts time blocked in a
system call as that call's.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import SERVERS, free_port, wait_port, wsload

HERE = Path(__file__).resolve().parent
SPY = str(Path(sys.executable).parent / "py-spy")


def load_command(scenario: str, port: int, seconds: float) -> list[str]:
    url = f"http://127.0.0.1:{port}/"
    if scenario == "hello":
        return ["wrk", "-t1", "-c50", f"-d{seconds:g}s", url]
    if scenario == "x16":
        return ["wrk", "-t1", "-c50", f"-d{seconds:g}s", "-s", str(HERE / "pipeline.lua"), url]
    size = "4096" if scenario == "echo4k" else "32"
    return [wsload(), "--port", str(port), "--size", size, "--seconds", f"{seconds:g}"]


def under_load(args: argparse.Namespace, profiler: list[str]) -> str:
    """Start the server and the load, run ``profiler`` (with ``{pid}``) meanwhile."""
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", *SERVERS[args.server](port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        load = subprocess.Popen(
            ["taskset", "-c", "1", *load_command(args.scenario, port, args.seconds + 2)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        out = subprocess.run(
            [part.format(pid=server.pid) for part in profiler],
            capture_output=True,
            text=True,
            check=False,
            timeout=args.seconds + 60,
        )
        load.wait(args.seconds + 30)
        return out.stdout + out.stderr
    finally:
        server.terminate()
        server.wait(15)


def perf_pass(args: argparse.Namespace, folder: Path) -> None:
    data = folder / "perf.data"
    seconds = f"{args.seconds:g}"
    record = ["perf", "record", "-F", "999", "-g", "-p", "{pid}", "-o", str(data)]
    under_load(args, [*record, "--", "sleep", seconds])
    for sort in ("dso", "sym"):
        options = ["--sort", sort, "--no-children", "--stdio", "-g", "none", "--percent-limit", "1"]
        report = subprocess.run(
            ["perf", "report", "-i", str(data), *options],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        lines = [ln for ln in report.splitlines() if ln.strip() and not ln.startswith("#")]
        print(f"\nperf, samples by {'binary' if sort == 'dso' else 'symbol'}:")
        print("\n".join(lines[: 8 if sort == "dso" else 30]))


def spy_pass(args: argparse.Namespace, folder: Path) -> None:
    raw = folder / "spy.txt"
    record = [SPY, "record", "-p", "{pid}", "-d", f"{args.seconds:g}", "-r", "250"]
    under_load(args, [*record, "--native", "-f", "raw", "-o", str(raw)])
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if "plezi/" in frame or "(libc" in frame:
                under[frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0]] += n
    print(f"\npy-spy, {total} samples; most samples of their own:")
    for name, n in own.most_common(20):
        print(f"  {n / total:6.1%} {name}")
    print("py-spy, samples under (inclusive), per function:")
    for name, n in under.most_common(25):
        print(f"  {n / total:6.1%} {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", choices=("hello", "x16", "echo", "echo4k"), default="hello")
    p.add_argument("--server", default="plezi")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--skip", choices=("perf", "py-spy"), help="leave out one pass")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="plezi-profile-") as folder:
        if args.skip != "perf":
            perf_pass(args, Path(folder))
        if args.skip != "py-spy":
            spy_pass(args, Path(folder))


if __name__ == "__main__":
    main()
