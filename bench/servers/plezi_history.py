"""plezi: a channel with history, for the reconnect storm (bench/history.py).

``/sub`` subscribes to ``bench`` (recovering when the client sends ``_recover``) and says
``ready``; on ``/pub`` a message ``N`` publishes N JSON objects ``{"n": i}`` on ``bench``.
"""

import os

import plezi

plezi.channel("bench", history=int(os.environ.get("PLEZI_BENCH_HISTORY", "1000")))


class Sub:
    def on_open(self):
        self.subscribe("bench")
        self.write("ready")

    def on_message(self, data):
        pass


class Pub:
    def on_message(self, data):
        for n in range(int(data)):
            plezi.publish("bench", {"n": n})
        self.write("done")


plezi.route("/sub", Sub)
plezi.route("/pub", Pub)
