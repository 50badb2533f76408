"""A plezi :class:`~plezi.web.app.App` as an ASGI 3 application (uvicorn, hypercorn, granian ...).

HTTP requests go through :meth:`App.handle`, exactly as on the native server; the reply data
(status, header pairs, body) is sent as ``http.response.*`` messages, never rendered to HTTP/1.1.
A WebSocket scope is trusted (the ASGI server did the handshake) and offered to the routes by
:meth:`App.connect` (``pre_connect`` decides); accepted, it runs on the native connection class
over an ASGI transport (see :mod:`plezi.asgi.websocket`). An HTTP request the routes accept as a
Server-Sent Events stream runs the same way, on the native stream class (see :mod:`plezi.asgi.sse`).
``lifespan`` starts and stops the pub/sub engine as the native server does, through a
:class:`~plezi.server.server.Server` that listens nowhere (the ASGI server owns the sockets) but
keeps the open connections, their tasks and the shutdown; its reaper runs once a stream has
started, for the streams' keep-alive (an ASGI WebSocket's timers are the ASGI server's).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import Limits, ServerConfig
from ..http.response import Accept, Outcome, Reply, error_reply, unavailable
from ..http.static import FileReply
from ..server.server import Server
from ..web.app import App, default_app
from .scope import BodyTooLarge, ClientGone, read_body, reply_messages, request_from_scope
from .sse import serve_sse, stream_start
from .types import Receive, Scope, Send
from .websocket import accept_message, serve_websocket

__all__ = ["ASGIApp"]

log = logging.getLogger("plezi")


class _Host(Server):
    """The :class:`Server` of an ASGI application: no socket (the ASGI server owns the
    connections' sockets, timeouts and WebSocket pings), the rest as natively: the connection
    registry ``write_to`` reads, the corked flush, callback tasks, and the graceful shutdown.
    The reaper starts with the first event stream: it keeps quiet streams alive."""

    def __init__(self, app: App, config: ServerConfig) -> None:
        super().__init__(app, config)
        loop = asyncio.get_running_loop()
        self.use_loop(loop)
        self.now = loop.time()

    def watch_streams(self) -> None:
        """Start the reaper (once): the keep-alive of event streams."""
        if self._reaper is None and not self.shutting_down:
            self._tick()


class ASGIApp:
    """The ASGI 3 application serving ``app`` (default: :data:`plezi.app`, the routes
    :func:`plezi.route` adds).

    ``limits`` (a :class:`plezi.Limits`) bound request bodies (413), incoming WebSocket messages
    (close 1009) and the outgoing buffer per WebSocket or event stream; ``ping_interval``,
    ``ping_timeout`` and ``close_timeout`` time event streams (keep-alive comments); the header
    size, other timeouts and WebSocket pings are the ASGI server's settings.
    ``allowed_origins`` is the native server's Origin check for WebSocket upgrades;
    ``shutdown_timeout`` bounds the lifespan shutdown's wait for open connections.
    """

    def __init__(
        self,
        app: App | None = None,
        *,
        limits: Limits | None = None,
        allowed_origins: tuple[str, ...] = (),
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._app = app
        self.config = ServerConfig(
            port=0,
            limits=limits or Limits(),
            allowed_origins=allowed_origins,
            shutdown_timeout=shutdown_timeout,
        )
        self.config.limits.validate()
        self._host: _Host | None = None
        self._starting: asyncio.Lock | None = None

    @property
    def app(self) -> App:
        """The plezi application served."""
        if self._app is not None:
            return self._app
        return default_app()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"plezi does not serve ASGI {kind!r} scopes")

    # -- HTTP -------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = scope.get("method") == "HEAD"
        reply: Outcome
        try:
            body = await read_body(receive, scope, self.config.limits.max_body_size)
        except ClientGone:
            return
        except BodyTooLarge:
            log.info("%s: 413 Content Too Large", _peer(scope))
            reply = error_reply(413, "Content Too Large")
        else:
            pending = self.app.handle(request_from_scope(scope, body))
            reply = await _outcome(pending, head)
            if isinstance(reply, Accept):
                if reply.sse:
                    await self._stream(scope, reply, receive, send)
                    return
                # An upgrade request on an HTTP scope (the ASGI server does no WebSocket).
                reply = error_reply(400, "Bad Request")
        for message in reply_messages(reply, head=head):
            await send(message)

    async def _stream(self, scope: Scope, upgrade: Accept, receive: Receive, send: Send) -> None:
        """Serve an accepted Server-Sent Events request until the stream ends."""
        host = await self._ensure_host()
        if host.shutting_down:
            reply = unavailable()
        else:
            try:
                start = stream_start(upgrade)
            except ValueError as exc:  # e.g. a CR/LF in a header pre_connect set
                log.error("cannot start the event stream for %s: %s", scope.get("path"), exc)
                reply = error_reply(500, "Internal Server Error")
            else:
                await send(start)
                host.watch_streams()
                await serve_sse(host, upgrade, receive, send)
                return
        for message in reply_messages(reply, head=False):
            await send(message)

    # -- WebSocket --------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        host = await self._ensure_host()
        request = request_from_scope(scope)
        if host.refuses_origin(request, _peer(scope)):
            reply: Outcome = error_reply(403, "Forbidden")
        elif host.shutting_down:
            reply = unavailable()
        else:
            # Trusted: the ASGI server did the handshake; only the routes decide.
            reply = await _outcome(self.app.connect(request), False)
        if not isinstance(reply, Accept):
            await _refuse(scope, send, reply)
            return
        await send(accept_message(reply))
        await serve_websocket(host, reply, receive, send)

    # -- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._ensure_host()
                except Exception as exc:  # reported to the ASGI server
                    log.exception("plezi could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ensure_host(self) -> _Host:
        """The host of this event loop, started (pub/sub engine attached) on first use: at
        lifespan startup, or at the first WebSocket or event stream when the ASGI server runs
        no lifespan."""
        host = self._host
        if host is not None and host._loop is asyncio.get_running_loop():
            return host
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._host is None or self._host._loop is not asyncio.get_running_loop():
                host = _Host(self.app, self.config)
                await self.app.startup(host)
                self._host = host
        assert self._host is not None
        return self._host

    async def shutdown(self) -> None:
        """As the native server at SIGTERM: ``on_shutdown`` and close 1001 for every open
        WebSocket (the end of the response for every event stream), a bounded wait,
        ``on_close``; then the pub/sub engine stops."""
        host, self._host = self._host, None
        self._starting = None
        if host is not None:
            await host.shutdown()


async def _outcome(pending: Any, head: bool) -> Outcome:
    """What ``App.handle`` (or ``connect``) answered, awaited; a large file read into memory
    (this path does not stream it; for ``HEAD`` only its length is needed)."""
    reply = pending
    if not isinstance(reply, bytes | Reply | Accept):
        reply = await reply
    if isinstance(reply, FileReply):
        if head:
            reply.close()  # (its size stays: the Content-Length)
            return reply
        return reply.whole()
    return reply  # type: ignore[no-any-return]


async def _refuse(scope: Scope, send: Send, reply: bytes | Reply) -> None:
    """Refuse a WebSocket with ``reply``'s status and body when the server lets the app answer
    the handshake (the ``websocket.http.response`` extension), else with a plain close (the
    server then answers 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        for message in reply_messages(reply, head=False, prefix="websocket.http"):
            await send(message)
    else:
        await send({"type": "websocket.close", "code": 1000})


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"
