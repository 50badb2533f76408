"""The process-wide pub/sub hub behind ``plezi.publish``, ``plezi.subscribe``, ``write_to``.

The hub owns the local :class:`~.registry.Registry` and the engine. Messages for one connection
(``write_to``) travel on a reserved channel, ``"\\x00to:" + id``, so every engine carries them
like any other message and the process that owns the connection delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import redis_url_from_env
from ..server.connection import OUTBOX, PROCESS_TOKEN
from .channels import options_for
from .engine import Engine, MemoryEngine
from .history import Positioned
from .message import DIRECT_PREFIX, Message, encode_payload
from .presence import PresenceError, presence_options
from .registry import Handler, Registry

if TYPE_CHECKING:
    from ..server.connection import StreamConnection
    from ..server.server import Server
    from .history import HistoryPage

__all__ = ["DIRECT_PREFIX", "Hub", "hub"]

log = logging.getLogger("plezi")


class Hub:
    """Local subscriptions, the engine, and the loop they run on (one per process)."""

    def __init__(self) -> None:
        # The server's connections are reached through its outbox, and nothing else.
        self.registry = Registry(self._on_first, self._on_last, outbox=OUTBOX)
        self.registry.run_free_handler = self._run_free
        self._engine: Engine | None = None
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        #: Messages published from this process, and handed to its subscribers (one per
        #: subscriber: counted once per message, from the registry's total). ``plezi.stats()``.
        self.published = 0
        self.delivered = 0

    # -- binding to a running server --------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine in use: chosen by :meth:`use_engine`, else Redis when ``PL_REDIS_URL`` or
        ``REDIS_URL`` is set (so a plain script's ``publish`` reaches the servers), else memory."""
        if self._engine is None:
            url = redis_url_from_env()
            if url:
                self._engine = self.redis_engine(url)
            else:
                self._engine = MemoryEngine(self)
        return self._engine

    def redis_engine(self, url: str) -> Engine:
        """A Redis engine for ``url``, namespaced by ``plezi.app_name`` as it is now."""
        from .redis import RedisEngine

        return RedisEngine(self, url, current_app_name(), PROCESS_TOKEN)

    def use_engine(self, engine: Engine) -> None:
        """Switch engines (before the server starts); local subscriptions are announced."""
        self._engine = engine
        channels, patterns = self.registry.names()
        for name in channels:
            engine.subscribed(name, False)
        for name in patterns:
            engine.subscribed(name, True)

    async def attach(self, server: Server) -> None:
        """Bind to ``server``'s loop (called when it starts) and start the engine."""
        self.server = server
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.registry.schedule = self._loop.call_soon
        await self.engine.start()

    async def detach(self) -> None:
        """Stop the engine (called at the end of the server's shutdown)."""
        self.registry.flush_batch()
        self.registry.schedule = None
        try:
            tracker = self.engine.presence_if_made
            if tracker is not None:
                await tracker.stop()
            await self.engine.stop()
        finally:
            self.server = None
            self._loop = None
            self._thread = None

    # -- publishing -------------------------------------------------------------------------

    def publish(self, channel: str, data: Any) -> None:
        """Publish ``data`` (str, bytes, dict or list) on ``channel``, from any thread."""
        _check_name(channel)
        self.published += 1
        # PERF: one cached dict lookup for a channel without history (see channels.py).
        options = options_for(channel)
        if options is None or not options.history:
            self._send(Message.of(channel, data))
            return
        # A Positioned without a position yet: the engine's history fills it in (memory), or
        # sends it on (the position comes back from the master or Redis).
        payload, is_text = encode_payload(data)
        message = Positioned(channel, payload, is_text, "", 0)
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.engine.publish_recoverable, message, options)
        else:
            self.engine.publish_recoverable(message, options)

    async def history(
        self, channel: str, since: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        """Read the history of the recoverable channel ``channel`` (see :func:`plezi.history`)."""
        _check_name(channel)
        options = options_for(channel)
        if options is None or not options.history:
            raise ValueError(f"channel {channel!r} has no history: see plezi.channel()")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise TypeError(f"since must be an offset (int), not {since!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be a number of messages (int), not {limit!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        return await self.engine.history(channel, options, since, limit)

    def write_to(self, conn_id: str, data: Any) -> bool:
        """Send ``data`` to the connection ``conn_id``, in whichever process it lives.

        ``False`` when the connection is known to be gone (it lived here and closed); a
        connection in another process cannot be checked, so ``True`` means "sent on its way".
        """
        message = Message.of(DIRECT_PREFIX + conn_id, data)
        if not conn_id.startswith(PROCESS_TOKEN + "-"):
            self._send(message)
            return True
        if self._loop is not None and threading.get_ident() != self._thread:
            # Another thread: answer from the connection table (a dict lookup is safe here),
            # and queue the frame on the loop.
            if self._local(conn_id) is None:
                return False
            self._loop.call_soon_threadsafe(self._direct, message)
            return True
        return self._direct(message)

    def _send(self, message: Message) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.engine.publish, message)
        else:
            self.engine.publish(message)

    def deliver(self, message: Message) -> None:
        """A message for this process, from the engine: fan it out locally."""
        if message.channel.startswith(DIRECT_PREFIX):
            self._direct(message)
        else:
            self.delivered += self.registry.deliver(message)

    def flush(self) -> None:
        """The end of a read from another process (Redis): fan out the batch that the messages
        of that read built, now rather than at the end of the loop iteration."""
        self.registry.flush_batch()

    def _direct(self, message: Message) -> bool:
        conn = self._local(message.channel[len(DIRECT_PREFIX) :])
        if conn is None:
            return False
        conn.queue_message(message)
        return True

    def _local(self, conn_id: str) -> StreamConnection | None:
        """The open connection ``conn_id`` of this process, if any."""
        token, _, serial = conn_id.partition("-")
        server = self.server
        if token != PROCESS_TOKEN or server is None:
            return None
        try:
            conn = server.streams.get(int(serial, 16))
        except ValueError:
            return None
        return conn if conn is not None and conn.is_open else None

    # -- presence ---------------------------------------------------------------------------

    def local_presence_entries(self) -> int:
        """How many presence entries this process's connections hold (0 when no presence
        table was made: it is made on first use, and reading does not make it)."""
        tracker = self._engine.presence_if_made if self._engine is not None else None
        return sum(len(entries) for entries in tracker.local.values()) if tracker else 0

    async def presence(self, channel: str) -> dict[str, Any]:
        """``{connection id: info}`` of the presence channel ``channel``, cluster-wide; from
        another loop than the server's, the question is asked on the server's loop."""
        _check_name(channel)
        options = presence_options(channel)
        if options is None:
            raise PresenceError(
                f"{channel!r} is not a presence channel: configure it with "
                "plezi.channel(name, presence=True)"
            )
        loop = self._loop
        coro = self.engine.presence.members(channel, options.presence_ttl)
        if loop is not None and loop is not asyncio.get_running_loop():
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
        return await coro

    # -- connectionless subscriptions -------------------------------------------------------

    def subscribe(
        self, channel: str, handler: Callable[..., Any], *, pattern: bool = False
    ) -> None:
        """Call ``handler`` for every message on ``channel`` until :meth:`unsubscribe`."""
        _check_name(channel)
        if not callable(handler):
            raise TypeError("a connectionless subscription needs a handler")
        self.registry.handle(channel, handler, pattern=pattern)

    def unsubscribe(
        self, channel: str, handler: Callable[..., Any], *, pattern: bool = False
    ) -> bool:
        """Remove a connectionless subscription; ``False`` if there was none."""
        return self.registry.remove(channel, handler, pattern=pattern)

    def _run_free(self, handler: Handler, message: Message) -> None:
        try:
            result = handler.call(message)
        except Exception:
            log.exception("error in pub/sub handler %r", handler.func)
            return
        if handler.is_async or asyncio.iscoroutine(result):
            if self._loop is None or self.server is None:
                log.error("async pub/sub handler %r called with no running server", handler.func)
                if asyncio.iscoroutine(result):
                    result.close()
                return
            self.server.spawn(_guard(result, handler))

    # -- engine notifications ---------------------------------------------------------------

    def _on_first(self, name: str, pattern: bool) -> None:
        self.engine.subscribed(name, pattern)

    def _on_last(self, name: str, pattern: bool) -> None:
        self.engine.unsubscribed(name, pattern)

    def status(self) -> dict[str, object]:
        """The engine's state plus local subscription counts."""
        channels, patterns = self.registry.names()
        return {**self.engine.status(), "channels": len(channels), "patterns": len(patterns)}


#: ``plezi.app_name`` as the application set it (``None``: :func:`default_app_name`).
_app_name: str | None = None


def current_app_name() -> str:
    """``plezi.app_name`` as the application set it (or its default)."""
    return _app_name or default_app_name()


def set_app_name(name: str | None) -> None:
    """Set the pub/sub namespace (``plezi.app_name = ...``); ``None``: back to the default."""
    global _app_name
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"app_name must be a non-empty string, not {name!r}")
    _app_name = name


