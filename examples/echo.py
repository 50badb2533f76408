"""The guide's WebSocket echo server (Plezi's ``MyEcho``), translated line by line.

python examples/echo.py        # then connect a WebSocket client to ws://localhost:3000/
"""

import plezi


class MyEcho:
    def on_message(self, data):
        self.write(data)


plezi.route("/", MyEcho)
