"""plezi: real-time web applications. HTTP and WebSocket in one controller class.

.. code-block:: python

    import plezi

    class MyEcho:
        def on_message(self, data):
            self.write(data)

    plezi.route("/", MyEcho)

Run the script: the server starts when it ends (port 3000, ``$PORT`` or ``--port``).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

# First: it chooses between the compiled modules and their sources before either loads.
from . import compiled as _compiled  # noqa: F401
from .config import Limits, ServerConfig
from .errors import ConfigError, HTTPError, PleziError, PleziWarning, RouteError, ServerStartError
from .launch import autostart as _autostart
from .pubsub import hub as _hub
from .pubsub.presence import PresenceError
from .version import __version__ as __version__
from .web import app as _app
from .web.app import App
from .web.controller import Controller
from .web.routes import ControllerRoute
from .web.tokens import Tokens

__all__ = [
    "App",
    "ConfigError",
    "Controller",
    "HTTPError",
    "Limits",
    "PleziError",
    "PleziWarning",
    "PresenceError",
    "RouteError",
    "ServerConfig",
    "ServerStartError",
    "allow_flags",
    "app",
    "app_name",
    "channel",
    "cluster_stats",
    "history",
    "no_autostart",
    "presence",
    "presence_channel",
    "publish",
    "pubsub_status",
    "route",
    "run",
    "stats",
    "subscribe",
    "tokens",
    "unsubscribe",
    "url_for",
    "write_to",
]

if TYPE_CHECKING:
    from .pubsub.history import HistoryPage

    #: The application that :func:`route` adds to and :func:`run` serves.
    app: App
    #: The application's shared pub/sub namespace on Redis: apps with the same ``app_name``
    #: share pub/sub, apps with different names on one Redis never see each other's messages.
    #: Default: the main script's name plus ``_app`` (``chat.py`` -> ``chat_app``). Set it
    #: before the server starts.
    app_name: str


class _Plezi(types.ModuleType):
    """``plezi.app`` and ``plezi.app_name`` read and write the state of the layers that own
    them (:mod:`plezi.web.app`, :mod:`plezi.pubsub.hub`), so that nothing below this package
    has to look back up at it."""

    @property
    def app(self) -> App:
        return _app.default_app()

    @app.setter
    def app(self, value: App) -> None:
        _app.set_default_app(value)

    @property
    def app_name(self) -> str:
        return _hub.current_app_name()

    @app_name.setter
    def app_name(self, value: str) -> None:
        _hub.set_app_name(value)


sys.modules[__name__].__class__ = _Plezi


def route(path: str, controller: type | str) -> ControllerRoute:
    """Route ``path`` (Plezi syntax: ``"/users/(:id)/(:format)"``) to ``controller``: a class,
    or ``"client"`` for the browser client (``/client.js``; its ES module at ``/client.mjs``).

    Routes are tried in the order they are added; a controller method that returns ``None`` or
    ``False`` lets the next route try.
    """
    return _app.default_app().route(path, controller)


def url_for(controller: type, action: str | None = None, /, **params: Any) -> str:
    """The path of ``controller``'s ``action`` with ``params`` (see :meth:`Controller.url_for`)."""
    for r in _app.default_app().routes:
        if r.controller is controller or r.cls is controller:
            return r.url_for(action, **params)
    raise RouteError(f"{controller!r} is not routed")


def run(argv: Sequence[str] | None = None, *, own_flags: bool = False, **options: Any) -> None:
    """Start the server now and block until it stops (SIGINT/SIGTERM).

    Keyword options are :class:`ServerConfig` and :class:`Limits` fields (``port=8080``,
    ``public="public"``, ``max_body_size=...``); command-line flags override them. Exits the
    process with status 1 when the server cannot start (2 for an invalid option or an unknown
    flag). ``own_flags=True``: the application parses flags of its own, so flags plezi does not
    know are left to it (see :func:`allow_flags`). ``--help`` prints the flags and returns.
    """
    from .launch.run import serve_app as _serve_app

    if _autostart.loading_only():
        return  # `plezi routes` loads the script to list its routes, never to serve them
    if own_flags:
        allow_flags()
    _autostart.mark_started()
    code = _serve_app(_app.default_app(), argv, **options)
    if code:
        raise SystemExit(code)


def allow_flags(*flags: str) -> None:
    """Declare command-line flags the application parses itself (``allow_flags("--seed")``),
    so that plezi does not refuse them as unknown; with no argument, every flag plezi does not
    know is the application's. Call it before the server starts: at module level when the
    script relies on autostart. (Everything after a lone ``--`` is always the application's.)"""
    from .launch.flags import allow_flags as _allow

    _allow(*flags)


def publish(channel: str, message: Any) -> None:
    """Publish ``message`` on ``channel`` to every subscriber, in every process the pub/sub
    engine reaches (one process; all workers; every server on the same Redis).

    ``str`` is sent as text, ``bytes`` as binary, ``dict``/``list`` as JSON text. Safe to call
    from a controller, a callback, module level, a timer or another thread.
    """
    from .pubsub.hub import hub

    hub.publish(channel, message)


def channel(
    name: str,
    *,
    history: int = 0,
    history_ttl: float = 300.0,
    presence: bool = False,
    presence_ttl: float = 60.0,
) -> None:
    """Configure the delivery of the channel ``name`` (or of every channel a glob such as
    ``"room.*"`` matches), before or after the server starts.

    ``history=N`` keeps the last ``N`` messages (for at most ``history_ttl`` seconds) and gives
    each message a position, so a connection that comes back can recover what it missed;
    ``presence=True`` records who is subscribed (entries of a server that died expire within
    ``presence_ttl`` seconds). Channels never configured stay at most once and cost nothing more.
    See docs/delivery.md.
    """
    from .pubsub import channels

    channels.configure(
        name,
        history=history,
        history_ttl=history_ttl,
        presence=presence,
        presence_ttl=presence_ttl,
    )


