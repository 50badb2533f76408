"""The echo server the Autobahn|Testsuite fuzzing client runs against.

``/`` echoes with a plain ``def on_message`` (the inline fast path), ``/async`` with an
``async def on_message`` (the ordered task path), so both of the server's dispatch paths meet
the same cases. Run it like any plezi script::

    python tests/conformance/echo_server.py --port 9001 --max-msg 16m --max-outgoing 64m
"""

import plezi


class Echo:
    def on_message(self, data):
        self.write(data)


class AsyncEcho:
    async def on_message(self, data):
        self.write(data)


plezi.route("/async", AsyncEcho)
plezi.route("/", Echo)
