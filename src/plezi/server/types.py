"""What the server layer needs from the layers above it, as protocols: the application it
serves, the route that accepted a connection, and a published message ready to write.

The server never imports the application or pub/sub; they hand it objects of these shapes.
The controller of a connection is typed ``Any`` on purpose: the server calls its callbacks by
name (``on_open``, ``on_message`` ...), as the user wrote them.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from ..http.request import Request
from ..http.response import Outcome

__all__ = ["Application", "Prepared", "RouteInfo"]


class Application(Protocol):
    """What :class:`~plezi.server.server.Server` serves (a :class:`plezi.App`)."""

    def handle(self, request: Request) -> Outcome | Coroutine[Any, Any, Outcome]:
        """The reply to a complete request (or a coroutine that makes it)."""

    async def startup(self, server: Any) -> None:
        """Called once the server listens."""

    async def cleanup(self, server: Any) -> None:
        """Called once the server stopped."""


class RouteInfo(Protocol):
    """The route that accepted a WebSocket or SSE connection."""

    #: Names of the controller's callbacks that are ``async def``.
    async_names: frozenset[str]


class Prepared(Protocol):
    """A published message as a connection writes it (:class:`plezi.pubsub.message.Message`):
    framed once, the same bytes for every subscriber."""

    channel: str

    @property
    def value(self) -> str | bytes:
        """The message as text or bytes."""

    def frame(self, force_binary: bool = False) -> bytes:
        """The server-to-client WebSocket frame."""

    def sse_frame(self) -> bytes | None:
        """The Server-Sent Events event (``None``: none can carry it)."""
