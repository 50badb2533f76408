"""The application: an ordered list of routes and the request-to-reply logic.

:meth:`App.handle` is called by the server for every complete request. It returns the reply
data, never HTTP/1.1 bytes (the server layer renders them): a
:class:`~plezi.http.response.Reply` (status, headers, body), ``bytes`` (the body of a plain
``200 text/html`` reply: an action's ``str``, the hello-world path), an
:class:`~plezi.http.response.Accept` (the request becomes a WebSocket, or a Server-Sent Events
stream), or, when a controller method is ``async``, a coroutine that resolves to one of those. No
sockets here. :meth:`App.connect` routes a connection an ASGI server has already accepted.

A ``GET`` whose ``Accept`` names ``text/event-stream`` is an SSE request: a route whose controller
accepts connections (the WebSocket rule), or defines ``on_sse``, answers it with ``pre_connect``
and an :class:`Accept` (``sse=True``), as it answers a WebSocket upgrade; any other route
answers it as plain HTTP.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from ..compiled import optional_attr
from ..errors import ConnectionRequiredError, HTTPError, RouteError, report_error
from ..http.params import ParamsError, add_param, merge_params, parse_json_body, parse_query
from ..http.request import Request
from ..http.response import Accept, Outcome, Reply, Response, Upgrade, error_reply
from ..protocol.handshake import (
    HandshakeError,
    choose_subprotocol,
    is_upgrade_request,
    validate_upgrade,
)
from .controller import Controller
from .latency import RequestTimes
from .patterns import normalize_path
from .routes import HTTP_METHODS, ControllerRoute, new_instance

if TYPE_CHECKING:
    from ..server.state import ServerState

__all__ = ["Accept", "App", "Outcome", "Reply", "Upgrade"]

log: Final = logging.getLogger("plezi")

#: The headers of a ``dict`` or ``list`` returned with ``self.response`` untouched.
_JSON: Final = (("content-type", "application/json"),)
_FALL: Final = object()  # "this route declines; try the next one"
_EVENT_STREAM: Final = "text/event-stream"
#: Result types that are never awaitable (checked before the slower ``inspect.isawaitable``).
_PLAIN_RESULTS: Final = frozenset((str, bytes, dict, list, bool, type(None)))


class _Context:
    """Per-request state shared by the routes tried for one request."""

    __slots__ = (
        "base_params",
        "method",
        "path",
        "refused",
        "request",
        "route",
        "sse",
        "upgrade_key",
    )

    #: The last route whose pattern matched the path (set only then: PERF, and read by the
    #: request timing with ``getattr``).
    route: ControllerRoute

    def __init__(self, request: Request, path: str) -> None:
        self.request = request
        self.path = path
        self.method = request.method
        self.base_params: dict[str, Any] | None = None
        #: Set for a WebSocket upgrade, and (empty) for an SSE request.
        self.upgrade_key: str | None = None
        #: An SSE request (``GET`` with ``Accept: text/event-stream``).
        self.sse = False
        #: A WebSocket route's ``pre_connect`` said no (the final answer is then 403).
        self.refused = False


class App:
    """Routes in the order they were added."""

    def __init__(self) -> None:
        self.routes: list[ControllerRoute] = []
        #: Request latency per route, once a metrics route exists (see :meth:`time_requests`).
        self.request_times: RequestTimes | None = None

    def route(self, path: str, handler: Any) -> ControllerRoute:
        """Add a route (see :func:`plezi.route`); ``handler`` is a controller class,
        ``"client"`` for the browser client (see :mod:`plezi.web.client`), or ``"metrics"``
        for the Prometheus figures (see :mod:`plezi.web.metrics`)."""
        if isinstance(handler, type):
            route = ControllerRoute(path, handler)
        elif handler == "metrics":
            from .metrics import metrics_route

            route = metrics_route(path)
            self.time_requests()
        elif handler == "client":
            # The browser client: the classic build at ``path``, the ES module beside it.
            from .client import client_routes

            routes = client_routes(path)
            self.routes.extend(routes)
            return routes[0]
        else:
            raise RouteError(f"route {path!r}: unsupported handler {handler!r}")
        self.routes.append(route)
        return route

    def time_requests(self) -> None:
        """Record each request's latency per route (``plezi_request_duration_seconds``).

        PERF: an application without metrics pays one attribute test per request (in
        :meth:`handle` and :meth:`connect`)."""
        if self.request_times is None:
            self.request_times = RequestTimes()

    def _timed_route(self, ctx: _Context) -> Outcome | Coroutine[Any, Any, Outcome]:
        """:meth:`_route_from` from the first route, timed. PERF: two clock reads and one call
        per request; the route object is the key (the last route that matched the path,
        ``None`` if none did), its label is looked up at scrape time."""
        began = perf_counter()
        outcome = self._route_from(ctx, 0)
        if type(outcome) is bytes or type(outcome) is Reply or not inspect.isawaitable(outcome):
            self.request_times.observe(  # type: ignore[union-attr]
                getattr(ctx, "route", None), perf_counter() - began
            )
            return outcome
        return self._timed_async(ctx, outcome, began)

    async def _timed_async(
        self, ctx: _Context, pending: Awaitable[Outcome], began: float
    ) -> Outcome:
        try:
            return await pending
        finally:
            self.request_times.observe(  # type: ignore[union-attr]
                getattr(ctx, "route", None), perf_counter() - began
            )

    # -- lifecycle (called by the server) ---------------------------------------------------

    def serve_public(self, directory: str | os.PathLike[str] | None) -> ControllerRoute | None:
        """Serve ``directory``'s files before the routes (``--public``), replacing an earlier
        public folder; ``None`` removes it. See :mod:`plezi.web.public`."""
        from .public import install_public

        return install_public(self, directory)

    async def startup(self, server: Any) -> None:
        """The server is listening: bind pub/sub to its loop and start the engine."""
        from ..pubsub.hub import hub

        await hub.attach(server)

    async def cleanup(self, server: Any) -> None:
        """The server has shut down: stop the pub/sub engine."""
        from ..pubsub.hub import hub

        if hub.server is server:
            await hub.detach()

    # -- requests ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Outcome | Coroutine[Any, Any, Outcome]:
        """The reply to ``request`` (a coroutine when an ``async`` method is involved)."""
        path = normalize_path(request.path)
        if path is None:
            return error_reply(400, "Bad Request: invalid path")
        ctx = _Context(request, path)
        try:
            headers = request.headers
            if is_upgrade_request(headers):
                ctx.upgrade_key = validate_upgrade(request.method, headers)
            else:
                # PERF: one dict lookup when there is no Accept (a substring test when there is).
                accept = headers.get("accept")
                if accept is not None and _EVENT_STREAM in accept and ctx.method == "GET":
                    ctx.sse = True
                    ctx.upgrade_key = ""
            # PERF: no call of its own between here and the routing (one per request)
            if self.request_times is None:
                return self._route_from(ctx, 0)
            return self._timed_route(ctx)
        except HandshakeError as refusal:
            # (Not ``exc``: compiled, a name keeps the type of its first ``except`` clause.)
            log.info("refused WebSocket handshake for %s: %s", request.path, refusal)
            _count_refusal("handshake")
            request.keep_alive = False  # the server closes as the reply says
            return error_reply(refusal.status, "Bad WebSocket handshake", list(refusal.headers))
        except Exception as exc:  # noqa: BLE001 - a request must never crash the server
            return self._failure(ctx, exc)

    def connect(self, request: Request) -> Outcome | Coroutine[Any, Any, Outcome]:
        """Route a WebSocket that an ASGI server has accepted already (it did the handshake,
        so none is checked here): an :class:`Accept` from the route that takes it
        (``pre_connect`` decides), or the refusal's :class:`Reply`."""
        path = normalize_path(request.path)
        request.keep_alive = False
        if path is None:
            return error_reply(400, "Bad Request: invalid path")
        ctx = _Context(request, path)
        ctx.upgrade_key = ""
        try:
            if self.request_times is None:
                return self._route_from(ctx, 0)
            return self._timed_route(ctx)
        except Exception as exc:  # noqa: BLE001
            return self._failure(ctx, exc)

    def _route_from(self, ctx: _Context, start: int) -> Outcome | Coroutine[Any, Any, Outcome]:
        routes = self.routes
        last = len(routes) - 1
        index = start - 1
        while index < last:  # PERF: a range iterator costs more than the first route's match
            index += 1
            outcome = self._try(routes[index], ctx)
            if type(outcome) is bytes or type(outcome) is Reply or type(outcome) is Accept:
                return outcome  # PERF: the common sync outcomes skip the awaitable check
            if outcome is _FALL:
                continue
            if inspect.isawaitable(outcome):
                return self._finish_async(routes[index], ctx, outcome, index)
            return cast("Outcome", outcome)
        return self._no_route(ctx)

    def _try(self, route: ControllerRoute, ctx: _Context) -> Any:
        match = route.pattern.match(ctx.path)
        if match is None:
            return _FALL
        ctx.route = route
        base = self._params(ctx)
        # Each route gets its own copy: a handler that changes `params` and then falls through
        # must not change what the next route sees. PERF: no copy when there is nothing to copy.
        params = merge_params(base) if base else {}
        # Route parameters win over query and body ones; `user[name]` nests like Rack.
        if match:  # PERF: no items view and iterator when there are none
            for name, value in match.items():
                add_param(params, name, value)
        if ctx.upgrade_key is not None:
            if route.is_sse if ctx.sse else route.is_websocket:
                return self._try_upgrade(route, ctx, params)
            if not ctx.sse:
                return _FALL  # (an SSE request to any other route is plain HTTP)
        method = ctx.method
        if method == "POST" and "_method" in params:
            # Like Rack::MethodOverride, only POST may be overridden: a GET link must never delete.
            method = str(params["_method"]).upper()
        id_ = params.get("id")
        action = route.action_for(method, id_ if isinstance(id_, str) else None)
        if action is None:
            return _FALL
        inst = new_instance(route, ctx.request, params)
        if action in route.events:
            # An auto-dispatch event answers HTTP too: its ``msg`` is the request's params.
            result = _call_event(inst, action, params)
        else:
            result = getattr(inst, action)()
        # PERF: what sync methods return skips `inspect.isawaitable` (an ABC isinstance check).
        if action in route.async_names or (
            type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result)
        ):
            return _Pending(inst, result)
        return self._reply(ctx, inst, result)

    def _try_upgrade(self, route: ControllerRoute, ctx: _Context, params: dict[str, Any]) -> Any:
        inst = new_instance(route, ctx.request, params)
        pre = optional_attr(inst, "pre_connect", None)
        result = pre() if pre is not None else None
        # PERF: no ``pre_connect`` (None) skips the awaitable check (an ABC isinstance check).
        if result is not None and inspect.isawaitable(result):
            return _Pending(inst, result, True)
        return self._upgrade_or_fall(route, ctx, inst, result)

    def _upgrade_or_fall(
        self, route: ControllerRoute, ctx: _Context, inst: Controller, accepted: Any
    ) -> Any:
        if accepted is False:
            ctx.refused = True
            return _FALL
        assert ctx.upgrade_key is not None
        if not ctx.sse and "sec-websocket-protocol" in ctx.request.headers:
            _answer_subprotocol(inst, ctx.request.headers["sec-websocket-protocol"])
        return Accept(inst, route, ctx.upgrade_key, ctx.sse)

    async def _finish_async(
        self, route: ControllerRoute, ctx: _Context, pending: Any, index: int
    ) -> Outcome:
        try:
            result = await pending.awaitable
            if pending.upgrade:
                outcome = self._upgrade_or_fall(route, ctx, pending.inst, result)
            else:
                outcome = self._reply(ctx, pending.inst, result)
            if outcome is _FALL:
                outcome = self._route_from(ctx, index + 1)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            return outcome  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001
            return self._failure(ctx, exc)

    # -- parameters and replies -------------------------------------------------------------

    def _params(self, ctx: _Context) -> dict[str, Any]:
        if ctx.base_params is None:
            request = ctx.request
            params = parse_query(request.query_string) if request.query_string else {}
            if request.body:
                ctype = request.headers.get("content-type", "")
                if ctype.startswith("application/x-www-form-urlencoded"):
                    params = merge_params(params, parse_query(request.body))
                elif ctype.startswith("application/json"):
                    params = merge_params(params, parse_json_body(request.body))
            ctx.base_params = params
        return ctx.base_params

    def _reply(self, ctx: _Context, inst: Controller, result: Any) -> Any:
        if result is None or result is False:
            return _FALL
        response = inst._pl_response
        if response is None:
            kind = type(result)
            if kind is str:
                # PERF: the hello-world path: no Response object at all; the body is the reply.
                return result.encode()
            if kind is dict or kind is list:
                # PERF: fixed headers (a tuple): the server renders their head once a second.
                return Reply(200, _JSON, orjson.dumps(result))
            response = Response()
        if result is True:
            pass
        elif isinstance(result, str):
            response.body = result.encode()
        elif isinstance(result, bytes | bytearray | memoryview):
            response.body = bytes(result)
            if not response.has_header("content-type"):
                response.headers["content-type"] = "application/octet-stream"
        elif isinstance(result, dict | list):
            response.body = orjson.dumps(result)
            if not response.has_header("content-type"):
                response.headers["content-type"] = "application/json"
        else:
            raise TypeError(f"a controller returned an unsupported {type(result).__name__}")
        return response.reply()

    def _no_route(self, ctx: _Context) -> Reply:
        if ctx.sse:
            if ctx.refused:
                return _refused(ctx)
        elif ctx.upgrade_key is not None:
            # A refused upgrade ends the connection (the parser cannot go on after one), so
            # the request is marked as closing and the reply says so.
            ctx.request.keep_alive = False
            if ctx.refused:
                return _refused(ctx)
            if any(r.pattern.match(ctx.path) is not None for r in self.routes):
                return error_reply(
                    400, "Bad Request: this path does not accept WebSocket connections"
                )
            return error_reply(404, "Not Found")
        allowed = self._allowed(ctx)
        if allowed:
            return error_reply(405, "Method Not Allowed", [("allow", ", ".join(allowed))])
        return error_reply(404, "Not Found")

    def _allowed(self, ctx: _Context) -> list[str]:
        """The verbs the routes matching the path answer, when none answers this request's
        (a ``405``); empty when nothing matches the path, or when a route that answers this
        verb declined (returned ``None``: a ``404``). Only on the way to an error reply."""
        method = ctx.method
        params = ctx.base_params or {}
        if method == "POST" and "_method" in params:
            method = str(params["_method"]).upper()
        allowed: set[str] = set()
        for route in self.routes:
            match = route.pattern.match(ctx.path)
            if match is None:
                continue
            id_ = match["id"] if "id" in match else params.get("id")
            id_ = id_ if isinstance(id_, str) else None
            if route.action_for(method, id_) is not None:
                return []  # it was tried and declined
            allowed.update(route.allowed_methods(id_))
        return [verb for verb in HTTP_METHODS if verb in allowed]

    def _failure(self, ctx: _Context, exc: Exception) -> Reply:
        request = ctx.request
        if isinstance(exc, ParamsError):
            log.info("bad parameters in %s %s: %s", request.method, request.path, exc)
            return error_reply(exc.status, "Bad Request: invalid parameters")
        if isinstance(exc, HTTPError):
            return error_reply(exc.status, exc.public_message or "Error")
        log.error("error answering %s %s: %s", request.method, request.path, exc, exc_info=exc)
        report_error(exc)
        return error_reply(500, "Internal Server Error")


