"""The app of the Redis history tests: a recoverable channel ``chat`` (``HISTORY`` messages for
``HISTORY_TTL`` seconds), subscribers on ``/sub/<channel>``, publishers on demand.

A connection subscribes to the channel named by the path and says ``ready <pid>``; ``on_recover`` is
reported to the client as ``{"event": "on_recover", ...}``. A message ``pub <channel> <count>
<start>`` publishes ``{"n": start}`` ... ``{"n": start + count - 1}`` on the channel.

``/page`` is a page whose browser client subscribes through ``/sub/chat`` and records, in
``window.got``, the ``n`` of each message and, in ``window.outcomes``, each recovery's outcome.
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


PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script src="/client.js"></script>
<script>
window.got = [];
window.outcomes = [];
window.opens = 0;
const client = new PleziClient("/sub/chat", { minDelay: 100, maxDelay: 400 });
client.onopen = () => { window.opens += 1; };
client.unknown = (msg) => { if (msg && msg._pos) window.got.push(msg.n); };
client.onrecover = (outcome) => window.outcomes.push(outcome);
</script></head></html>"""


class Page:
    def index(self):
        self.response.headers["content-type"] = "text/html; charset=utf-8"
        return PAGE


plezi.route("/client.js", "client")
plezi.route("/page", Page)
plezi.route("/sub/:id", Sub)
