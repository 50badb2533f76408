"""plezi: the chat pattern. Every client subscribes; every message received is published."""

import plezi


class Fanout:
    def on_open(self):
        self.subscribe("bench")

    def on_message(self, data):
        plezi.publish("bench", data)


plezi.route("/", Fanout)
