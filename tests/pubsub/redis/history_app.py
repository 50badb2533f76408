"""The app of the Redis history tests: a recoverable channel ``chat`` (``HISTORY`` messages for
``HISTORY_TTL`` seconds), subscribers on ``/sub/<channel>``, publishers on demand.

A connection subscribes to the channel named by the path and says ``ready <pid>``; ``on_recover`` is
reported to the client as ``{"event": "on_recover", ...}``. A message ``pub <channel> <count>
<start>`` publishes ``{"n": start}`` ... ``{"n": start + count - 1}`` on the channel.
"""

import os

import plezi

plezi.channel(
    "chat",
    history=int(os.environ.get("HISTORY", "1000")),
    history_ttl=float(os.environ.get("HISTORY_TTL", "300")),
)


class Sub:
    def on_open(self):
        self.subscribe(self.params["id"])
        self.write(f"ready {os.getpid()}")

    def on_recover(self, channel, recovered):
        self.write({"event": "on_recover", "channel": channel, "recovered": recovered})

    def on_message(self, data):
        _, channel, count, start = data.split()
        for n in range(int(start), int(start) + int(count)):
            plezi.publish(channel, {"n": n})


plezi.route("/sub/:id", Sub)
