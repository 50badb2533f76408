"""The controller mixin: what ``self`` offers inside a controller's methods.

Any plain class passed to :func:`plezi.route` gets these methods mixed in (plezi builds a subclass
of the user's class and :class:`Controller` once, at ``route()``); subclassing :class:`Controller`
directly works too and keeps type checkers informed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from ..errors import ConnectionRequiredError
from ..http.cookies import format_delete_cookie, format_set_cookie
from ..http.response import Response
from ..protocol.handshake import subprotocol_token

if TYPE_CHECKING:
    from ..http.request import Request
    from ..pubsub.history import Position
    from ..server.connection import StreamConnection


class _Routed(Protocol):
    """The route a controller class is mounted on (a :class:`~.routes.ControllerRoute`, which
    imports this module: hence a protocol here, not an import)."""

    #: The route's path pattern (a :class:`~.patterns.RoutePattern`).
    pattern: Any

    def url_for(self, action: str | None = None, /, **params: Any) -> str: ...


__all__ = ["Controller", "Cookies"]

log = logging.getLogger("plezi")

#: Controller classes already told (one log line each) that a write had no connection.
_told_no_connection: set[type] = set()


class Cookies(MutableMapping[str, str]):
    """The request's cookies, writable: setting or deleting one adds a ``Set-Cookie`` header."""

    __slots__ = ("_changes", "_owner")

    def __init__(self, owner: Controller) -> None:
        self._owner = owner
        self._changes: dict[str, str | None] = {}

    def _current(self) -> dict[str, str]:
        merged = dict(self._owner.request.cookies)
        for name, value in self._changes.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        return merged

    def __getitem__(self, name: str) -> str:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self._owner.response.cookies.append(format_delete_cookie(name))
        self._changes[name] = None

    def set(self, name: str, value: str, **options: Any) -> None:
        """Set a cookie; ``options`` are ``max_age``, ``expires``, ``path``, ``domain``,
        ``secure``, ``httponly`` and ``samesite``."""
        self._owner.response.cookies.append(format_set_cookie(name, value, **options))
        self._changes[name] = value


