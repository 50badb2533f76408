"""plezi: the chat pattern. Every client subscribes; every message received is published.

``PLEZI_BENCH_HISTORY=N`` gives the channel a history of N messages (positions assigned, messages
kept: the cost of recovery on the publish path). The messages are strings, so the frames are the
same as without history and fanload counts them alike.
"""

import os

import plezi

if os.environ.get("PLEZI_BENCH_HISTORY"):
    plezi.channel("bench", history=int(os.environ["PLEZI_BENCH_HISTORY"]))


class Fanout:
    def on_open(self):
        self.subscribe("bench")

    def on_message(self, data):
        plezi.publish("bench", data)


plezi.route("/", Fanout)
