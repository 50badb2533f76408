"""plezi for bench/million.py: every WebSocket on ``/`` subscribes to one channel, and a message
received is published to it (so one client's message is a broadcast to every connection, across
``--workers``); ``GET /`` is a hello world."""

import plezi


class Everyone:
    def index(self):
        return "Hello World!"

    def on_open(self):
        self.subscribe("all")

    def on_message(self, data):
        self.publish("all", data)


plezi.route("/", Everyone)
