"""The route table as text: what ``plezi routes SCRIPT.py`` prints.

For each route, in the order requests try them: the path pattern and the controller, then one
line per way in. The HTTP lines come from asking the route itself which method answers each verb
(:meth:`~plezi.web.routes.ControllerRoute.action_for`), so the listing cannot drift from the router.
Auto-dispatch JSON events answer HTTP too (any verb, the request's params as the message) unless
the controller sets ``http_events = False``; the listing says which.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .app import App
    from .routes import ControllerRoute

__all__ = ["route_table"]

_VERBS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: An ``id`` that names no method: where ``show``, ``update`` and ``delete`` answer.
_ANY_ID: Final = "\0id"
_USER_ID: Final = re.compile(r":id\b")


def route_table(app: App) -> str:
    """The routes of ``app``, one block per route, as text ending in a newline."""
    if not app.routes:
        return "no routes\n"
    return "\n".join(_block(route) for route in app.routes)


def _block(route: ControllerRoute) -> str:
    rows = [*_http_rows(route), *_connection_rows(route)]
    width = max(len(path) for _verbs, path, _what in rows)
    lines = [f"{route.pattern.path}  {_controller_name(route)}"]
    lines += [f"  {verbs:<14} {path:<{width}}  {what}".rstrip() for verbs, path, what in rows]
    return "\n".join(lines) + "\n"


def _controller_name(route: ControllerRoute) -> str:
    cls = route.controller
    module = cls.__module__
    if module == "__main__":  # the script's own classes: name them after the script
        from ..mainscript import main_file

        main = main_file()
        module = os.path.splitext(os.path.basename(main))[0] if main else module
    return f"{module}.{cls.__qualname__}"


def _http_events(route: ControllerRoute) -> bool:
    return bool(getattr(route.cls, "http_events", True))


def _http_rows(route: ControllerRoute) -> list[tuple[str, str, str]]:
    """``(verbs, path, action)`` for every action HTTP reaches, in a stable order."""
    ids: list[str | None] = [None]
    if "id" in route.pattern.names:  # (a pattern ending in a `*` tail has no id)
        ids += sorted({*(n for n in route.get_map if n is not None), *route.events})
        ids.append(_ANY_ID)
    reached: dict[tuple[str | None, str], list[str]] = {}
    for id_ in ids:
        for verb in _VERBS:
            action = route.action_for(verb, id_)
            if action is None or (action in route.events and not _http_events(route)):
                continue
            if id_ not in (None, _ANY_ID) and action != id_:
                continue  # /users/profile reaching `create` on POST: the :id line says so
            reached.setdefault((id_, action), []).append(verb)
    return [
        (_verbs(verbs), _path(route, id_), _action(route, action))
        for (id_, action), verbs in reached.items()
    ]


def _verbs(verbs: list[str]) -> str:
    if len(verbs) == len(_VERBS):
        return "ANY"
    return "|".join(verbs)


def _action(route: ControllerRoute, action: str) -> str:
    if action in route.events:
        return f"{action}  (JSON event over HTTP too: http_events = False turns that off)"
    return action


def _path(route: ControllerRoute, id_: str | None) -> str:
    """The path a request takes to reach ``id_`` (``None``: no id; :data:`_ANY_ID`: any)."""
    path = route.pattern.path
    if id_ is None:
        return path
    shown = ":id" if id_ == _ANY_ID else id_
    if _USER_ID.search(path):  # the pattern names the id itself: say what it is
        return f"{path}  (id = {shown})"
    return f"{path.rstrip('/')}/{shown}"


def _connection_rows(route: ControllerRoute) -> list[tuple[str, str, str]]:
    path = route.pattern.path
    if route.is_websocket:
        callbacks = ("pre_connect", "on_open", "on_message", "on_close")
        present = [name for name in callbacks if name in route.methods]
        what = "yes" + (f" ({', '.join(present)})" if present else "")
        if route.events:
            where = "" if _http_events(route) else " (WebSocket only: http_events = False)"
            what += f"; JSON events: {', '.join(sorted(route.events))}{where}"
        ws = ("WebSocket", path, what)
    else:
        ws = ("WebSocket", path, "no (no on_message, no auto_dispatch)")
    sse = ("SSE", path, "yes" if route.is_sse else "no")
    return [ws, sse]
