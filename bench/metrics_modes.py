"""What one count costs, in instructions: a plain ``int`` slot (what plezi does), a
``prometheus_client`` Counter, and the same Counter in its multiprocess mode (every increment
written to a memory-mapped file, which is how that mode aggregates worker processes).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/metrics_modes.py int 100000      # and: int 0

(and ``counter``, ``multiprocess``): per count = (instructions at N - at 0) / N.
"""

from __future__ import annotations

import os
import sys
import tempfile


class Conn:
    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received = 0


def main(kind: str, n: int) -> None:
    if kind == "int":
        conn = Conn()
        for _ in range(n):
            conn.received += 1
        return
    if kind == "multiprocess":
        # The mode is chosen when prometheus_client is imported: the folder must be set first.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-")
    elif kind != "counter":
        raise SystemExit(f"unknown kind {kind!r}: int, counter or multiprocess")
    from prometheus_client import Counter

    counter = Counter("bench_messages", "messages", ["kind"]).labels("websocket")
    for _ in range(n):
        counter.inc()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
