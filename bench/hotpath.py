"""The uncompressed hot paths through the real classes, for an instruction count (callgrind).

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/hotpath.py reader 20000
    callgrind_annotate /tmp/cg.out | head -3      # "PROGRAM TOTALS": instructions

Sections: ``reader`` (masked 32-byte text frames fed to a sans-I/O session one per read, the
reader's fast path, then 100 per read, its general loop) and ``fanout`` (published messages
delivered by the registry to 1,000 subscribers that did not negotiate compression). Run it
with the code before and after a change (``PYTHONPATH=<other checkout>/src``, and the same
``PYTHONHASHSEED``) and compare the totals: the same work, so any difference is the change's
(plus a constant start-up cost: subtract an ``empty`` run; two counts, 100 and 300, give the
cost per message).
"""

from __future__ import annotations

import sys

from plezi.protocol.connection import WebSocketSession
from plezi.protocol.frames import OP_TEXT, encode_frame
from plezi.pubsub.message import Message
from plezi.pubsub.registry import Registry

FRAME = encode_frame(OP_TEXT, b"0123456789abcdef0123456789abcdef", mask=b"abcd")


def reader(n: int) -> None:
    session = WebSocketSession(max_message_size=1 << 20)
    for i in range(n):
        session.receive_data(FRAME)
        if i % 1000 == 0:
            session.events_received()
    pipelined = FRAME * 100
    for _ in range(n // 100):
        session.receive_data(pipelined)
        session.events_received()


class Sub:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def queue_frame(self, frame: bytes) -> None:
        self.out.append(frame)

    def run_handler(self, handler: object, message: Message) -> None:
        pass


def fanout(n: int) -> None:
    registry = Registry()
    subs = [Sub() for _ in range(1000)]
    for sub in subs:
        registry.forward("room", sub)
    payload = b'{"user":"ada","text":"' + b"x" * 270 + b'"}'
    for _ in range(n):
        registry.deliver(Message("room", payload, True))
        for sub in subs:
            sub.out.clear()


if __name__ == "__main__":
    section, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if section != "empty":
        {"reader": reader, "fanout": fanout}[section](count)
