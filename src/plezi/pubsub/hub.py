"""The process-wide pub/sub hub behind ``plezi.publish``, ``plezi.subscribe``, ``write_to``.

The hub owns the local :class:`~.registry.Registry` and the engine. Messages for one connection
(``write_to``) travel on a reserved channel, ``"\\x00to:" + id``, so every engine carries them
like any other message and the process that owns the connection delivers it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..server.websocket import PROCESS_TOKEN
from .engine import Engine, MemoryEngine
from .message import Message
from .registry import Handler, Registry

if TYPE_CHECKING:
    from ..server.server import Server

__all__ = ["DIRECT_PREFIX", "Hub", "hub"]

log = logging.getLogger("plezi")

#: Channels starting with this carry a message for one connection; users cannot publish there.
DIRECT_PREFIX = "\x00to:"


class Hub:
    """Local subscriptions, the engine, and the loop they run on (one per process)."""

    def __init__(self) -> None:
        self.registry = Registry(self._on_first, self._on_last)
        self.registry.run_free_handler = self._run_free
        self.engine: Engine = MemoryEngine(self)
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    # -- binding to a running server --------------------------------------------------------

    def use_engine(self, engine: Engine) -> None:
        """Switch engines (before the server starts); local subscriptions are announced."""
        self.engine = engine
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
        await self.engine.start()

    async def detach(self) -> None:
        """Stop the engine (called at the end of the server's shutdown)."""
        try:
            await self.engine.stop()
        finally:
            self.server = None
            self._loop = None
            self._thread = None

    # -- publishing -------------------------------------------------------------------------

    def publish(self, channel: str, data: Any) -> None:
        """Publish ``data`` (str, bytes, dict or list) on ``channel``, from any thread."""
        if not isinstance(channel, str) or not channel or channel.startswith(DIRECT_PREFIX):
            raise ValueError(f"invalid channel name {channel!r}")
        self._send(Message.of(channel, data))

    def write_to(self, conn_id: str, data: Any) -> bool:
        """Send ``data`` to the connection ``conn_id``, in whichever process it lives.

        ``False`` when the connection is known to be gone (it lived here and closed); a
        connection in another process cannot be checked, so ``True`` means "sent on its way".
        """
        token, _, _serial = conn_id.partition("-")
        message = Message.of(DIRECT_PREFIX + conn_id, data)
        if token == PROCESS_TOKEN:
            if self._loop is not None and threading.get_ident() != self._thread:
                self._loop.call_soon_threadsafe(self._direct, message)
                return True
            return self._direct(message)
        self._send(message)
        return True

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
            self.registry.deliver(message)

    def _direct(self, message: Message) -> bool:
        conn_id = message.channel[len(DIRECT_PREFIX) :]
        token, _, serial = conn_id.partition("-")
        server = self.server
        if token != PROCESS_TOKEN or server is None:
            return False
        try:
            conn = server.websockets.get(int(serial, 16))
        except ValueError:
            return False
        if conn is None or not conn.is_open:
            return False
        conn.queue_frame(message.frame())
        return True

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


def _check_name(channel: str) -> None:
    if not isinstance(channel, str) or not channel or channel.startswith(DIRECT_PREFIX):
        raise ValueError(f"invalid channel name {channel!r}")


async def _guard(awaitable: Any, handler: Handler) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("error in pub/sub handler %r", handler.func)


#: The hub of this process.
hub = Hub()
