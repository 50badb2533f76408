"""Auto-dispatch tables, built once at ``route()``, and the dispatcher's replies, without a server.

The wire itself (real WebSockets, HTTP) is tested in ``tests/web/test_auto_dispatch.py``; here
the dispatcher runs against a controller whose ``write`` records what would be sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

import plezi
from helpers import ROOT
from plezi.errors import PleziWarning, RouteError
from plezi.web.client import MODULE_FILE, SCRIPT_FILE, Asset, build_classic, load_asset, module_path
from plezi.web.controller import PLEZI_NAMES
from plezi.web.events import NEVER_EVENTS, takes_one_argument
from plezi.web.routes import CALLBACKS, ControllerRoute

CLIENT_DIR = ROOT / "src" / "plezi" / "web" / "client"


class Base:
    def inherited(self, msg: Any) -> str:
        return "inherited"


class Chat(Base):
    auto_dispatch = True

    def chat(self, msg: Any) -> Any:
        return msg

    def optional(self, msg: Any = None) -> str:  # Ruby arity -1: an event, and an HTTP action
        return "optional"

    def star(self, *args: Any) -> str:
        return "star"

    def one_and_optional(self, msg: Any, extra: int = 1) -> str:  # Ruby arity -2
        return "one_and_optional"

    def zero(self) -> str:  # arity 0: an HTTP action, never an event
        return "zero"

    def two(self, a: Any, b: Any) -> None: ...
    def keyword_required(self, msg: Any, *, flag: bool) -> None: ...
    def _private(self, msg: Any) -> None: ...
    def on_custom(self, msg: Any) -> None: ...
    def index(self) -> str:
        return "index"

    def show(self, msg: Any = None) -> None: ...
    def new(self, msg: Any = None) -> None: ...
    def create(self, msg: Any = None) -> None: ...
    def update(self, msg: Any = None) -> None: ...
    def delete(self, msg: Any = None) -> None: ...
    def pre_connect(self, msg: Any = None) -> None: ...
    def on_open(self, msg: Any = None) -> None: ...
    def on_close(self, msg: Any = None) -> None: ...
    def on_shutdown(self, msg: Any = None) -> None: ...
    def on_drained(self, msg: Any = None) -> None: ...
    def unknown(self, msg: Any) -> str:
        return "unknown"

    def render(self, msg: Any) -> None: ...  # a plezi name, even when redefined

    @staticmethod
    def static(msg: Any) -> None: ...

    @classmethod
    def klass(cls, msg: Any) -> None: ...

    async def later(self, msg: Any) -> str:
        await asyncio.sleep(0)
        return "later"

    not_a_method = "chat"


EVENTS = {"chat", "optional", "star", "one_and_optional", "inherited", "later"}


def chat_route() -> ControllerRoute:
    """``Chat``'s route; its public methods plezi can never call are warned about at
    ``route()`` (see tests/web/test_route_checks.py)."""
    with pytest.warns(PleziWarning) as caught:
        route = ControllerRoute("/", Chat)
    warned = {str(w.message).split("(")[0].removeprefix("Chat.") for w in caught}
    assert warned == {"two", "keyword_required"}
    return route


def test_event_table_follows_plezis_arity_rule_and_exclusions() -> None:
    route = chat_route()
    assert set(route.events) == EVENTS
    assert route.events["later"].is_async
    assert not route.events["chat"].is_async


def test_never_events_cover_callbacks_rest_names_and_plezis_own() -> None:
    route = chat_route()
    for name in (*CALLBACKS, *NEVER_EVENTS, *PLEZI_NAMES):
        assert name not in route.events, name
    # plezi's one-argument helpers, and one of them redefined by the user (``render``).
    for name in ("write", "send_file", "redirect_to", "render", "url_for"):
        assert name not in route.events


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(self, msg): ...", True),
        ("def f(self, msg=None): ...", True),
        ("def f(self, *args): ...", True),
        ("def f(self, msg, more=1, **kw): ...", True),
        ("def f(self, msg, /): ...", True),
        ("def f(self): ...", False),
        ("def f(self, **kw): ...", False),
        ("def f(self, a, b): ...", False),
        ("def f(self, msg, *, k): ...", False),
        ("def f(self, *, k=1): ...", False),
    ],
)
def test_takes_one_argument(source: str, expected: bool) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    assert takes_one_argument(namespace["f"]) is expected


def test_without_auto_dispatch_there_are_no_events() -> None:
    class Plain:
        def chat(self, msg: Any) -> None: ...
        def on_message(self, data: Any) -> None: ...

    route = ControllerRoute("/", Plain)
    assert route.events == {}
    assert route.cls.on_message is Plain.on_message
    assert route.action_for("GET", "chat") is None  # one required argument: no HTTP action


def test_dispatcher_lives_on_a_subclass_and_the_users_class_is_untouched() -> None:
    class Room:
        auto_dispatch = True

        def chat(self, msg: Any) -> None: ...

    class Typed(plezi.Controller):
        auto_dispatch = True

        def chat(self, msg: Any) -> None: ...

    for cls in (Room, Typed):
        route = ControllerRoute("/", cls)
        assert route.is_websocket
        assert "on_message" not in vars(cls) and not hasattr(cls, "on_message")
        assert issubclass(route.cls, cls)
        assert callable(vars(route.cls)["on_message"])
        assert route.cls._pl_route is route
        assert "on_message" not in route.async_names  # sync: returns an awaitable when needed


def test_a_users_own_on_message_wins() -> None:
    class Own:
        auto_dispatch = True

        def on_message(self, data: Any) -> None: ...
        def chat(self, msg: Any) -> None: ...

    route = ControllerRoute("/", Own)
    assert route.cls.on_message is Own.on_message
    assert set(route.events) == {"chat"}  # still reachable over HTTP


def test_http_events_win_for_every_verb_like_plezi() -> None:
    route = chat_route()
    for verb in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        assert route.action_for(verb, "chat") == "chat"
        assert route.action_for(verb, "later") == "later"
    assert route.action_for("GET", "zero") == "zero"
    assert route.action_for("GET", None) == "index"
    assert route.action_for("POST", None) == "create"
    assert route.action_for("GET", "on_custom") == "show"
    assert route.action_for("GET", "_private") == "show"


# -- the dispatcher, with ``write`` recorded ----------------------------------------------------


class Recorder:
    auto_dispatch = True

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def write(self, data: Any) -> bool:
        self.sent.append(data)
        return True

    def chat(self, msg: Any) -> Any:
        return msg.get("reply")

    async def later(self, msg: Any) -> Any:
        await asyncio.sleep(0)
        return {"event": "later", "n": msg["n"]}

    def boom(self, msg: Any) -> None:
        raise RuntimeError("secret detail")


def recorder(cls: type = Recorder) -> Any:
    route = ControllerRoute("/", cls)
    inst = route.cls()
    return inst


def decoded(inst: Any) -> list[Any]:
    return [json.loads(x) if isinstance(x, str) else x for x in inst.sent]


@pytest.mark.parametrize(
    ("reply", "sent"),
    [
        ({"event": "x", "n": [1, 2]}, ['{"event":"x","n":[1,2]}']),
        ([1, "two"], ['[1,"two"]']),
        ("as is", ["as is"]),
        (None, []),
        (True, []),
        (42, []),
    ],
)
def test_return_values(reply: Any, sent: list[Any]) -> None:
    inst = recorder()
    assert inst.on_message(json.dumps({"event": "chat", "reply": reply})) is None
    assert inst.sent == sent


def test_ack_comes_first_and_echoes_the_eid_exactly() -> None:
    inst = recorder()
    inst.on_message('{"event": "chat", "_EID_": 17, "reply": "r"}')
    assert inst.sent == ['{"event":"_ack_","_EID_":17}', "r"]


def test_async_event_returns_an_awaitable_that_sends_the_result() -> None:
    inst = recorder()
    pending = inst.on_message('{"event": "later", "n": 3, "_EID_": "a"}')
    assert inst.sent == ['{"event":"_ack_","_EID_":"a"}']
    asyncio.run(pending)
    assert decoded(inst)[1] == {"event": "later", "n": 3}


def test_errors_never_leak_exception_text(caplog: pytest.LogCaptureFixture) -> None:
    inst = recorder()
    inst.on_message('{"event": "boom", "_EID_": 1}')
    ack, err = decoded(inst)
    assert ack == {"event": "_ack_", "_EID_": 1}
    assert err["status"] == 500 and err["_EID_"] == 1
    assert "secret" not in json.dumps(err)
    assert "secret detail" in caplog.text


def test_unknown_is_the_fallback_and_is_acked() -> None:
    class WithUnknown(Recorder):
        def unknown(self, msg: Any) -> Any:
            return {"event": "unknown", "was": msg["event"]}

    inst = recorder(WithUnknown)
    inst.on_message('{"event": "nope", "_EID_": 2}')
    assert decoded(inst) == [{"event": "_ack_", "_EID_": 2}, {"event": "unknown", "was": "nope"}]


# -- the browser client's files ------------------------------------------------------------------


def test_classic_build_is_current() -> None:
    module = (CLIENT_DIR / MODULE_FILE).read_text(encoding="utf-8")
    assert (CLIENT_DIR / SCRIPT_FILE).read_text(encoding="utf-8") == build_classic(module)
    check = subprocess.run(
        [sys.executable, "-m", "plezi.web.client", "--check"], capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stderr


def test_classic_build_refuses_module_syntax_it_cannot_translate() -> None:
    ok = "export class PleziClient {}\nexport function f() {}\nexport default PleziClient;\n"
    built = build_classic(ok)
    assert "export" not in built.split("\n", 2)[2]
    assert "PleziClient.f = f;" in built and "root.PleziClient = PleziClient;" in built
    with pytest.raises(ValueError, match="import"):
        build_classic('import x from "y";\n' + ok)
    with pytest.raises(ValueError, match="export"):
        build_classic(ok + "export { f as g };\n")
    with pytest.raises(ValueError, match="PleziClient"):
        build_classic("export class Other {}\n")


def test_assets_and_etags() -> None:
    asset = load_asset(SCRIPT_FILE)
    assert asset.body == (CLIENT_DIR / SCRIPT_FILE).read_bytes()
    assert load_asset(MODULE_FILE).etag != asset.etag
    assert asset.matches(asset.etag)
    assert asset.matches(f'W/"other", W/{asset.etag}')
    assert asset.matches("*")
    assert not asset.matches('"other"')
    assert not asset.matches("")
    assert Asset.of(b"x").etag == Asset.of(b"x").etag != Asset.of(b"y").etag


def test_module_path() -> None:
    assert module_path("/client.js") == "/client.mjs"
    assert module_path("/assets/plezi.js") == "/assets/plezi.mjs"
    assert module_path("/plezi/") == "/plezi.mjs"
    with pytest.raises(RouteError):
        module_path("/")


def test_client_route_adds_both_builds_and_refuses_other_names() -> None:
    app = plezi.App()
    first = app.route("/client.js", "client")
    assert app.routes == [first, app.routes[1]]
    assert first.pattern.match("/client.js") == {}
    assert app.routes[1].pattern.match("/client.mjs") == {}
    assert app.routes[1].pattern.match("/client.js") is None
    with pytest.raises(RouteError):
        app.route("/x", "nothing")
