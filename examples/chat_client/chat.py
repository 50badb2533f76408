"""An auto-dispatch chat room with a browser page: plezi's JSON events and its browser client.

python examples/chat_client/chat.py              then open http://localhost:3000/ in two tabs
python examples/chat_client/chat.py --workers 2  the same room, across two worker processes

- GET /                 the page (index.html beside this file); it loads /client.js
- ws://localhost:3000/  JSON events: {"event": "chat", "name": "...", "text": "..."}
- POST /chat            the same event over HTTP (a JSON body, a form, or a query string):
                        curl -d name=curl -d text=hi localhost:3000/chat
"""

from pathlib import Path

import plezi

PAGE = str(Path(__file__).with_name("index.html"))


class ChatRoom:
    # JSON messages are dispatched to the public methods below (their "event" names them).
    auto_dispatch = True

    def index(self):
        return self.send_file(PAGE)

    def on_open(self):
        # Everything published on "chat" goes straight to this client.
        self.subscribe("chat")

    # {"event": "chat", "name": ..., "text": ...}: everyone in the room gets it.
    def chat(self, msg):
        name = str(msg.get("name") or "anonymous")[:40]
        text = str(msg.get("text") or "")[:2000]
        self.publish("chat", {"event": "chat", "name": name, "text": text})
        # The return value goes back to the sender (over HTTP: the JSON response).
        return {"event": "delivered"}


# The client first: ChatRoom's route ("/" plus an optional id) would also match /client.js.
plezi.route("/client.js", "client")
plezi.route("/", ChatRoom)
