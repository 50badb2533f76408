"""The guide's chatroom (Plezi's "Hello Chatroom"): the name comes from the WebSocket path,
joins and leaves are announced, every message is published to everyone in the room.

    python examples/chat.py                 # one process
    python examples/chat.py --workers 2     # two worker processes, one chat room

Open http://localhost:3000/ in two browser tabs, or connect to ws://localhost:3000/<your name>.
"""

import plezi

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>plezi chat</title></head>
<body>
<form id="join"><input id="name" placeholder="your name" required><button>Join</button></form>
<form id="say" hidden><input id="text" autocomplete="off"><button>Send</button></form>
<ul id="log"></ul>
<script>
let ws;
const log = (text) => {
  const li = document.createElement("li");
  li.textContent = text;
  document.getElementById("log").prepend(li);
};
document.getElementById("join").onsubmit = (e) => {
  e.preventDefault();
  const name = encodeURIComponent(document.getElementById("name").value);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/${name}`);
  ws.onmessage = (event) => log(event.data);
  ws.onclose = () => log("(disconnected)");
  document.getElementById("join").hidden = true;
  document.getElementById("say").hidden = false;
};
document.getElementById("say").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  ws.send(text.value);
  text.value = "";
};
</script>
</body></html>
"""


class ChatRoom:
    def index(self):
        return PAGE

    def pre_connect(self):
        # the name is the path: ws://host/<name>
        if not self.params.get("id"):
            return False

    def on_open(self):
        self.name = self.params["id"]
        self.subscribe("chat")
        self.publish("chat", f"{self.name} joined the chat.")

    def on_message(self, data):
        self.publish("chat", f"{self.name}: {data}")

    def on_close(self):
        self.publish("chat", f"{self.name} left the chat.")


plezi.route("/", ChatRoom)