async def history(
    channel: str, *, since: int | None = None, limit: int | None = None
) -> HistoryPage:
    """Read the history of a channel configured with ``history=`` (await it on the server's
    loop, in a controller or a handler; or in a script's own loop when no server runs here).

    ``since``: an offset; the messages after it, oldest first (``None``: the newest ones).
    ``limit``: at most that many. The :class:`~plezi.pubsub.history.HistoryPage` has the
    stream's ``epoch`` and current ``offset``, the ``messages`` (each with ``.value``,
    ``.offset``) and ``complete`` (``False`` when messages after ``since`` are gone). Raises
    ``ValueError`` for a channel without history. See docs/delivery.md.
    """
    from .pubsub.hub import hub

    return await hub.history(channel, since, limit)


async def presence(channel: str) -> dict[str, Any]:
    """Who is in the presence channel ``channel``: ``{connection_id: info}`` for every
    connection subscribed to it in the whole cluster (every worker, every server on the Redis).

    ``channel`` must be a presence channel (``plezi.channel(name_or_glob, presence=True)``),
    else :class:`PresenceError`. Entries of a server that died without a goodbye are left out
    once it has been silent for ``presence_ttl`` seconds. From a thread or loop other than the
    server's, the question is asked on the server's loop (``asyncio.run(plezi.presence(...))``
    works from a plain thread). See docs/delivery.md.
    """
    from .pubsub.hub import hub

    return await hub.presence(channel)


def presence_channel(channel: str) -> str:
    """The channel where the joins and leaves of the presence channel ``channel`` are
    published (``"presence:" + channel``): ``self.subscribe(plezi.presence_channel("room"))``
    forwards them to a browser client as ``{"event": "presence", ...}`` messages."""
    from .pubsub.presence import presence_channel as _name

    return _name(channel)


def subscribe(channel: str, handler: Callable[..., Any], *, pattern: bool = False) -> None:
    """A connectionless subscription: call ``handler(message)`` (or
    ``handler(channel, message)``) for every message on ``channel`` until :func:`unsubscribe`.

    ``pattern=True`` makes ``channel`` a Redis glob pattern (``"chat.*"``). In a cluster every
    worker process that ran this call has its own subscription.
    """
    from .pubsub.hub import hub

    hub.subscribe(channel, handler, pattern=pattern)


def unsubscribe(channel: str, handler: Callable[..., Any], *, pattern: bool = False) -> bool:
    """Remove a connectionless subscription; ``False`` if there was none."""
    from .pubsub.hub import hub

    return hub.unsubscribe(channel, handler, pattern=pattern)


def write_to(connection_id: str, message: Any) -> bool:
    """Send ``message`` to one WebSocket connection by its ``id``, from any process.

    Returns ``False`` when the connection lived in this process and is gone; for a connection
    in another process the message is sent on its way and ``True`` is returned.
    """
    from .pubsub.hub import hub

    return hub.write_to(connection_id, message)


def pubsub_status() -> dict[str, object]:
    """The pub/sub engine's state: engine name, whether it is connected, subscription counts."""
    from .pubsub.hub import hub

    return hub.status()


def stats() -> dict[str, Any]:
    """This process's figures, the ones ``plezi.route("/metrics", "metrics")`` serves: open
    connections by kind, messages received and sent, bytes sent, refused connections,
    publishes, deliveries, slow consumers, the pub/sub engine's state, request latency per
    route (see docs/metrics.md). Cheap to call; under ``--workers``, see
    :func:`cluster_stats`."""
    from .web.metrics import local_stats

    return local_stats(_app.default_app())


async def cluster_stats() -> dict[str, Any]:
    """The figures of :func:`stats` added up over every worker of the cluster (``--workers``);
    in a single process, the same as :func:`stats`."""
    from .web.metrics import cluster_stats as _cluster_stats

    return await _cluster_stats()


def tokens(secret: str | bytes, *, ttl: float = 60.0) -> Tokens:
    """A signer of short-lived tokens (HMAC-SHA256, an expiry, base64url), for instance for a
    browser to send in ``new PleziClient(url, {token})``, read in ``pre_connect`` as
    ``self.token``. See :class:`plezi.web.tokens.Tokens` and docs/security.md."""
    from .web.tokens import Tokens

    return Tokens(secret, ttl=ttl)


def no_autostart() -> None:
    """Do not start the server automatically when the script ends."""
    _autostart.no_autostart()


def __getattr__(name: str) -> Any:
    # ``plezi.asgi`` on first use, so ``import plezi`` stays lean for the native server.
    if name == "asgi":
        import importlib

        return importlib.import_module(".asgi", __name__)
    raise AttributeError(f"module 'plezi' has no attribute {name!r}")


def _autostart_now() -> int:
    from .launch.run import serve_app as _serve_app

    _autostart.mark_started()
    return _serve_app(_app.default_app(), inline_fallback=True)


def _has_work() -> bool:
    """Routes, or a public folder on the command line (``python site.py --public www`` with no
    route serves the folder, as Iodine does): either is something to serve."""
    if _app.default_app().routes:
        return True
    import sys as _sys

    from .launch.flags import asks_for_public

    return asks_for_public(_sys.argv[1:])


_autostart.install(_autostart_now, _has_work)
del sys
