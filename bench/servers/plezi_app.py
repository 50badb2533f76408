"""plezi: HTTP hello world and WebSocket echo on one route."""

import plezi


class Bench:
    def index(self):
        return "Hello World!"

    def on_message(self, data):
        self.write(data)


plezi.route("/", Bench)
