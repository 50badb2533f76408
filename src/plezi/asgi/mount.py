"""Mounting an ASGI application (Starlette, FastAPI ...) under a plezi route.

:func:`mount` returns a controller class; route it at a path that ends in a ``*`` tail::

    plezi.route("/api/*", plezi.asgi.mount(starlette_app))

Every request under the route's literal prefix then goes to the ASGI app with ``root_path`` set
to that prefix and ``path`` the whole path (ASGI 2.x: the app strips ``root_path`` itself, as
Starlette's router does). The app answers through plezi's own server (or through plezi under
another ASGI server).

HTTP: the request body is handed over whole (it was read, within ``max_body_size``, before the
route ran) and the response is collected whole before it is sent: no streaming, no server-sent
events through a mounted app. ``HEAD`` reaches the app as ``GET`` and plezi drops the body, so
that the ``Content-Length`` is the real one.

WebSocket: the app's ``websocket.accept`` or ``websocket.close`` is the route's ``pre_connect``
answer (a refusal is a 403); then the app's messages are written to the client, the client's
messages go to the app (a bounded queue: a slow app slows the client's reading down), and the
app's ``websocket.close`` closes the connection with its code. When the client leaves, the app
receives ``websocket.disconnect`` (code 1000: plezi's ``on_close`` does not know the client's).

Lifespan: ``mount(app, lifespan=True)`` runs the app's startup before its first request (its
``state`` is shared with every request's scope); :meth:`Lifespan.stop` runs its shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final
from urllib.parse import unquote

from ..web.controller import Controller
from ..web.patterns import normalize_path
from .types import ASGIApplication, ASGIMessage, Scope

__all__ = ["Lifespan", "mount"]

log = logging.getLogger("plezi")

_ASGI: Final = {"version": "3.0", "spec_version": "2.4"}
#: Client messages queued for a mounted WebSocket app before the client's reading pauses.
_INBOX = 64
#: Seconds a mounted WebSocket app has to end after the client left, before it is cancelled.
_GRACE = 5.0


class Lifespan:
    """The ASGI lifespan protocol of one mounted app, run on demand."""

    def __init__(self, app: ASGIApplication, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        #: The lifespan ``state``; every request's scope gets a shallow copy (ASGI 2.4).
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[ASGIMessage] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Run the app's startup (once); an app without lifespan support is left as it is."""
        if not self.enabled:
            return
        if self._started is None:
            loop = asyncio.get_running_loop()
            self._started = loop.create_future()
            self._inbox = asyncio.Queue()
            self._inbox.put_nowait({"type": "lifespan.startup"})
            scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
            self._task = loop.create_task(self._run(scope))
        await asyncio.shield(self._started)

    async def _run(self, scope: Scope) -> None:
        assert self._inbox is not None
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception:  # an app without lifespan support raises here
            log.debug("mounted ASGI app %r: no lifespan", self.app, exc_info=True)
        self._settle(None)

    async def _send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            reason = message.get("message") or "no reason given"
            self._settle(RuntimeError(f"mounted ASGI app failed to start: {reason}"))
        elif kind == "lifespan.startup.complete":
            self._settle(None)

    def _settle(self, error: Exception | None) -> None:
        started = self._started
        if started is not None and not started.done():
            if error is None:
                started.set_result(None)
            else:
                started.set_exception(error)

    async def stop(self) -> None:
        """Run the app's shutdown (when its startup ran) and wait for it."""
        task, self._task = self._task, None
        if task is None or self._inbox is None:
            return
        self._inbox.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait((task,))
        self._started = None


def mount(app: ASGIApplication, *, lifespan: bool = False) -> type[Controller]:
    """A controller class that hands every request under its route to the ASGI ``app``.

    Route it with a ``*`` tail: ``plezi.route("/api/*", mount(app))``. The class's
    ``lifespan`` attribute is the app's :class:`Lifespan` (run only with ``lifespan=True``).
    """
    life = Lifespan(app, lifespan)

    class Mounted(Controller):
        """Forwards HTTP requests and WebSocket connections to a mounted ASGI app."""

        asgi_app = app
        asgi_lifespan = life
        _pl_bridge: _Bridge

        async def index(self) -> bool:
            await life.start()
            return await _forward_http(self, app, life.state)

        show = create = update = delete = index

        async def pre_connect(self) -> bool:
            await life.start()
            bridge = self._pl_bridge = _Bridge(self, app)
            return await bridge.connect(_scope(self, "websocket", life.state))

        def on_open(self) -> None:
            self._pl_bridge.opened()

        def on_message(self, data: str | bytes) -> Any:
            return self._pl_bridge.receive_from_client(data)

        async def on_close(self) -> None:
            await self._pl_bridge.disconnected()

    name = getattr(app, "__name__", type(app).__name__)
    Mounted.__qualname__ = Mounted.__name__ = f"Mounted[{name}]"
    return Mounted


# -- scopes ---------------------------------------------------------------------------------


