"""The presence bench's server: every WebSocket at ``/`` subscribes to ``room`` (joining it
when ``BENCH_PRESENCE=1`` makes it a presence channel) and then writes ``ready``. A client at
``/?watch=1`` does not subscribe; its ``stats`` message is answered with the room's size as
``plezi.presence`` sees it and the Redis round trips presence made in this process."""

import json
import os

import plezi
from plezi.pubsub.hub import hub

PRESENCE = os.environ.get("BENCH_PRESENCE") == "1"
if PRESENCE:
    plezi.channel("room", presence=True)


class Room:
    def on_open(self):
        if self.params.get("watch"):
            return
        if PRESENCE:
            self.subscribe("room", info={"n": self.params.get("n", "")})
        else:
            self.subscribe("room")
        self.write("ready")

    async def on_message(self, data):
        if data == "stats":
            count = len(await plezi.presence("room")) if PRESENCE else -1
            trips = getattr(hub.engine.presence, "round_trips", None)
            self.write(json.dumps({"count": count, "round_trips": trips}))


plezi.route("/", Room)
