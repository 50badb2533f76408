"""The exceptions plezi raises.

One root, :class:`PleziError`; below it, errors about the local program (configuration, routing)
and errors caused by a peer (a bad request), each with the HTTP status it should produce.
Exception text is for logs and developers; it is never sent to a peer.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "ConfigError",
    "ConnectionRequiredError",
    "HTTPError",
    "PleziError",
    "PleziWarning",
    "RouteError",
    "ServerStartError",
    "error_observers",
    "report_error",
]


class PleziError(Exception):
    """The root of every exception plezi raises on purpose."""


class ConfigError(PleziError, ValueError):
    """A setting or command-line flag is invalid."""


class RouteError(PleziError, ValueError):
    """A route cannot be built (bad pattern, unusable controller)."""


class ConnectionRequiredError(PleziError, RuntimeError):
    """A WebSocket or SSE operation (``subscribe()``) was called where there is no connection:
    an HTTP action, or an auto-dispatch event reached over HTTP."""


class PleziWarning(UserWarning):
    """Something plezi can run but that is probably a mistake: a callback name that looks
    misspelled (``on_mesage``), a public method of an auto-dispatch controller that cannot be an
    event. Issued at ``route()``, pointing at the method's file and line."""


class ServerStartError(PleziError, OSError):
    """The server could not start: the address is taken or cannot be bound."""


class HTTPError(PleziError):
    """A request the server refuses; ``status`` is the response code to send.

    Raise it from a controller to answer with that status; the ``public_message`` (not the
    exception text) is the only thing the peer sees.
    """

    def __init__(self, status: int, public_message: str = "", *, log: str = "") -> None:
        super().__init__(log or public_message or f"HTTP {status}")
        self.status = status
        self.public_message = public_message


#: Called with every exception that application code raised and plezi caught and logged: a 500
#: answer, a failed WebSocket or SSE callback, a failed auto-dispatch event. Empty unless
#: something listens (:class:`plezi.testing.TestClient` does); only error paths read it.
#: Observers run on the server's loop and must not raise.
error_observers: list[Callable[[BaseException], object]] = []


def report_error(exc: BaseException) -> None:
    """Hand ``exc`` to the :data:`error_observers` (called on error paths only)."""
    for observer in error_observers:
        observer(exc)
