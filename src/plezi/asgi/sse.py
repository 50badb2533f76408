"""A Server-Sent Events stream under an ASGI server: the native stream over an ASGI "transport".

Theory of operation
-------------------
An SSE request that a route accepts (:meth:`App.handle` returns an
:class:`~plezi.http.response.Accept` with ``sse`` set, ``pre_connect`` having said yes) is
answered with ``http.response.start``: the headers the native server writes
(:func:`plezi.server.sse.stream_headers`: ``200``, ``content-type: text/event-stream``,
``cache-control: no-cache``, ``x-accel-buffering: no``, the headers and cookies ``pre_connect``
set), as ASGI header pairs. The ASGI server frames the body itself (uvicorn: chunked
coding over HTTP/1.1).

The stream is then the native :class:`~plezi.server.sse.SseConnection` (events, pub/sub,
``write_to``, ordered callbacks, the outgoing buffer cap, the slow-consumer policy, shutdown)
over an :class:`ASGIStreamTransport`: an :class:`~.websocket.ASGITransport` whose every ``write``
(one flush: the events of one loop iteration) becomes one ``http.response.body`` message with
``more_body=True``, sent in order by the same writer task, with the same accounting (``pending``,
``on_drained``, the cap).

*End.* ``self.close()`` or a shutdown closes the transport: what is queued is sent, then an empty
``http.response.body`` with ``more_body=False`` ends the response (the ASGI server may keep the
connection for more requests). The client leaving is an ``http.disconnect`` from ``receive()``,
which the reader task waits for (an ASGI server may drop what is sent after a disconnect without
an error: the reader is the only sure sign). An aborted stream (a slow consumer) returns from the
ASGI call without ending the response: the server closes the connection (uvicorn logs "ASGI
callable returned without completing response"). Either way the connection is told it is lost:
subscriptions end, ``on_close`` runs.

*Keep-alive.* The comment lines of a quiet stream, and dropping a client that takes nothing, are
:meth:`SseConnection.check_timeout`'s, called by the ASGI host's reaper (see
:mod:`plezi.asgi.adapter`), as on the native server: no ASGI server sends anything on a quiet
HTTP response.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..server.sse import SseConnection, stream_headers
from .scope import asgi_headers
from .websocket import ASGITransport, run_connection

if TYPE_CHECKING:
    from ..http.response import Accept
    from ..server.server import Server
    from .types import ASGIMessage, Receive, Send

__all__ = ["ASGIStreamTransport", "serve_sse", "stream_start"]

log = logging.getLogger("plezi")


class ASGIStreamTransport(ASGITransport):
    """The transport of an :class:`SseConnection` under ASGI (see the module docstring)."""

    closing_handshake = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        body = bytes(data)
        self._queue.append(
            ({"type": "http.response.body", "body": body, "more_body": True}, len(body))
        )
        self._queued(len(body))

    def _last_message(self) -> ASGIMessage:
        return {"type": "http.response.body", "body": b"", "more_body": False}

    async def read_loop(self) -> None:
        """Wait for the client to leave (``http.disconnect``): it sends nothing else that
        matters, so reading never pauses."""
        while True:
            try:
                message = await self._receive()
            except Exception as exc:  # noqa: BLE001 - a server may raise once the client left
                log.debug("SSE receive failed (the client is gone): %r", exc)
                return
            if message["type"] == "http.disconnect":
                return


def stream_start(upgrade: Accept) -> ASGIMessage:
    """The ``http.response.start`` of an event stream: the native stream's head, with the
    headers and cookies ``pre_connect`` set. ``ValueError`` for a header with a line break."""
    headers = asgi_headers(stream_headers(upgrade.controller))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def serve_sse(server: Server, upgrade: Accept, receive: Receive, send: Send) -> None:
    """Run an accepted event stream (its ``http.response.start`` already sent) until it ends."""
    transport = ASGIStreamTransport(receive, send, server.limits)
    await run_connection(
        transport, SseConnection(server, transport, upgrade.controller, upgrade.route)
    )
