"""The guide's sample WebSocket controller (Plezi's ``WebsocketSample``), translated line by line.

python examples/websocket_sample.py
curl localhost:3000/        -> Hello World!
curl localhost:3000/42      -> showing object with id: 42...
a WebSocket to ws://localhost:3000/ echoes every message with "echo: " in front
"""

import plezi


class WebsocketSample:
    # every request that routes to this controller will create a new instance
    def __init__(self):
        pass

    # Http methods are available
    def index(self):
        return "Hello World!"

    # RESTful methods are available
    def show(self):
        return f"showing object with id: {self.params['id']}..."

    # called before the protocol is swithed from HTTP to WebSockets.
    # this allows setting headers, cookies and other data (such as authentication)
    # prior to opening a WebSocket.
    # if the method returns False, the connection will be refused and the remaining routes
    # will be attempted.
    def pre_connect(self):
        pass

    # called immediately after a WebSocket connection has been established.
    # it blocks all the connection's actions until the `on_open` initialization is finished.
    def on_open(self):
        pass

    # called when new data is recieved
    # data is a str (text messages) or bytes (binary messages).
    def on_message(self, data):
        print(f"Websocket got: {data}")
        self.write(f"echo: {data}")

    # called once, AFTER the connection was closed.
    def on_close(self):
        pass

    # called once, during **server shutdown**, BEFORE the connection is closed.
    # this will only be called for connections that are open while the server is shutting down.
    def on_shutdown(self):
        self.write("Server shutting down. Goodbye.")


plezi.route("/", WebsocketSample)
