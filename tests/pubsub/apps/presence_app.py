"""The app of the presence tests (a subprocess: one server, ``--workers``, or two on a Redis).

``ws://.../?room=room.1&name=ann`` joins ``room.1`` (a presence channel: ``room.*``) with
``{"name": "ann"}`` after forwarding its notification channel, and first sends
``{"event": "hello", "id": ..., "pid": ...}``. Messages: ``who`` answers
``{"event": "who", "members": await plezi.presence(room)}``; ``leave`` unsubscribes
(``{"event": "left"}``); ``join <name>`` subscribes again with that name. ``PRESENCE_TTL`` sets
``presence_ttl``; ``APP_NAME`` the app name.
"""

import json
import os

import plezi

if os.environ.get("APP_NAME"):
    plezi.app_name = os.environ["APP_NAME"]
plezi.channel("room.*", presence=True, presence_ttl=float(os.environ.get("PRESENCE_TTL", "60")))


class Member:
    def on_open(self):
        self.room = self.params.get("room", "room.1")
        self.write(json.dumps({"event": "hello", "id": self.id, "pid": os.getpid()}))
        self.subscribe(plezi.presence_channel(self.room))
        self.subscribe(self.room, info={"name": self.params.get("name", "")})

    async def on_message(self, data):
        if data == "who":
            members = await plezi.presence(self.room)
            self.write(json.dumps({"event": "who", "members": members}))
        elif data == "leave":
            self.unsubscribe(self.room)
            self.write(json.dumps({"event": "left"}))
        elif data.startswith("join "):
            self.subscribe(self.room, info={"name": data[5:]})


plezi.route("/", Member)
