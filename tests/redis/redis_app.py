"""The app the Redis tests run (twice, as two servers): a room with patterns and write_to.

Each connection first gets ``id:<its id>``. A message ``to:<id>:<text>`` is sent to one
connection, ``news:<text>`` is published on ``news.sport`` (everyone subscribes ``news.*``),
``pub:<channel>:<text>`` is published on ``channel``, ``hold`` blocks this worker's loop for a
second (so that the next client is accepted by another worker), anything else is published on
``room``. GET / answers ``plezi.pubsub_status()``.
"""

import asyncio
import os
import time

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
        if data == "hold":
            # The reply leaves when this callback returns; then the loop blocks, so the
            # worker accepts nobody for a second.
            self.write("holding")
            asyncio.get_running_loop().call_soon(time.sleep, 1.0)
        elif data.startswith("to:"):
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
