"""What ``route()`` checks in a controller, before any request: callbacks plezi cannot call
(an error), names that look like misspelled callbacks and auto-dispatch methods plezi can never
call (warnings). Each message names the controller's file and line. An auto-dispatch method
that takes no message is a valid HTTP action, so it is explained when a message names it.

pytest turns warnings into errors here (``filterwarnings = error``), so a controller that is
routed outside ``pytest.warns`` also checks that it draws no warning at all.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wsclient import connect

import plezi
from helpers import UNIT, Running
from plezi.web.routes import ControllerRoute

HERE = Path(__file__).name


def line_of(func: Callable[..., Any]) -> int:
    return inspect.getsourcelines(func)[1]


# -- callbacks plezi cannot call: RouteError ---------------------------------------------------


class NoData:
    def on_message(self) -> None: ...


class NeedsMore:
    def on_message(self, data: Any, more: Any) -> None: ...


class OpenWithArgument:
    def on_message(self, data: Any) -> None: ...
    def on_open(self, extra: Any) -> None: ...


class CloseWithTwo:
    def on_message(self, data: Any) -> None: ...
    def on_close(self, a: Any, b: Any) -> None: ...


class ShutdownKeyword:
    def on_message(self, data: Any) -> None: ...
    def on_shutdown(self, *, now: bool) -> None: ...


class PreConnectArgument:
    def on_message(self, data: Any) -> None: ...
    async def pre_connect(self, request: Any) -> bool:
        return True


class DrainedArgument:
    auto_dispatch = True

    def on_drained(self, size: int) -> None: ...


class SseArgument:
    def on_sse(self, stream: Any) -> None: ...


@pytest.mark.parametrize(
    ("cls", "name", "expected"),
    [
        (NoData, "on_message", "on_message(self, data)"),
        (NeedsMore, "on_message", "on_message(self, data)"),
        (OpenWithArgument, "on_open", "on_open(self)"),
        (CloseWithTwo, "on_close", "on_close(self)"),
        (ShutdownKeyword, "on_shutdown", "on_shutdown(self)"),
        (PreConnectArgument, "pre_connect", "pre_connect(self)"),
        (DrainedArgument, "on_drained", "on_drained(self)"),
        (SseArgument, "on_sse", "on_sse(self)"),
    ],
)
def test_a_callback_plezi_cannot_call_is_a_route_error(cls: type, name: str, expected: str) -> None:
    app = plezi.App()
    with pytest.raises(plezi.RouteError) as info:
        app.route("/", cls)
    message = str(info.value)
    assert message.startswith(f"tests/web/{HERE}:{line_of(getattr(cls, name))}: ")
    assert f"{cls.__qualname__}.{name}(" in message
    assert message.endswith(f"define it as {expected}")
    assert "\n" not in message
    assert app.routes == []


def test_every_signature_plezi_can_call_is_accepted() -> None:
    """Optional extras, ``*args``/``**kwargs``, ``async``: no error, no warning."""

    class Flexible:
        def pre_connect(self, msg: Any = None) -> bool:
            return True

        async def on_open(self, *args: Any) -> None: ...
        def on_message(self, data: Any, extra: int = 1, **kw: Any) -> None: ...
        def on_close(self, **kw: Any) -> None: ...
        def on_shutdown(self, *, grace: float = 1.0) -> None: ...
        def on_drained(self, /) -> None: ...

    class Positional:
        def on_message(self, data: Any, /) -> None: ...
        def on_open(*args: Any) -> None: ...

    for cls in (Flexible, Positional):
        route = ControllerRoute("/", cls)
        assert route.is_websocket


# -- misspelled callbacks: PleziWarning ----------------------------------------------------------


def misspelled(name: str, *, with_message: bool = True) -> type:
    """A controller defining ``name`` (and ``on_message`` unless told otherwise)."""

    def method(self: Any, *args: Any) -> None: ...

    namespace: dict[str, Any] = {name: method}
    if with_message and name != "on_message":
        namespace["on_message"] = lambda self, data: None
    return type("Typo", (), namespace)


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("on_mesage", "on_message"),
        ("on_messages", "on_message"),
        ("on_opne", "on_open"),
        ("on_opened", "on_open"),
        ("pre_conect", "pre_connect"),
        ("on_shutdwn", "on_shutdown"),
        ("on_closed", "on_close"),
        ("on_drain", "on_drained"),
        ("onMessage", "on_message"),
        ("onopen", "on_open"),
        ("preconnect", "pre_connect"),
    ],
)
def test_a_name_like_a_misspelled_callback_is_a_warning(
    name: str, meant: str, caplog: pytest.LogCaptureFixture
) -> None:
    cls = misspelled(name, with_message=meant != "on_message")
    with pytest.warns(plezi.PleziWarning) as caught:
        ControllerRoute("/", cls)
    (warning,) = caught
    text = str(warning.message)
    assert text.startswith(f"Typo.{name} is not a plezi callback and is never called")
    assert f"did you mean {meant}?" in text
    # The warning points at the method's own definition ...
    code = getattr(cls, name).__code__
    assert (warning.filename, warning.lineno) == (code.co_filename, code.co_firstlineno)
    # ... and so does the log line (file:line in front).
    (record,) = [r for r in caplog.records if r.name == "plezi"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"tests/web/{HERE}:{code.co_firstlineno}: {text}"


def test_a_misspelled_on_message_says_the_route_takes_no_websocket() -> None:
    with pytest.warns(plezi.PleziWarning, match="accepts no WebSocket connections"):
        route = ControllerRoute("/", misspelled("on_mesage", with_message=False))
    assert not route.is_websocket


@pytest.mark.parametrize(
    "name",
    [
        "on_connect",  # (not close enough to pre_connect to be a typo)
        "on_custom",
        "on_user",
        "on_send",
        "on_error",
        "open",
        "close",
        "message",
        "shutdown",
        "connect",
        "online",
    ],
)
def test_other_names_draw_no_warning(name: str) -> None:
    ControllerRoute("/", misspelled(name))


def test_no_warning_when_the_callback_it_resembles_is_defined_too() -> None:
    class Both:
        def on_message(self, data: Any) -> None: ...
        def on_close(self) -> None: ...
        def on_closed(self) -> None: ...  # a helper next to the real callback
        def on_messages(self) -> None: ...

    ControllerRoute("/", Both)


# -- auto-dispatch methods that cannot be events: PleziWarning ---------------------------------


class Events:
    auto_dispatch = True

    def say(self) -> str:  # no message: an HTTP action, not an event
        return "said"

    def move(self, msg: Any, where: Any) -> None: ...  # needs more than the message

    def keyed(self, msg: Any, *, flag: bool) -> None: ...

    def chat(self, msg: Any) -> Any:
        return {"event": "chat", "text": msg.get("text")}

    def optional(self, msg: Any = None) -> None: ...
    def index(self) -> str:  # a RESTful name: never an event, never warned about
        return "index"

    def _helper(self, a: Any, b: Any) -> None: ...


def test_auto_dispatch_methods_plezi_can_never_call_are_warned_about() -> None:
    with pytest.warns(plezi.PleziWarning) as caught:
        route = ControllerRoute("/", Events)
    messages = {str(w.message).split("(")[0]: w for w in caught}
    # ``say(self)`` is a valid HTTP action: no warning (a message naming it logs why, below).
    assert set(messages) == {"Events.move", "Events.keyed"}
    move = str(messages["Events.move"].message)
    assert move.startswith(
        "Events.move(self, msg, where) needs more than the message, so it is neither an event"
    )
    assert move.endswith("for an event, define move(self, msg); name a helper _move")
    for name in ("move", "keyed"):
        code = getattr(Events, name).__code__
        warning = messages[f"Events.{name}"]
        assert (warning.filename, warning.lineno) == (code.co_filename, code.co_firstlineno)
    assert set(route.events) == {"chat", "optional"}
    assert route.action_for("GET", "say") == "say"  # an HTTP action


def test_no_event_warnings_without_auto_dispatch_or_with_an_own_on_message() -> None:
    class Plain:
        def say(self) -> str:
            return "said"

        def move(self, msg: Any, where: Any) -> None: ...

    class OwnDispatch(Plain):
        auto_dispatch = True

        def on_message(self, data: Any) -> None: ...

    ControllerRoute("/", Plain)
    ControllerRoute("/", OwnDispatch)


def test_a_message_naming_a_non_event_is_a_404_and_the_reason_is_logged_once(
    serve: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    app = plezi.App()
    with pytest.warns(plezi.PleziWarning):
        app.route("/", Events)
    caplog.clear()
    running = serve(app)
    with connect(running.ws_url + "/") as ws:
        for _ in range(2):
            ws.send(json.dumps({"event": "say", "_EID_": 1}))
            reply = json.loads(ws.recv(timeout=5 * UNIT))
            # The peer gets the usual 404: a method's signature is not for clients.
            assert reply["status"] == 404
            assert reply["error"] == "no such event: say"
        ws.send(json.dumps({"event": "chat", "text": "hi"}))
        assert json.loads(ws.recv(timeout=5 * UNIT)) == {"event": "chat", "text": "hi"}
    logged = [r.getMessage() for r in caplog.records if "found no event" in r.getMessage()]
    assert logged == [
        f"tests/web/{HERE}:{line_of(Events.say)}: "
        'Events.say(self) takes no message: a message {"event": "say"} found no event; '
        "define it as say(self, msg)"
    ]