def _call_event(inst: Controller, name: str, params: dict[str, Any]) -> Any:
    """Call an auto-dispatch event for an HTTP request (see :func:`_event_failed`)."""
    try:
        result = getattr(inst, name)(params)
    except Exception as exc:
        error = _event_failed(inst, name, exc)
        if error is exc:
            raise
        raise error from exc
    if inspect.iscoroutine(result):
        return _await_event(inst, name, result)
    return result


async def _await_event(inst: Controller, name: str, awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except Exception as exc:
        error = _event_failed(inst, name, exc)
        if error is exc:
            raise
        raise error from exc


def _event_failed(inst: Controller, name: str, exc: Exception) -> Exception:
    """What to raise when an event reached over HTTP raised ``exc``: there is no connection
    and ``on_open`` never ran for it. A connection-only call (``subscribe()``) is the client's
    choice of transport: a ``400`` with a log line. Anything else stays a ``500``, its log
    entry saying what was called and how to keep events off HTTP."""
    cls = type(inst).__name__
    request = inst.request
    if isinstance(exc, ConnectionRequiredError):
        log.info(
            "%s %s: %s.%s is an auto-dispatch event that needs a WebSocket connection (%s); "
            "400. Set http_events = False on the controller to keep events WebSocket-only",
            request.method,
            request.path,
            cls,
            name,
            exc,
        )
        return HTTPError(400, "Bad Request: this event needs a WebSocket connection")
    exc.add_note(
        f"plezi: {cls}.{name} is an auto-dispatch event, called here for an HTTP request "
        "(no WebSocket connection; on_open did not run). Set http_events = False on the "
        "controller to keep events WebSocket-only."
    )
    return exc


@dataclass(slots=True)
class _Pending:
    """An ``async`` controller method still to be awaited."""

    inst: Controller
    awaitable: Awaitable[Any]
    #: It is ``pre_connect`` (its result accepts or refuses a connection).
    upgrade: bool = False

    def __await__(self) -> Any:
        return self.awaitable.__await__()


def _answer_subprotocol(inst: Controller, offered: str) -> None:
    """Answer the subprotocols a client offered with ``plezi`` when it offered it and
    ``pre_connect`` chose none (RFC 6455: the answer must be one of those offered; a browser
    that offered some fails a 101 without one). The token is never echoed."""
    response = inst._pl_response
    if response is not None and response.has_header("sec-websocket-protocol"):
        return
    chosen = choose_subprotocol(offered)
    if chosen is not None:
        inst.response.headers["Sec-WebSocket-Protocol"] = chosen


def _count_refusal(reason: str) -> ServerState | None:
    """Count a refused connection in the serving server's figures (``plezi.stats()``);
    returns that server (``None`` when none serves)."""
    from ..pubsub.hub import hub

    server = hub.server
    if server is not None:
        server.stats.refuse(reason)
    return server


def _refused(ctx: _Context) -> Reply:
    """The 403 of a connection every ``pre_connect`` refused: counted, and one log line
    (throttled: a client can repeat it at will) that names the path, never the request's
    credentials (cookies, a token)."""
    server = _count_refusal("pre_connect")
    if server is not None:
        client = ctx.request.client
        server.throttle("pre_connect").log(
            log,
            logging.INFO,
            "%s: 403 %s to %r refused by pre_connect",
            client[0] if client else "-",
            "event stream" if ctx.sse else "WebSocket",
            ctx.request.path[:200],
        )
    return error_reply(403, "Forbidden")


#: The application :func:`plezi.route` adds to (``plezi.app``), made at first use.
_default: App | None = None


def default_app() -> App:
    """The application that :func:`plezi.route` adds to and :func:`plezi.run` serves."""
    global _default
    if _default is None:
        _default = App()
    return _default


def set_default_app(app: App) -> None:
    """Make ``app`` the default application (``plezi.app = app``)."""
    global _default
    if not isinstance(app, App):
        raise TypeError(f"plezi.app must be a plezi.App, not {type(app).__name__}")
    _default = app
