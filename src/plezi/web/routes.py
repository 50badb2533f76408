"""Routes: a path pattern bound to a controller, with the controller's method tables.

Everything a request needs from the controller class (which method answers which verb, which
callbacks exist and which are ``async``) is computed once, here, when ``route()`` is called.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode

from ..errors import PleziWarning, RouteError
from .controller import PLEZI_NAMES, Controller
from .events import (
    Event,
    dispatching_class,
    event_table,
    not_events,
    plain_signature,
    unknown_event,
    where,
)
from .patterns import RoutePattern

__all__ = ["CALLBACKS", "HTTP_METHODS", "ControllerRoute", "mix_controller"]

log: Final = logging.getLogger("plezi")

#: WebSocket lifecycle callbacks: never HTTP actions, never events.
CALLBACKS: Final = (
    "pre_connect",
    "on_open",
    "on_message",
    "on_close",
    "on_shutdown",
    "on_drained",
    "on_sse",
    "on_recover",
)
#: Callbacks called with arguments: how many (the others get none).
_CALLBACK_ARGS: Final = {"on_message": 1, "on_recover": 2}
_ARG_NAMES: Final = {0: (), 1: ("data",), 2: ("channel", "recovered")}
_ARG_TEXT: Final = {
    0: "with no arguments",
    1: "with the message",
    2: "with the channel and whether it recovered",
}
#: The verbs an ``allow`` header can list, in the order it lists them.
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Names that only their own verb reaches (Plezi's REST_METHODS), plus ``unknown``.
_REST: Final = frozenset(("create", "update", "delete", "show", "index", "unknown"))
#: How close (difflib's ratio) a name must be to a callback's to be taken for a misspelling of
#: it: ``on_*`` and ``pre_*`` names (``on_mesage``, ``on_opne``), and any other (``onmessage``).
_NEAR_PREFIXED: Final = 0.8
_NEAR_OTHER: Final = 0.9


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


# -- checks at route(): callbacks with impossible signatures, misspellings, non-events --------


def _callable_with(func: Callable[..., Any], count: int) -> bool:
    """Whether ``func(instance, *count arguments)``, the call plezi makes, binds."""
    try:
        inspect.signature(func).bind(None, *([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature to read: assume the best
        return True
    return True


def _check_callbacks(cls: type, methods: Mapping[str, Callable[..., Any]]) -> None:
    """A callback plezi can only call with a ``TypeError`` is a :class:`RouteError`."""
    for name in CALLBACKS:
        func = methods.get(name)
        if func is None:
            continue
        wants = _CALLBACK_ARGS.get(name, 0)
        if _callable_with(func, wants):
            continue
        expected = f"{name}(self{''.join(', ' + a for a in _ARG_NAMES[wants])})"
        raise RouteError(
            f"{where(func)}: {cls.__qualname__}.{name}{plain_signature(func)} cannot be called "
            f"as plezi calls it ({_ARG_TEXT[wants]}); define it as {expected}"
        )


def _misspelled(name: str, methods: Mapping[str, Any]) -> str | None:
    """The callback ``name`` looks like a misspelling of (one the class does not define)."""
    lowered = name.lower()
    cutoff = _NEAR_PREFIXED if lowered.startswith(("on_", "pre_")) else _NEAR_OTHER
    found = difflib.get_close_matches(lowered, CALLBACKS, n=1, cutoff=cutoff)
    if not found or found[0] in methods:
        return None
    return found[0]


def _warn(message: str, func: Callable[..., Any]) -> None:
    """A :class:`PleziWarning` pointing at ``func``'s definition, and the same log line
    (with that ``file:line`` in front: a warning shows it itself)."""
    log.warning("%s: %s", where(func), message)
    code = getattr(inspect.unwrap(func), "__code__", None)
    warnings.warn_explicit(
        message,
        PleziWarning,
        code.co_filename if code is not None else "<unknown>",
        code.co_firstlineno if code is not None else 0,
        module=getattr(func, "__module__", None),
    )


def _check_names(
    cls: type, methods: Mapping[str, Callable[..., Any]], *, events_checked: bool
) -> None:
    """Warn about names that look like misspelled callbacks and, on an auto-dispatch controller
    that dispatches itself (``events_checked``), public methods plezi can never call (neither
    events nor HTTP actions)."""
    misspelled: set[str] = set()
    for name, func in methods.items():
        if name in CALLBACKS:
            continue
        meant = _misspelled(name, methods)
        if meant is None:
            continue
        misspelled.add(name)
        hint = (
            " (without on_message this route accepts no WebSocket connections)"
            if meant == "on_message" and not getattr(cls, "auto_dispatch", False)
            else ""
        )
        _warn(
            f"{cls.__qualname__}.{name} is not a plezi callback and is never "
            f"called; did you mean {meant}?{hint}",
            func,
        )
    if not events_checked:
        return
    # A method that takes no message is a valid HTTP action (a page beside the events: plezi's
    # own tests have two), so it draws no warning here; a message naming it logs why it found
    # no event (see plezi.dispatch). One that needs more than the message plezi can never call.
    for name, reason in not_events(methods).items():
        if name in misspelled or reason.endswith("takes no message"):
            continue
        _warn(
            f"{cls.__qualname__}.{reason}, so it is neither an event "
            f'({{"event": "{name}"}} gets "no such event") nor an HTTP action; for an event, '
            f"define {name}(self, msg); name a helper _{name}",
            methods[name],
        )


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
        dispatches = self.auto_dispatch and "on_message" not in methods
        _check_callbacks(controller, methods)
        _check_names(controller, methods, events_checked=dispatches)
        #: JSON events (``auto_dispatch``): also called over HTTP, as ``method(params)``,
        #: unless the class sets ``http_events = False``.
        self.events: dict[str, Event] = event_table(methods) if self.auto_dispatch else {}
        self.http_events = bool(getattr(self.cls, "http_events", True))
        #: The events an HTTP request may call (none with ``http_events = False``).
        self._http_events: dict[str, Event] = self.events if self.http_events else {}
        if dispatches:
            self.cls = dispatching_class(
                self.cls, self.events, unknown_event(methods), not_events(methods)
            )
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
        if not self.http_events:
            for name in self.events:  # (an event with an optional ``msg`` is GET-able too)
                self.get_map.pop(name, None)
        self.has = {name: name in methods for name in ("show", "create", "update", "delete")}
        self.async_names = frozenset(
            name for name, func in methods.items() if inspect.iscoroutinefunction(func)
        )
        #: PERF: skip the user's ``__init__`` call entirely when there is none.
        self.has_init = self.cls.__init__ is not object.__init__

    def action_for(self, method: str, id: str | None) -> str | None:
        """The method answering ``method`` for this ``id`` (Plezi's RESTful table), or ``None``."""
        if id is not None and id in self._http_events:
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

    def allowed_methods(self, id: str | None) -> list[str]:
        """The verbs this route answers for ``id`` (the ``allow`` header of a ``405``)."""
        return [verb for verb in HTTP_METHODS if self.action_for(verb, id) is not None]

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
    """A fresh controller for one request; plezi's state is set before the user's ``__init__``
    (``_pl_response``, ``_pl_cookies`` and ``_pl_conn`` start as the class's ``None``)."""
    inst = route.cls.__new__(route.cls)
    inst._pl_request = request
    inst._pl_params = params  # type: ignore[assignment]
    if route.has_init:
        route.cls.__init__(inst)
    return inst