#: A server's ``module:attribute`` argument (``chat:application``, ``app.main:create()``).
_TARGET = re.compile(r"([A-Za-z_][\w.]*):[A-Za-z_][\w.]*(?:\(\))?")


def default_app_name() -> str:
    """The main script's file name without extension, plus ``_app`` (``chat.py`` ->
    ``chat_app``), as Plezi does; ``plezi_app`` when there is no script. When the main program
    is a server that imports the app (``uvicorn chat:application``), the app's module name
    (``chat_app``): two apps under uvicorn on one Redis must not share a name."""
    from ..mainscript import main_file, main_is_tool

    if main_is_tool():
        for arg in sys.argv[1:]:
            target = _TARGET.fullmatch(arg)
            if target is not None:
                return f"{target.group(1).rsplit('.', 1)[-1]}_app"
    path = main_file() or ""
    base = os.path.splitext(os.path.basename(path))[0]
    return f"{base or 'plezi'}_app"


def _check_name(channel: str) -> None:
    # Names starting with NUL are plezi's own: one connection's messages (DIRECT_PREFIX), the
    # cluster's control records (cluster_presence.CONTROL).
    if not isinstance(channel, str) or not channel or channel.startswith("\x00"):
        raise ValueError(f"invalid channel name {channel!r}")


async def _guard(awaitable: Any, handler: Handler) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("error in pub/sub handler %r", handler.func)


#: The hub of this process.
hub = Hub()
