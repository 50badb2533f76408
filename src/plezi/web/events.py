"""JSON auto-dispatch: WebSocket events routed to controller methods (Plezi's wire protocol).

Theory of operation
-------------------
A controller that sets ``auto_dispatch = True`` receives JSON *events*: a text message
``{"event": "chat", ...}`` calls the public method ``chat(self, msg)`` with the whole decoded
object. Which methods are events is decided once, at ``route()``, by :func:`event_table`; when the
user's class defines no ``on_message`` of its own, :func:`dispatching_class` gives the routed
class an ``on_message`` (from :func:`make_on_message`) that looks the event up in that table. So
a message costs one JSON decode, one dict lookup and one call: no reflection per message.

Wire protocol (Plezi 0.16's, which its ``client.js`` speaks; replies are text frames):

=====================================  ==========================================================
client sends                           server answers
=====================================  ==========================================================
``{"event": "chat", ...}``             ``chat(msg)`` runs; its return value is sent back:
                                       ``dict``/``list`` as JSON, ``str`` as is, bytes-like as a
                                       binary frame, ``None`` (or anything else) sends nothing
``{"event": "chat", "_EID_": x, ...}`` first ``{"event":"_ack_","_EID_":x}``, then as above
an event with no method                ``unknown(msg)`` if the class defines it (acked as
                                       above), else ``{"event":"_err_","status":404,...}``
invalid JSON, not an object, no        ``{"event":"_err_","status":400,...}``
``event`` string
the method raised                      ``{"event":"_err_","status":500,...}`` (the exception is
                                       logged, never sent)
=====================================  ==========================================================

An error reply is ``{"event": "_err_", "status": <int>, "error": <text>, "request": <what was
received>}``, plus the request's ``_EID_`` at the top level when it had one (an error replaces
the ack, so a client waiting for one can fail at once). The connection always stays open.
Plezi closes the connection on bad input instead; keeping it open and saying why is the fix.

Which methods are events (Plezi's ``_pl_ad_map``): public functions the user's classes define
that can be called with exactly one positional argument (Ruby arities 1, -1 and -2: ``def
chat(self, msg)``, ``def chat(self, msg=None)``, ``def chat(self, *args)``). Never events: names
starting with ``_`` or ``on_`` (callbacks, present and future), ``pre_connect``, ``index`` and
Plezi's RESTful names (``new``, ``show``, ``create``, ``update``, ``delete``), ``unknown`` (it is
the fallback), and every name :class:`plezi.Controller` defines.

Over HTTP (Plezi routes ``/path/<name>`` to the method named ``<name>`` for every verb, and its
client's AJAX fallback POSTs ``{"event": name, "id": name, ...}`` to ``/path``): a request whose
``id`` parameter names an event calls ``method(self.params)``, so GET query parameters, forms
and JSON bodies all arrive as ``msg``; a ``dict``/``list`` return is sent as JSON.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ..errors import report_error
from .controller import PLEZI_NAMES, Controller

__all__ = [
    "NEVER_EVENTS",
    "Event",
    "OnMessage",
    "dispatching_class",
    "error_message",
    "event_table",
    "make_on_message",
    "not_events",
    "plain_signature",
    "takes_no_argument",
    "takes_one_argument",
    "unknown_event",
    "where",
]

log = logging.getLogger("plezi")

#: Names that are never events (besides ``_*``, ``on_*`` and
#: :data:`plezi.web.controller.PLEZI_NAMES`).
NEVER_EVENTS: Final = frozenset(
    ("pre_connect", "index", "new", "show", "create", "update", "delete", "unknown")
)

#: What ``on_message`` returns: nothing for a sync event, an awaitable for an ``async`` one
#: (the connection awaits it in order, like any ``async`` callback).
OnMessage = Callable[[Controller, "str | bytes"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatchable method: the plain function (called as ``func(instance, msg)``)."""

    name: str
    func: Callable[[Any, Any], Any]
    is_async: bool


def takes_one_argument(func: Callable[..., Any]) -> bool:
    """Whether ``func(self, msg)`` is a valid call that needs nothing more (Plezi's arity rule)."""
    try:
        params = list(inspect.signature(func).parameters.values())[1:]  # skip self
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(1 for p in positional if p.default is p.empty)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    kw_required = any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params)
    return required <= 1 and (bool(positional) or varargs) and not kw_required


def _is_event_name(name: str) -> bool:
    return not (name.startswith(("_", "on_")) or name in NEVER_EVENTS or name in PLEZI_NAMES)


def event_table(methods: Mapping[str, Callable[..., Any]]) -> dict[str, Event]:
    """The events among ``methods`` (a controller's public functions, by name)."""
    return {
        name: Event(name, func, inspect.iscoroutinefunction(func))
        for name, func in methods.items()
        if _is_event_name(name) and takes_one_argument(func)
    }


def not_events(methods: Mapping[str, Callable[..., Any]]) -> dict[str, str]:
    """The public methods that could be taken for events but are not (their signature does
    not take the message), each with the reason, for the route's warnings and the ``404``
    error reply (``no such event: say (say(self) takes no message)``)."""
    reasons: dict[str, str] = {}
    for name, func in methods.items():
        if not _is_event_name(name) or takes_one_argument(func):
            continue
        signature = f"{name}{plain_signature(func)}"
        reasons[name] = (
            f"{signature} takes no message"
            if takes_no_argument(func)
            else f"{signature} needs more than the message"
        )
    return reasons


