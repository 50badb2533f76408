"""Redis's own CPU per message published on a channel with history, against a plain PUBLISH.

    .venv/bin/python bench/redis_cost.py            # plezi's own .venv is enough
    .venv/bin/python bench/redis_cost.py --messages 100000

Starts a private redis-server with one subscribing connection that reads everything (as a
plezi server does), then sends the same messages (32 bytes each) pipelined: as plain
``PUBLISH`` commands, and as runs of plezi's publish script (``redis_history.PUBLISH_SCRIPT``)
of 1 message (what each message cost before batching, and what the first message of a loop
iteration still costs), 10, 100 and ``BATCH_MAX`` messages. For each it prints Redis's CPU
time (``INFO cpu``, user + system) per message and ``INFO commandstats``' microseconds per
message of the script and of the XADD and PUBLISH it runs. Redis's CPU is a count of the work
Redis does, so the figures hold better than wall-clock ones on a busy machine; they still move
by some 10% between runs there.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import threading
import time

import hiredis

from plezi.pubsub.redis_history import BATCH_MAX, PUBLISH_SCRIPT
from plezi.pubsub.redis_link import pack_command

PAYLOAD = b"0123456789abcdef0123456789abcdef"
KEYS = [b"app:\x00plz:stream:bench", b"app:\x00plz:meta:bench", b"app:bench"]
#: history=1000, history_ttl=300 s in ms, the epoch prefix, the meta key's TTL (7 days).
COMMON = [b"1000", b"300000", b"bench", b"604800"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A blocking RESP connection that sends pipelines and counts the replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = hiredis.Reader()

    def pipeline(self, commands: list[bytes]) -> list[object]:
        self.sock.sendall(b"".join(commands))
        replies: list[object] = []
        while len(replies) < len(commands):
            self.reader.feed(self.sock.recv(1 << 20))
            while (reply := self.reader.gets()) is not False:
                if isinstance(reply, Exception):
                    raise reply
                replies.append(reply)
        return replies

    def call(self, *args: bytes) -> object:
        return self.pipeline([pack_command(*args)])[0]

    def info(self, section: bytes) -> dict[str, str]:
        text = self.call(b"INFO", section)
        assert isinstance(text, bytes)
        return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)

    def cpu(self) -> float:
        info = self.info(b"cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def stat_usec(stats: dict[str, str], command: str) -> float:
    fields = dict(p.split("=") for p in stats.get(f"cmdstat_{command}", "usec=0").split(","))
    return float(fields["usec"])


def measure(redis: Redis, name: str, commands: list[bytes], messages: int) -> None:
    redis.call(b"FLUSHALL")
    redis.call(b"CONFIG", b"RESETSTAT")
    before = redis.cpu()
    redis.pipeline(commands)
    cpu = redis.cpu() - before
    stats = redis.info(b"commandstats")
    per = {c: stat_usec(stats, c) / messages for c in ("evalsha", "xadd", "publish")}
    script = f"{per['evalsha']:6.2f}" if per["evalsha"] else "     -"
    print(
        f"{name:28} {1e6 * cpu / messages:6.2f} us                 {script} {per['xadd']:6.2f} "
        f"{per['publish']:6.2f}",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=50_000)
    args = p.parse_args()
    port = free_port()
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), *options], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis = Redis(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        subscriber = socket.create_connection(("127.0.0.1", port))
        subscriber.sendall(pack_command(b"SUBSCRIBE", KEYS[2]))

        def drain() -> None:
            while subscriber.recv(1 << 20):
                pass

        threading.Thread(target=drain, daemon=True).start()
        sha = redis.call(b"SCRIPT", b"LOAD", PUBLISH_SCRIPT)
        assert isinstance(sha, bytes)
        n = args.messages
        print(f"{n} messages of {len(PAYLOAD)} bytes, one subscriber; Redis per message:")
        print(f"{'':28} {'CPU':>9}   commandstats: {'script':>6} {'xadd':>6} {'publish':>6}")
        publish = pack_command(b"PUBLISH", KEYS[2], b"\x00plz:t" + PAYLOAD)
        measure(redis, "PUBLISH (no history)", [publish] * n, n)
        for size in (1, 10, 100, BATCH_MAX):
            run = pack_command(b"EVALSHA", sha, b"3", *KEYS, *COMMON, *[b"r", PAYLOAD] * size)
            label = "script, 1 message per run" if size == 1 else f"script, runs of {size}"
            measure(redis, label, [run] * (n // size), n // size * size)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
