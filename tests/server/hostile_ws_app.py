"""The server the hostile WebSocket tests attack, run in a subprocess (``start_script``).

The cyclic garbage collector is off, so that what a closed connection leaves behind stays
behind unless reference counting frees it. ``GET /live`` reports, as JSON: the WebSocket and
SSE connection objects alive, the controllers of this app alive, the pub/sub channels with
local subscribers, and the process's resident memory (from ``/proc``).

``/`` echoes every message (WebSocket) and serves an event stream (SSE); each connection
subscribes to a channel of its own, so the subscription must go when the connection does.
``/async`` is the same with an ``async`` ``on_close``.
"""

import asyncio
import gc
import json
import os

gc.disable()

import plezi  # noqa: E402
from plezi.server.connection import StreamConnection  # noqa: E402


class Echo:
    def on_open(self):
        self.subscribe(f"own-{self.id}")
        # A big attribute, so that a controller kept alive shows in the resident memory.
        self.ballast = bytearray(65536)

    def on_message(self, data):
        self.write(data)


class AsyncClose(Echo):
    """An ``async`` on_close: the connection is released once it has run."""

    async def on_close(self):
        await asyncio.sleep(0)
        self.publish("closed", "async")


class Live:
    def index(self):
        conns = controllers = 0
        for obj in gc.get_objects():
            if issubclass(type(obj), StreamConnection):
                conns += 1
            elif issubclass(type(obj), Echo):
                controllers += 1
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        status = plezi.pubsub_status()
        return json.dumps(
            {
                "connections": conns,
                "controllers": controllers,
                "channels": status["channels"],
                "rss": rss,
                "gc_enabled": gc.isenabled(),
            }
        )


plezi.route("/live", Live)
plezi.route("/async", AsyncClose)
plezi.route("/", Echo)
