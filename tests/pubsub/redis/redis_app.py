"""The app the Redis tests run (twice, as two servers): a room with patterns and write_to.

Each connection first gets ``id:<its id>``. A message ``to:<id>:<text>`` is sent to one
connection, ``news:<text>`` is published on ``news.sport`` (everyone subscribes ``news.*``),
``pub:<channel>:<text>`` is published on ``channel``, anything else is published on ``room``.
GET / answers ``plezi.pubsub_status()``.
"""

import os

import plezi

if os.environ.get("APP_NAME"):
    plezi.app_name = os.environ["APP_NAME"]


class Room:
    def index(self):
        return plezi.pubsub_status()

    def on_open(self):
        self.subscribe("room")
        self.subscribe("news.*", pattern=True)
        self.write(f"id:{self.id}")

    def on_message(self, data):
        if data.startswith("to:"):
            _, target, text = data.split(":", 2)
            plezi.write_to(target, text)
        elif data.startswith("news:"):
            plezi.publish("news.sport", data[5:])
        elif data.startswith("pub:"):
            _, channel, text = data.split(":", 2)
            plezi.publish(channel, text)
        else:
            plezi.publish("room", data)


plezi.route("/", Room)