def _scope(inst: Controller, kind: str, state: dict[str, Any]) -> Scope:
    """The ASGI scope of the request ``inst`` answers, rooted at the route's prefix."""
    request = inst.request
    path = normalize_path(request.path) or "/"
    tail = inst.params.get("*")
    base = path.rstrip("/")
    if isinstance(tail, str) and tail and base.endswith("/" + tail):
        prefix = base[: -len(tail) - 1]
    elif tail:
        route = type(inst)._pl_route
        prefix = route.pattern.prefix.rstrip("/") if route is not None else ""
    else:
        prefix = base
    method = "GET" if request.method == "HEAD" else request.method
    scheme = request.scheme
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": _ASGI,
        "http_version": request.http_version,
        "scheme": scheme if kind == "http" else ("wss" if scheme == "https" else "ws"),
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": unquote(prefix),
        "headers": headers,
        "client": list(request.client) if request.client else None,
        "server": None,
        "state": dict(state),
        "extensions": {},
    }
    if kind == "http":
        scope["method"] = method
    else:
        offered = request.headers.get("sec-websocket-protocol", "")
        scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
    return scope


# -- HTTP -----------------------------------------------------------------------------------


async def _forward_http(inst: Controller, app: ASGIApplication, state: dict[str, Any]) -> bool:
    """Run ``app`` for the request and copy its response into ``inst.response``."""
    request = inst.request
    complete = asyncio.Event()
    body_sent = False
    start: ASGIMessage | None = None
    chunks: list[bytes] = []

    async def receive() -> ASGIMessage:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: ASGIMessage) -> None:
        nonlocal start
        kind = message["type"]
        if kind == "http.response.start":
            start = message
        elif kind == "http.response.body" and start is not None and not complete.is_set():
            chunks.append(bytes(message.get("body") or b""))
            if not message.get("more_body", False):
                complete.set()

    await app(_scope(inst, "http", state), receive, send)
    if start is None or not complete.is_set():
        raise RuntimeError(f"the mounted ASGI app {app!r} did not complete a response")
    _copy_response(inst, start, b"".join(chunks))
    return True


def _copy_response(inst: Controller, start: ASGIMessage, body: bytes) -> None:
    response = inst.response
    response.status = int(start["status"])
    headers = response.headers
    for raw_name, raw_value in start.get("headers") or ():
        name = bytes(raw_name).decode("latin-1")
        value = bytes(raw_value).decode("latin-1")
        lname = name.lower()
        if lname == "set-cookie":
            response.cookies.append(value)
        elif lname in ("content-length", "transfer-encoding", "connection"):
            continue  # plezi frames the body itself
        elif name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    response.body = body


# -- WebSocket ------------------------------------------------------------------------------


class _Bridge:
    """One WebSocket between a plezi connection and a mounted app's ``websocket`` call."""

    def __init__(self, inst: Controller, app: ASGIApplication) -> None:
        self.inst = inst
        self.app = app
        self.inbox: asyncio.Queue[ASGIMessage] = asyncio.Queue(_INBOX)
        #: The app's answer to the handshake: ``True`` (accept) or ``False`` (close).
        self.answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        #: The app's messages sent before ``on_open`` (the connection was not there yet).
        self.early: list[ASGIMessage] | None = []
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    async def connect(self, scope: Scope) -> bool:
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        return await self.answer

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self.inbox.get, self.send)
        except Exception:  # the app's failure must not take the server down
            log.exception("mounted ASGI app %r failed on a WebSocket", self.app)
            self._close_client(1011)
        else:
            self._close_client(1000)  # an app that returns closes its connection (ASGI)
        if not self.answer.done():
            self.answer.set_result(False)

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if not self.answer.done():
            if kind == "websocket.accept":
                self._accept(message)
                self.answer.set_result(True)
            elif kind == "websocket.close":
                self.answer.set_result(False)
            return
        if self.early is not None:
            self.early.append(message)
        else:
            self._to_client(message)

    def _accept(self, message: ASGIMessage) -> None:
        response = self.inst.response
        for raw_name, raw_value in message.get("headers") or ():
            name = bytes(raw_name).decode("latin-1")
            value = bytes(raw_value).decode("latin-1")
            if name.lower() == "set-cookie":
                response.cookies.append(value)
            else:
                response.headers[name] = value
        if message.get("subprotocol"):
            response.headers["Sec-WebSocket-Protocol"] = message["subprotocol"]

    def _to_client(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            self.inst.write(text if text is not None else bytes(message.get("bytes") or b""))
        elif kind == "websocket.close":
            self._close_client(int(message.get("code") or 1000), message.get("reason") or "")

    def _close_client(self, code: int, reason: str = "") -> None:
        conn = self.inst._pl_conn
        if conn is not None:
            conn.close(code, reason)

    def opened(self) -> None:
        early, self.early = self.early, None
        for message in early or ():
            self._to_client(message)

    def receive_from_client(self, data: str | bytes) -> Any:
        """Queue a client message for the app; an awaitable when the queue is full (the
        connection then awaits it before the next message, and pauses reading)."""
        key = "text" if isinstance(data, str) else "bytes"
        message = {"type": "websocket.receive", key: data}
        if self.inbox.full():
            return self.inbox.put(message)
        self.inbox.put_nowait(message)
        return None

    async def disconnected(self) -> None:
        """The client is gone: tell the app, and give it a moment to end."""
        task = self.task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(_GRACE):
                await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("mounted ASGI app %r did not end after a disconnect; cancelled", self.app)
            task.cancel()
            await asyncio.wait((task,))
