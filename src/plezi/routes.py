"""Routes: a path pattern bound to a controller, with the controller's method tables.

Everything a request needs from the controller class (which method answers which verb, which
callbacks exist and which are ``async``) is computed once, here, when ``route()`` is called.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

from .controller import PLEZI_NAMES, Controller
from .dispatch import Event, dispatching_class, event_table, unknown_event
from .errors import RouteError
from .routing import RoutePattern

__all__ = ["CALLBACKS", "ControllerRoute", "mix_controller"]

log = logging.getLogger("plezi")

#: WebSocket lifecycle callbacks: never HTTP actions, never events.
CALLBACKS: Final = (
    "pre_connect",
    "on_open",
    "on_message",
    "on_close",
    "on_shutdown",
    "on_drained",
    "on_sse",
)
#: Names that only their own verb reaches (Plezi's REST_METHODS), plus ``unknown``.
_REST = frozenset(("create", "update", "delete", "show", "index", "unknown"))


def mix_controller(cls: type) -> type[Controller]:
    """The class plezi instantiates for ``cls``: ``cls`` itself when it already subclasses
    :class:`Controller`, else a subclass of both (the user's methods win)."""
    if not isinstance(cls, type):
        raise RouteError(f"a controller must be a class, not {cls!r}")
    if issubclass(cls, Controller):
        return cls
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    return type(cls.__name__, (cls, Controller), namespace)


def _user_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Public functions the user's classes define (not plezi's, not ``object``'s)."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is Controller:
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in PLEZI_NAMES:
                continue
            if inspect.isfunction(value):
                found[name] = value
            elif name in found:
                del found[name]  # shadowed by a non-function attribute
    return found


def _required_args(func: Callable[..., Any]) -> int:
    params = list(inspect.signature(func).parameters.values())[1:]  # skip self
    return sum(
        1
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


class ControllerRoute:
    """A route whose handler is a controller class."""

    def __init__(self, path: str, controller: type, *, pattern: RoutePattern | None = None) -> None:
        """``pattern`` replaces the one built from ``path`` (the public folder's matches only
        the paths that name a file; see :mod:`plezi.http.static`)."""
        self.controller = controller
        self.cls = mix_controller(controller)
        try:
            self.pattern = pattern if pattern is not None else RoutePattern(path, add_id=True)
        except ValueError as exc:
            raise RouteError(f"invalid route {path!r}: {exc}") from exc
        methods = _user_methods(self.cls)
        self.methods = methods
        self.auto_dispatch = bool(getattr(self.cls, "auto_dispatch", False))
        #: JSON events (``auto_dispatch``): also called over HTTP, as ``method(params)``.
        self.events: dict[str, Event] = event_table(methods) if self.auto_dispatch else {}
        if self.auto_dispatch and "on_message" not in methods:
            self.cls = dispatching_class(self.cls, self.events, unknown_event(methods))
        self.cls._pl_route = self
        self.is_websocket = "on_message" in methods or self.auto_dispatch
        #: Accepts Server-Sent Events: any connection controller, or one that defines Plezi's
        #: ``on_sse`` (called when a stream opens) and needs no ``on_message``.
        self.is_sse = self.is_websocket or "on_sse" in methods
        #: GET /<id> -> a public method that takes no arguments, named ``id`` (``None`` -> index).
        self.get_map: dict[str | None, str] = {
            name: name
            for name, func in methods.items()
            if name not in _REST and name not in CALLBACKS and _required_args(func) == 0
        }
        if "index" in methods:
            self.get_map[None] = "index"
        self.has = {name: name in methods for name in ("show", "create", "update", "delete")}
        self.async_names = frozenset(
            name for name, func in methods.items() if inspect.iscoroutinefunction(func)
        )
        #: PERF: skip the user's ``__init__`` call entirely when there is none.
        self.has_init = self.cls.__init__ is not object.__init__

    def action_for(self, method: str, id: str | None) -> str | None:
        """The method answering ``method`` for this ``id`` (Plezi's RESTful table), or ``None``."""
        if id is not None and id in self.events:
            return id  # like Plezi, a named event wins for every verb (its AJAX fallback POSTs)
        if method == "GET" or method == "HEAD":
            name = self.get_map.get(id)
            if name is None and id is not None and self.has["show"]:
                return "show"
            return name
        if method == "POST":
            if self.has["create"]:
                return "create"
        elif method == "PUT" or method == "PATCH":
            if self.has["create"] and (id is None or id == "new"):
                return "create"
            if self.has["update"] and id is not None:
                return "update"
        elif method == "DELETE" and self.has["delete"]:
            return "delete"
        # Plezi falls back to a named method for other verbs, so forms can POST to /path/<name>.
        return self.get_map.get(id) if id is not None else None

    def url_for(self, action: str | None = None, /, **params: Any) -> str:
        """Build a path to this route (see :meth:`Controller.url_for`)."""
        if action not in (None, "index", "show", "update", "delete"):
            params["id"] = action
        path_params = {k: v for k, v in params.items() if k in self.pattern.names}
        path = self.pattern.build(path_params)
        rest = {k: v for k, v in params.items() if k not in self.pattern.names}
        return f"{path}?{urlencode(rest, doseq=True)}" if rest else path

    def __repr__(self) -> str:
        return f"<route {self.pattern.path!r} -> {self.controller.__qualname__}>"


def new_instance(route: ControllerRoute, request: Any, params: Mapping[str, Any]) -> Controller:
    """A fresh controller for one request; plezi's state is set before the user's ``__init__``."""
    inst = route.cls.__new__(route.cls)
    inst._pl_request = request
    inst._pl_params = params  # type: ignore[assignment]
    inst._pl_response = None
    inst._pl_cookies = None
    inst._pl_conn = None
    if route.has_init:
        route.cls.__init__(inst)
    return inst