def where(func: Callable[..., Any]) -> str:
    """``file:line`` of a function's definition, for messages (the file relative to the
    working directory when it is inside it)."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return "<unknown>"
    path = code.co_filename
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        relative = path
    shown = path if relative.startswith("..") else relative
    return f"{shown}:{code.co_firstlineno}"


def plain_signature(func: Callable[..., Any]) -> str:
    """``(self, msg=None)``: a function's parameters without annotations (for messages)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return "(...)"
    empty = inspect.Parameter.empty
    params = [p.replace(annotation=empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=params, return_annotation=empty))


def takes_no_argument(func: Callable[..., Any]) -> bool:
    """Whether ``func(self)`` is a valid call and ``func(self, msg)`` is not: a method with
    no parameter besides ``self`` (keyword ones aside)."""
    try:
        params = list(inspect.signature(func).parameters.values())[1:]  # skip self
    except (TypeError, ValueError):
        return False
    return not any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        or (p.kind is p.KEYWORD_ONLY and p.default is p.empty)
        for p in params
    )


def unknown_event(methods: Mapping[str, Callable[..., Any]]) -> Event | None:
    """The class's ``unknown(self, msg)`` fallback, if it defines a usable one."""
    func = methods.get("unknown")
    if func is None or not takes_one_argument(func):
        return None
    return Event("unknown", func, inspect.iscoroutinefunction(func))


def error_message(status: int, error: str, request: Any, eid: Any = None) -> str:
    """An ``_err_`` reply as JSON text."""
    reply: dict[str, Any] = {"event": "_err_", "status": status, "error": error}
    if eid is not None:
        reply["_EID_"] = eid
    reply["request"] = request
    return orjson.dumps(reply).decode()


def _raw_request(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def _send_result(inst: Controller, result: Any, msg: Any, name: str) -> None:
    """Send an event's return value to its client (see the module docstring)."""
    if result is None:
        return
    if isinstance(result, str):
        inst.write(result)
    elif isinstance(result, dict | list):
        try:
            text = orjson.dumps(result).decode()
        except TypeError as exc:
            log.exception("%s.%s returned a value JSON cannot encode", type(inst).__name__, name)
            report_error(exc)
            inst.write(error_message(500, "internal server error", msg, _eid(msg)))
            return
        inst.write(text)
    elif isinstance(result, bytes | bytearray | memoryview):
        inst.write(result)


def _eid(msg: dict[str, Any]) -> Any:
    """The request's ``_EID_`` when it asks for an ack (Ruby truthiness: not null, not false)."""
    eid = msg.get("_EID_")
    return None if eid is False else eid


def _failed(inst: Controller, msg: dict[str, Any], name: str) -> None:
    log.exception("error in %s.%s", type(inst).__name__, name)
    exc = sys.exception()  # called from an ``except`` block: the event's exception
    if exc is not None:
        report_error(exc)
    inst.write(error_message(500, "internal server error", msg, _eid(msg)))


async def _finish(
    inst: Controller, awaitable: Awaitable[Any], msg: dict[str, Any], name: str
) -> None:
    try:
        result = await awaitable
    except Exception:  # noqa: BLE001 - user code must not take the connection down
        _failed(inst, msg, name)
        return
    _send_result(inst, result, msg, name)


def make_on_message(
    events: Mapping[str, Event], unknown: Event | None, reasons: Mapping[str, str] | None = None
) -> OnMessage:
    """The ``on_message`` of an auto-dispatch controller, bound to its event table.

    ``reasons`` (from :func:`not_events`) say why a method of that name is no event: the first
    message naming it logs that reason (the peer gets the usual ``404``; a signature is for the
    developer, not for clients)."""
    why = dict(reasons or {})

    def on_message(self: Controller, data: str | bytes) -> Awaitable[None] | None:
        # PERF: runs for every message: one decode, one lookup, one call; no getattr.
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.write(error_message(400, "invalid JSON", _raw_request(data)))
            return None
        if type(msg) is not dict:
            self.write(error_message(400, "a message must be a JSON object", msg))
            return None
        name = msg.get("event")
        if type(name) is not str:
            self.write(error_message(400, 'no "event" string in the message', msg, _eid(msg)))
            return None
        event = events.get(name, unknown)
        if event is None:
            if name in why:
                _explain_missing(self, name, why)
            self.write(error_message(404, f"no such event: {name}", msg, _eid(msg)))
            return None
        eid = _eid(msg)
        if eid is not None:
            self.write(orjson.dumps({"event": "_ack_", "_EID_": eid}).decode())
        try:
            result = event.func(self, msg)
        except Exception:  # noqa: BLE001 - user code must not take the connection down
            _failed(self, msg, event.name)
            return None
        if event.is_async or inspect.isawaitable(result):
            return _finish(self, result, msg, event.name)
        _send_result(self, result, msg, event.name)
        return None

    on_message.__qualname__ = on_message.__name__ = "on_message"
    return on_message


def _explain_missing(inst: Controller, name: str, reasons: dict[str, str]) -> None:
    """Log, once per method, why a message naming it found no event (with the method's file
    and line: ``def say(self)`` meant as an event is a common slip)."""
    reason = reasons.pop(name)
    func = getattr(type(inst), name, None)
    log.warning(
        '%s: %s.%s: a message {"event": "%s"} found no event; define it as %s(self, msg)',
        where(func) if callable(func) else "<unknown>",
        type(inst).__name__,
        reason,
        name,
        name,
    )


def dispatching_class(
    cls: type[Controller],
    events: Mapping[str, Event],
    unknown: Event | None,
    reasons: Mapping[str, str] | None = None,
) -> type[Controller]:
    """A subclass of ``cls`` whose ``on_message`` dispatches JSON events (``cls`` is unchanged);
    ``reasons`` as for :func:`make_on_message`."""
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
        "on_message": make_on_message(events, unknown, reasons),
    }
    return type(cls.__name__, (cls,), namespace)