class Controller:
    """Base class (or mixin) of every controller.

    HTTP actions (``index``, ``show``, ``new``, ``create``, ``update``, ``delete`` and any public
    method named by the path) return ``str``, ``bytes``, ``dict``/``list`` (JSON), ``True`` (send
    ``self.response`` as built) or ``None``/``False`` (let the next route try).
    """

    #: Set to ``True`` on a controller to dispatch JSON WebSocket events to its methods.
    auto_dispatch: ClassVar[bool] = False
    #: With ``auto_dispatch``: whether HTTP requests reach the events too (``/path/<event>``
    #: with any verb calls ``event(self.params)``, as in Plezi). ``False`` keeps events
    #: WebSocket-only: they are then no HTTP actions at all (404, or 405 for a verb the
    #: controller does not answer).
    http_events: ClassVar[bool] = True

    _pl_route: ClassVar[_Routed | None] = None
    _pl_request: Request
    _pl_params: dict[str, Any]
    # PERF: class-level defaults, read until a controller sets its own (a reply's headers, its
    # cookies, its connection): three attribute stores fewer per request (``new_instance``).
    _pl_response: Response | None = None
    _pl_cookies: Cookies | None = None
    _pl_conn: StreamConnection | None = None
    #: This connection's subscriptions, ``(channel, pattern)`` each. MEMORY: most connections
    #: hold one: the key itself, a set (216 bytes more) from the second on.
    _pl_subs: tuple[str, bool] | set[tuple[str, bool]] | None = None
    #: The positions a reconnecting client sent (``_recover``), parsed on first subscribe.
    _pl_positions: dict[str, Position] | None = None
    #: The presence channels this connection joined.
    _pl_joined: set[str] | None = None

    # -- HTTP -------------------------------------------------------------------------------

    @property
    def request(self) -> Request:
        """The HTTP request (for a WebSocket: the upgrade request; for SSE: the request that
        opened the stream, its ``last-event-id`` header included)."""
        return self._pl_request

    @property
    def token(self) -> str | None:
        """The token the client sent in ``Sec-WebSocket-Protocol`` (the browser client's
        ``new PleziClient(url, {token})``), for ``pre_connect`` to check; ``None`` when it sent
        none. See docs/security.md and :func:`plezi.tokens`."""
        return subprotocol_token(self._pl_request.headers.get("sec-websocket-protocol"))

    @property
    def params(self) -> dict[str, Any]:
        """Path, query, form and JSON body parameters merged into one dict."""
        return self._pl_params

    @property
    def response(self) -> Response:
        """The response being built (status, headers, cookies, body)."""
        if self._pl_response is None:
            self._pl_response = Response()
        return self._pl_response

    @property
    def cookies(self) -> Cookies:
        """Read, set and delete cookies: ``self.cookies["name"] = "value"``."""
        if self._pl_cookies is None:
            self._pl_cookies = Cookies(self)
        return self._pl_cookies

    def redirect_to(self, url: str, status: int = 302) -> bool:
        """Answer with a redirect to ``url``; ``return self.redirect_to(...)`` from an action."""
        self.response.status = status
        self.response.headers["location"] = url
        return True

    def url_for(self, action: str | None = None, **params: Any) -> str:
        """The path of an action of this controller: ``url_for()`` (index), ``url_for("new")``,
        ``url_for(id=5)``; leftover params become the query string."""
        route = type(self)._pl_route
        if route is None:
            raise RuntimeError(f"{type(self).__name__} is not routed")
        return route.url_for(action, **params)

    def render(self, template: str, **context: Any) -> str | None:
        """Render ``<templates>/<template>.<format>`` with Jinja2 (``format`` from params, else
        ``html``; templates in ``views/`` beside the main script).

        A missing template raises :class:`plezi.http.templates.TemplateNotFound` (the request
        gets a 500, the log names the folder searched). Only a format the request asked for
        (``/users/1/json``) without a template returns ``None``, so the route falls through."""
        from ..http.templates import TemplateNotFound, render

        asked = self._pl_params.get("format")
        name = f"{template}.{asked or 'html'}"
        try:
            return render(name, controller=self, params=self._pl_params, **context)
        except TemplateNotFound as exc:
            if asked and exc.name == name:
                return None  # the client chose a format this template does not come in
            raise

    def send_file(self, path: str, *, content_type: str | None = None) -> bool:
        """Answer with the file at ``path``; ``False`` (fall through) when it does not exist.

        A GET or HEAD may get ``304 Not Modified`` (``If-None-Match`` / ``If-Modified-Since``)
        or, for one byte ``Range``, a ``206`` (``416`` past the end), as the public folder's
        files do."""
        from ..http.static import file_response

        response = file_response(path, content_type=content_type, request=self.request)
        if response is None:
            return False
        # The file's response replaces ours (a large file is streamed from a FileResponse);
        # headers and cookies set before stay, unless the file's own headers replace them
        # (names are sent in lower case: ``Content-Type`` set before is replaced, not doubled).
        own = self._pl_response
        if own is not None:
            replaced = {name.lower() for name in response.headers}
            kept = {n: v for n, v in own.headers.items() if n.lower() not in replaced}
            response.headers = {**kept, **response.headers}
            response.cookies = own.cookies
        self._pl_response = response
        return True

    # -- WebSocket and SSE ------------------------------------------------------------------

    def write(
        self, data: str | bytes | bytearray | memoryview | dict[str, Any] | list[Any]
    ) -> bool:
        """Send a message: ``str`` as a text frame, bytes-like as a binary frame, a ``dict`` or
        ``list`` as JSON text (as ``publish`` and event return values are); on an SSE stream,
        one event (bytes-like decoded as UTF-8, ``dict``/``list`` as JSON).

        Returns ``False`` when the connection is closed, or when there is none (an HTTP
        action, ``pre_connect``: the first time, a log line says that nothing was sent).
        """
        conn = self._pl_conn
        if conn is None:
            return self._pl_no_connection("write")
        # PERF: str and bytes go straight through; the connection rejects anything else with
        # a TypeError before queueing, and only then is JSON considered (zero cost otherwise).
        try:
            return conn.send(data)  # type: ignore[arg-type]
        except TypeError:
            if not isinstance(data, dict | list):
                raise
        return conn.send(orjson.dumps(data).decode())

    def _pl_no_connection(self, method: str) -> bool:
        """``write()`` with no connection to write to: ``False``, and a log line (once per
        class) so the lost message is not a silent mystery."""
        cls = type(self)
        if cls not in _told_no_connection:
            _told_no_connection.add(cls)
            request = getattr(self, "_pl_request", None)
            where = f" ({request.method} {request.path})" if request is not None else ""
            log.warning(
                "%s.%s() has no WebSocket or SSE connection to send on%s: nothing was sent. "
                "An HTTP action (or an auto-dispatch event reached over HTTP) answers with its "
                "return value; pre_connect runs before the connection opens",
                cls.__name__,
                method,
                where,
            )
        return False

    def write_event(
        self,
        data: str | bytes | bytearray | memoryview | dict[str, Any] | list[Any],
        *,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
    ) -> bool:
        """Send one SSE event (``dict``/``list`` data as JSON) with a name (``event``: the
        browser calls the listeners added with ``addEventListener(event, ...)`` instead of
        ``onmessage``), an ``id`` (sent back as the ``Last-Event-ID`` header when the browser
        reconnects) and/or a reconnection delay in milliseconds (``retry``).

        Returns ``False`` when the stream is closed (or this is not a connection); raises
        ``TypeError`` on a WebSocket, and ``ValueError`` for a line break in ``event`` or ``id``
        or a negative ``retry``.
        """
        conn = self._pl_conn
        if conn is None:
            return self._pl_no_connection("write_event")
        from ..server.sse import SseConnection

        if not isinstance(conn, SseConnection):
            raise TypeError("write_event() needs an SSE connection; use write() on a WebSocket")
        if isinstance(data, dict | list):
            data = orjson.dumps(data).decode()
        return conn.send_event(data, event=event, id=id, retry=retry)

    def close(self) -> None:
        """Close the connection: a WebSocket with a normal closure (code 1000); an SSE stream
        ends once what is queued is sent."""
        if self._pl_conn is not None:
            self._pl_conn.close()

    @property
    def open(self) -> bool:
        """Whether the WebSocket or SSE connection is open."""
        conn = self._pl_conn
        return conn is not None and conn.is_open

    @property
    def pending(self) -> int:
        """Bytes queued for this client and not yet sent."""
        conn = self._pl_conn
        return conn.pending if conn is not None else 0

    @property
    def id(self) -> str | None:
        """This connection's id (``None`` outside a WebSocket or SSE connection)."""
        conn = self._pl_conn
        return conn.id if conn is not None else None

    # -- pub/sub ----------------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        handler: Callable[..., Any] | None = None,
        *,
        binary: bool = False,
        pattern: bool = False,
        info: Any = None,
    ) -> None:
        """Subscribe this connection to ``channel`` until it closes.

        With no ``handler``, every message is sent straight to the client (text or binary as
        published; ``binary=True`` forces binary frames; on an SSE stream each message is one
        event, and a binary message that is not UTF-8 is skipped with a log line). With a
        ``handler``, it is called as ``handler(message)`` or ``handler(channel, message)``
        instead, in this connection's callback order. ``pattern=True`` makes ``channel`` a Redis
        glob (``"chat.*"``). Subscribing again to the same channel replaces the earlier
        subscription; a channel and a matching pattern are two subscriptions, and each delivers
        the message (as in Redis).

        On a channel with history (``plezi.channel(name, history=N)``), a client that came back
        with its position there (the ``_recover`` query parameter) first gets what it missed,
        then the live messages; the controller's ``on_recover(channel, recovered)`` tells how it
        went (docs/delivery.md).

        On a presence channel (``plezi.channel(name, presence=True)``, a concrete channel, not
        a ``pattern``) the connection also joins it with ``info`` (any JSON-serialisable value
        up to 4 KiB; ``None`` records ``{}``) until it unsubscribes or closes: see
        :func:`plezi.presence`. ``info`` on another channel raises
        :class:`plezi.PresenceError`, as info that is too large or not JSON does.
        """
        from ..pubsub.hub import _check_name, hub

        conn = self._pl_conn
        if conn is None:
            raise ConnectionRequiredError(
                "subscribe() needs a WebSocket or SSE connection; "
                "use plezi.subscribe(channel, handler) for a connectionless subscription"
            )
        _check_name(channel)
        if handler is not None and not callable(handler):
            raise TypeError(f"a pub/sub handler must be callable, not {handler!r}")
        joining = self._pl_presence_info(channel, pattern, info)
        if not conn.is_open:
            return
        registry = hub.registry
        if not pattern and self._pl_recover(channel, handler, binary):
            pass  # subscribed once the history is read (docs/delivery.md)
        elif handler is None:
            registry.forward(channel, conn, binary=binary, pattern=pattern, sse=conn.is_sse)
        else:
            registry.handle(channel, handler, owner=conn, pattern=pattern)
        key = (channel, pattern)
        subs = self._pl_subs
        if subs is None:
            self._pl_subs = key
            conn.add_cleanup(self._pl_unsubscribe_all)
        elif isinstance(subs, set):
            subs.add(key)
        elif subs != key:
            self._pl_subs = {subs, key}
        if joining is not None:
            self._pl_join(channel, *joining)

    def _pl_recover(self, channel: str, handler: Callable[..., Any] | None, binary: bool) -> bool:
        """Start recovering ``channel`` when the client came back with a position on it
        (the ``_recover`` query parameter): ``True`` when started (see
        :mod:`plezi.pubsub.recovery`)."""
        positions = self._pl_positions
        if positions is None:
            from ..pubsub.recovery import parse_positions

            positions = self._pl_positions = parse_positions(self.request.query_string) or {}
        if not positions or channel not in positions:
            return False
        from ..pubsub.recovery import start_recovery

        # One recovery per channel and connection: a later subscribe is a plain one.
        since = positions.pop(channel)
        return start_recovery(self, self._pl_conn, channel, since, handler, binary)

    def unsubscribe(self, channel: str, *, pattern: bool = False) -> bool:
        """End this connection's subscription to ``channel``; ``False`` if there was none."""
        from ..pubsub.hub import hub

        key = (channel, pattern)
        subs = self._pl_subs
        if isinstance(subs, set):
            if key not in subs:
                return False
            subs.discard(key)
        elif subs != key:
            return False
        else:  # (an empty set: the cleanup stays registered, once)
            self._pl_subs = set()
        if not pattern:
            self._pl_leave(channel)
        return hub.registry.remove(channel, self._pl_conn, pattern=pattern)

    def _pl_unsubscribe_all(self) -> None:
        from ..pubsub.hub import hub

        subs, self._pl_subs = self._pl_subs, None
        for channel in list(self._pl_joined or ()):
            self._pl_leave(channel)
        for channel, pattern in (subs,) if isinstance(subs, tuple) else subs or ():
            hub.registry.remove(channel, self._pl_conn, pattern=pattern)

    # -- presence (see plezi.pubsub.presence) -----------------------------------------------

    def _pl_presence_info(
        self, channel: str, pattern: bool, info: Any
    ) -> tuple[bytes, float] | None:
        """``(info as JSON, presence_ttl)`` when subscribing to ``channel`` joins it; raises
        before anything is subscribed when ``info`` cannot be recorded."""
        from ..pubsub.presence import PresenceError, encode_info, presence_options

        options = None if pattern else presence_options(channel)
        if options is None:
            if info is not None:
                raise PresenceError(
                    f"info given for {channel!r}, which is not a presence channel: configure "
                    "it with plezi.channel(name, presence=True) (patterns never join)"
                )
            return None
        return encode_info(info), options.presence_ttl

    def _pl_join(self, channel: str, info: bytes, ttl: float) -> None:
        from ..pubsub.hub import hub

        conn = self._pl_conn
        assert conn is not None
        joined = self._pl_joined
        if joined is None:
            joined = self._pl_joined = set()
        joined.add(channel)
        hub.engine.presence.join(channel, conn.id, info, ttl)

    def _pl_leave(self, channel: str) -> None:
        from ..pubsub.hub import hub

        joined = self._pl_joined
        if joined is None or channel not in joined or self._pl_conn is None:
            return
        joined.discard(channel)
        hub.engine.presence.leave(channel, self._pl_conn.id)

    def publish(self, channel: str, message: Any) -> None:
        """Publish ``message`` (str, bytes, dict or list) on ``channel`` (see
        :func:`plezi.publish`)."""
        from ..pubsub.hub import hub

        hub.publish(channel, message)


def _controller_names() -> frozenset[str]:
    return frozenset(name for klass in Controller.__mro__ for name in vars(klass))


#: Names plezi itself defines: never actions, never events.
PLEZI_NAMES = _controller_names()
