"""HTTP through a real server: RESTful routing, return values, controller helpers, connections.

Every test builds its own :class:`plezi.App`, serves it on port 0 in a thread and talks to it
over real sockets: httpx for ordinary requests, :class:`rawhttp.RawHTTP` where the exact bytes
on the wire or the connection itself matter (keep-alive, pipelining, chunked bodies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rawhttp import RawHTTP, request_bytes

import plezi
from helpers import UNIT, Running, app_of, loop_turns
from plezi.http import templates


class Site:
    """A served app plus an httpx client for it."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.http = httpx.Client(base_url=running.url, trust_env=False, timeout=5 * UNIT)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def raw(self) -> RawHTTP:
        return RawHTTP(self.running.port)


@pytest.fixture
def site(serve: Callable[..., Running]) -> Iterator[Callable[..., Site]]:
    """``site(app, **limits)``: serve ``app`` and get a client for it."""
    sites: list[Site] = []

    def start(app: plezi.App, **limits: Any) -> Site:
        s = Site(serve(app, **limits))
        sites.append(s)
        return s

    yield start
    for s in sites:
        s.http.close()


# -- 1. routing and RESTful verbs ----------------------------------------------------------


class Users:
    def index(self) -> str:
        return "index"

    def new(self) -> str:
        return "new"

    def show(self) -> str:
        return f"show {self.params['id']}"  # type: ignore[attr-defined]

    def create(self) -> str:
        return "create"

    def update(self) -> str:
        return f"update {self.params['id']}"  # type: ignore[attr-defined]

    def delete(self) -> str:
        return f"delete {self.params['id']}"  # type: ignore[attr-defined]

    def profile(self) -> str:
        return "profile"


REST_TABLE = [
    ("GET", "/users", "index"),
    ("GET", "/users/", "index"),
    ("GET", "/users/new", "new"),
    ("GET", "/users/42", "show 42"),
    ("GET", "/users/42/", "show 42"),
    ("GET", "/users/profile", "profile"),
    ("POST", "/users", "create"),
    ("PUT", "/users/42", "update 42"),
    ("PATCH", "/users/42", "update 42"),
    ("PUT", "/users", "create"),  # Plezi: PUT without an id creates
    ("PATCH", "/users/new", "create"),
    ("DELETE", "/users/42", "delete 42"),
    ("GET", "/users/caf%C3%A9", "show caf\u00e9"),
    ("GET", "/users/a+b", "show a+b"),  # a path is not form data: "+" stays a plus
]


@pytest.mark.parametrize(("method", "path", "expected"), REST_TABLE)
def test_restful_verbs_reach_their_actions(
    site: Callable[..., Site], method: str, path: str, expected: str
) -> None:
    s = site(app_of(("/users", Users)))
    r = s.request(method, path)
    assert (r.status_code, r.text) == (200, expected)


def test_method_override_is_honoured_on_post_only(site: Callable[..., Site]) -> None:
    deleted: list[str] = []

    class Items:
        def show(self) -> str:
            return "show"

        def update(self) -> str:
            return "update"

        def delete(self) -> str:
            deleted.append(self.params["id"])  # type: ignore[attr-defined]
            return "deleted"

    s = site(app_of(("/items", Items)))
    # A link (GET) carrying _method=delete must never delete.
    r = s.get("/items/7", params={"_method": "delete"})
    assert (r.status_code, r.text, deleted) == (200, "show", [])
    r = s.request("DELETE", "/items/7", params={"_method": "get"})
    assert (r.text, deleted) == ("deleted", ["7"])
    assert s.request("POST", "/items/7", data={"_method": "delete"}).text == "deleted"
    assert s.request("POST", "/items/7", data={"_method": "PUT"}).text == "update"
    assert s.request("POST", "/items/7", json={"_method": "patch"}).text == "update"
    assert deleted == ["7", "7"]


class Spy:
    """Defines every kind of name that must never be an HTTP action."""

    calls: list[str]

    def index(self) -> str:
        return "index"

    def _private(self) -> str:
        self.calls.append("_private")
        return "private"

    def pre_connect(self) -> str:
        self.calls.append("pre_connect")
        return "pre_connect"

    def on_open(self) -> str:
        self.calls.append("on_open")
        return "on_open"

    def on_close(self) -> str:
        self.calls.append("on_close")
        return "on_close"

    def on_shutdown(self) -> str:
        self.calls.append("on_shutdown")
        return "on_shutdown"

    def on_drained(self) -> str:
        self.calls.append("on_drained")
        return "on_drained"

    def unknown(self) -> str:
        self.calls.append("unknown")
        return "unknown"

    def needs_argument(self, value: str) -> str:
        self.calls.append("needs_argument")
        return value


HIDDEN = [
    "_private",
    "__init__",
    "__class__",
    "pre_connect",
    "on_open",
    "on_close",
    "on_shutdown",
    "on_drained",
    "unknown",
    "needs_argument",
    "index",
    # plezi's own names
    "write",
    "close",
    "redirect_to",
    "url_for",
    "render",
    "send_file",
    "params",
    "cookies",
    "response",
    "request",
]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PUT"])
def test_callbacks_private_and_plezi_names_are_never_actions(
    site: Callable[..., Site], method: str
) -> None:
    calls: list[str] = []
    spy = type("Spy", (Spy,), {"calls": calls})
    s = site(app_of(("/spy", spy)))
    for name in HIDDEN:
        r = s.request(method, f"/spy/{name}")
        assert r.status_code == 404, (name, r.status_code, r.text)
    assert calls == []
    assert s.get("/spy").text == "index"


def test_plain_class_and_controller_subclass_with_init_seeing_params(
    site: Callable[..., Site],
) -> None:
    class Plain:
        def __init__(self) -> None:
            self.greeting = f"plain {self.params.get('id')}"  # type: ignore[attr-defined]

        def show(self) -> str:
            return self.greeting

    class Typed(plezi.Controller):
        def __init__(self) -> None:
            self.greeting = f"typed {self.params.get('id')} {self.request.method}"

        def show(self) -> str:
            return self.greeting

    s = site(app_of(("/plain", Plain), ("/typed", Typed)))
    assert s.get("/plain/5").text == "plain 5"
    assert s.get("/typed/6").text == "typed 6 GET"


def test_fall_through_to_the_next_route_then_404(site: Callable[..., Site]) -> None:
    class First:
        def index(self) -> None:
            self.params["leak"] = "from first"  # type: ignore[attr-defined]
            return None

        def create(self) -> bool:
            return False

        def update(self) -> str:
            return "first update"

    class Second:
        def index(self) -> str:
            return f"second index, leak={self.params.get('leak', 'none')}"  # type: ignore[attr-defined]

        def show(self) -> str:  # First has no show: no matching method falls through too
            return "second show"

        def create(self) -> str:
            return "second create"

    class Third:
        def index(self) -> None:
            return None

    s = site(app_of(("/x", First), ("/x", Second), ("/y", Third)))
    # a handler changing params and falling through does not change what the next route sees
    assert s.get("/x", params={"a": "1"}).text == "second index, leak=none"
    assert s.get("/x").text == "second index, leak=none"
    assert s.get("/x/5").text == "second show"
    assert s.request("POST", "/x").text == "second create"
    assert s.request("PUT", "/x/5").text == "first update"
    r = s.get("/y")
    assert (r.status_code, r.text.strip()) == (404, "Not Found")
    assert s.get("/nothing/here").status_code == 404
    # /x/5 matched, but no route answers DELETE there: 405, with the verbs they do answer.
    r = s.request("DELETE", "/x/5")
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD, POST, PUT, PATCH")


def test_async_actions_and_async_fall_through(site: Callable[..., Site]) -> None:
    class Maybe:
        async def index(self) -> str | None:
            await asyncio.sleep(0)
            return None if self.params.get("skip") else "async index"  # type: ignore[attr-defined]

        async def show(self) -> dict[str, str]:
            await asyncio.sleep(0)
            return {"id": self.params["id"]}  # type: ignore[attr-defined]

    class Fallback:
        def index(self) -> str:
            return "sync fallback"

    s = site(app_of(("/m", Maybe), ("/m", Fallback)))
    assert s.get("/m").text == "async index"
    assert s.get("/m", params={"skip": "1"}).text == "sync fallback"
    assert s.get("/m/9").json() == {"id": "9"}


ROUTE_TABLE: list[tuple[str, str, int, Any]] = [
    # (pattern, request path, status, params the action saw (JSON) or None)
    ("/posts/(:id)/(:format)", "/posts", 200, {}),
    ("/posts/(:id)/(:format)", "/posts/5", 200, {"id": "5"}),
    ("/posts/(:id)/(:format)", "/posts/5/json", 200, {"id": "5", "format": "json"}),
    ("/posts/(:id)/(:format)", "/posts/5/json/x", 404, None),
    ("/u/:user/items", "/u/bob/items", 200, {"user": "bob"}),
    ("/u/:user/items", "/u/bob/items/3", 200, {"user": "bob", "id": "3"}),
    ("/u/:user/items", "/u/items", 404, None),
    ("/u/:user/items", "/u//items", 404, None),
    ("/files/*", "/files", 200, {}),
    ("/files/*", "/files/a/b/c", 200, {"*": "a/b/c"}),
    ("/n/:id{[0-9]+}", "/n/12", 200, {"id": "12"}),
    ("/n/:id{[0-9]+}", "/n/ab", 404, None),
    ("/n/:id{[0-9]+}", "/n/12/", 200, {"id": "12"}),
    ("/seg/:name", "/seg/a%2Fb", 200, {"name": "a/b"}),
    ("/seg/:name", "/seg/a/b", 200, {"name": "a", "id": "b"}),
    ("/seg/:name", "/seg/x/../y", 200, {"name": "y"}),
    ("/seg/:name", "//seg//y", 200, {"name": "y"}),
    ("/seg/:name", "/seg/%2E%2E", 404, None),  # ".." resolved: "/" is left, no route there
]


@pytest.mark.parametrize(("pattern", "path", "status", "expected"), ROUTE_TABLE)
def test_route_parameters(
    site: Callable[..., Site], pattern: str, path: str, status: int, expected: Any
) -> None:
    class Echo:
        def index(self) -> dict[str, Any]:
            return dict(self.params)  # type: ignore[attr-defined]

        def show(self) -> dict[str, Any]:
            return dict(self.params)  # type: ignore[attr-defined]

    s = site(app_of((pattern, Echo)))
    with s.raw() as conn:  # raw: httpx would normalize the path before sending it
        r = conn.request("GET", path)
    assert r.status == status, r
    if expected is not None:
        assert json.loads(r.body) == expected


@pytest.mark.parametrize("path", ["/..", "/../users", "/users/../../x", "/%2e%2e/x", "/%2E%2E"])
def test_dot_dot_above_the_root_is_400(site: Callable[..., Site], path: str) -> None:
    s = site(app_of(("/users", Users)))
    with s.raw() as conn:
        r = conn.request("GET", path)
        assert r.status == 400
        assert conn.request("GET", "/users/../users/1").body == b"show 1"  # connection still fine


# -- 2. return values ----------------------------------------------------------------------


class Returns:
    def index(self) -> str:
        return "<p>caf\u00e9</p>"

    def raw(self) -> bytes:
        return b"\x00\x01\xff"

    def mapping(self) -> dict[str, Any]:
        return {"a": 1, "b": [True, None]}

    def sequence(self) -> list[int]:
        return [1, 2, 3]

    def built(self) -> bool:
        response = self.response  # type: ignore[attr-defined]
        response.status = 201
        response.headers["X-Made"] = "yes"
        response.headers["Content-Type"] = "text/plain"
        response.body = b"made"
        return True

    def empty(self) -> bool:
        return True

    def typed_bytes(self) -> bytes:
        self.response.headers["content-type"] = "image/png"  # type: ignore[attr-defined]
        return b"PNG"

    def number(self) -> int:
        return 42

    def boom(self) -> str:
        raise RuntimeError("the secret database password is hunter2")

    async def async_boom(self) -> str:
        await asyncio.sleep(0)
        raise RuntimeError("async secret hunter2")

    def bad_header(self) -> str:
        self.response.headers["X-Evil"] = "a\r\nSet-Cookie: pwned=1"  # type: ignore[attr-defined]
        return "never"


RETURN_TABLE = [
    ("/r", 200, "text/html; charset=utf-8", "<p>caf\u00e9</p>".encode()),
    ("/r/raw", 200, "application/octet-stream", b"\x00\x01\xff"),
    ("/r/mapping", 200, "application/json", b'{"a":1,"b":[true,null]}'),
    ("/r/sequence", 200, "application/json", b"[1,2,3]"),
    ("/r/built", 201, "text/plain", b"made"),
    ("/r/typed_bytes", 200, "image/png", b"PNG"),
]


@pytest.mark.parametrize(("path", "status", "ctype", "body"), RETURN_TABLE)
def test_return_values(
    site: Callable[..., Site], path: str, status: int, ctype: str, body: bytes
) -> None:
    s = site(app_of(("/r", Returns)))
    r = s.get(path)
    assert (r.status_code, r.headers["content-type"], r.content) == (status, ctype, body)
    assert r.headers["content-length"] == str(len(body))
    if path == "/r/built":
        assert r.headers["x-made"] == "yes"


def test_true_with_an_untouched_response_is_an_empty_200(site: Callable[..., Site]) -> None:
    s = site(app_of(("/r", Returns)))
    r = s.get("/r/empty")
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize("path", ["/r/number", "/r/boom", "/r/async_boom", "/r/bad_header"])
def test_errors_are_500_without_details_and_the_server_goes_on(
    site: Callable[..., Site], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.ERROR, logger="plezi")
    s = site(app_of(("/r", Returns)))
    with s.raw() as conn:
        r = conn.request("GET", path)
        assert r.status == 500
        assert b"hunter2" not in r.body and b"Error" in r.body
        assert b"pwned" not in r.body and r.header("set-cookie") is None
        assert conn.request("GET", "/r/sequence").body == b"[1,2,3]"  # same connection
    assert s.get("/r/mapping").status_code == 200
    assert any(rec.levelno == logging.ERROR for rec in caplog.records if rec.name == "plezi")


@pytest.mark.parametrize(
    ("path", "status"), [("/r", 200), ("/r/mapping", 200), ("/r/boom", 500), ("/nope", 404)]
)
def test_head_gets_headers_and_no_body(
    site: Callable[..., Site], caplog: pytest.LogCaptureFixture, path: str, status: int
) -> None:
    s = site(app_of(("/r", Returns)))
    with s.raw() as conn:
        get = conn.request("GET", path)
        head = conn.request("HEAD", path)
        # Any body after the HEAD reply would be read here as the start of the next response.
        after = conn.request("GET", "/r/sequence")
    assert (get.status, head.status) == (status, status)
    assert head.header("content-length") == str(len(get.body))
    assert head.header("content-type") == get.header("content-type")
    assert after.body == b"[1,2,3]"


# -- 3. helpers ----------------------------------------------------------------------------


class ParamsEcho:
    def index(self) -> dict[str, Any]:
        return dict(self.params)  # type: ignore[attr-defined]

    def create(self) -> dict[str, Any]:
        return dict(self.params)  # type: ignore[attr-defined]

    def update(self) -> dict[str, Any]:
        return dict(self.params)  # type: ignore[attr-defined]


def test_params_merge_path_query_and_form_with_path_winning(site: Callable[..., Site]) -> None:
    s = site(app_of(("/p/:name", ParamsEcho)))
    r = s.request(
        "POST",
        "/p/from-path",
        params={"q": "1", "name": "from-query", "both": "query"},
        data={"f": "2", "name": "from-form", "both": "form", "a[b]": "1", "a[c]": "2"},
    )
    assert r.json() == {
        "name": "from-path",
        "q": "1",
        "f": "2",
        "both": "form",
        "a": {"b": "1", "c": "2"},
    }


def test_params_from_a_json_body(site: Callable[..., Site]) -> None:
    s = site(app_of(("/p/:name", ParamsEcho)))
    r = s.request("PUT", "/p/path/7", params={"q": "x"}, json={"name": "json", "n": [1, {"k": 2}]})
    assert r.json() == {"name": "path", "id": "7", "q": "x", "n": [1, {"k": 2}]}
    r = s.request("POST", "/p/path", json=[1, 2])
    assert r.json() == {"name": "path", "_json": [1, 2]}
    r = s.request(
        "POST", "/p/path", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_params_rack_nesting_from_the_query(site: Callable[..., Site]) -> None:
    s = site(app_of(("/p", ParamsEcho)))
    r = s.get("/p?user[name]=ann&user[langs][]=py&user[langs][]=rb&list[][x]=1&list[][x]=2")
    assert r.json() == {
        "user": {"name": "ann", "langs": ["py", "rb"]},
        "list": [{"x": "1"}, {"x": "2"}],
    }
    assert s.get("/p?a=1&a[b]=2").status_code == 400  # conflicting types


def test_cookies_read_set_and_delete(site: Callable[..., Site]) -> None:
    class Jar:
        def index(self) -> str:
            return self.cookies.get("seen", "nothing")  # type: ignore[attr-defined, no-any-return]

        def login(self) -> str:
            self.cookies.set("sid", "a b;c", httponly=True, max_age=60)  # type: ignore[attr-defined]
            self.cookies["plain"] = "1"  # type: ignore[attr-defined]
            return f"now {self.cookies['sid']}"  # type: ignore[attr-defined]

        def logout(self) -> str:
            del self.cookies["sid"]  # type: ignore[attr-defined]
            return f"left {sorted(self.cookies)}"  # type: ignore[attr-defined]

    s = site(app_of(("/jar", Jar)))
    assert s.get("/jar", headers={"Cookie": "seen=yes%21; other=1"}).text == "yes!"
    r = s.get("/jar/login")
    assert r.text == "now a b;c"
    set_cookies = r.headers.get_list("set-cookie")
    sid = next(c for c in set_cookies if c.startswith("sid="))
    attributes = {part.strip().split("=")[0] for part in sid.split(";")}
    assert {"HttpOnly", "Max-Age", "Path", "SameSite"} <= attributes
    assert "Max-Age=60" in sid and ";c" not in sid.split(";")[0]
    assert any(c.startswith("plain=1") for c in set_cookies)
    # the client's jar sends them back, decoded by the server
    assert s.http.cookies.get("sid") is not None
    r = s.get("/jar/logout")
    assert r.text == "left ['plain']"
    gone = r.headers["set-cookie"]
    assert gone.startswith("sid=;") and "Max-Age=0" in gone
    assert s.http.cookies.get("sid") is None


def test_redirect_to(site: Callable[..., Site]) -> None:
    class Go:
        def index(self) -> bool:
            return self.redirect_to("/elsewhere")  # type: ignore[attr-defined, no-any-return]

        def forever(self) -> bool:
            return self.redirect_to("https://example.com/x", 301)  # type: ignore[attr-defined, no-any-return]

    s = site(app_of(("/go", Go)))
    r = s.get("/go")
    assert (r.status_code, r.headers["location"], r.content) == (302, "/elsewhere", b"")
    r = s.get("/go/forever")
    assert (r.status_code, r.headers["location"]) == (301, "https://example.com/x")


def test_url_for(site: Callable[..., Site]) -> None:
    class Things:
        def index(self) -> list[str]:
            u = self.url_for  # type: ignore[attr-defined]
            return [u(), u("new"), u(id=5), u("show", id=5), u(id=5, page=2), u("profile")]

        def profile(self) -> str:
            return "profile"

    class Posts:
        def index(self) -> list[str]:
            u = self.url_for  # type: ignore[attr-defined]
            return [u(id=5, format="json"), u(format="json"), u(id="a b", q=["x", "y"])]

    s = site(app_of(("/things", Things), ("/posts/(:id)/(:format)", Posts)))
    assert s.get("/things").json() == [
        "/things",
        "/things/new",
        "/things/5",
        "/things/5",
        "/things/5?page=2",
        "/things/profile",
    ]
    assert s.get("/posts").json() == ["/posts/5/json", "/posts", "/posts/a%20b?q=x&q=y"]
    assert s.get("/things/profile").text == "profile"  # the URLs built are the ones that route


@pytest.fixture
def template_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Templates read from ``tmp_path``; the previous folder is restored afterwards."""
    monkeypatch.setattr(templates, "_folder", templates._folder)
    monkeypatch.setattr(templates, "_env", templates._env)
    templates.set_templates(str(tmp_path))
    return tmp_path


def test_render_templates(
    site: Callable[..., Site], template_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (template_dir / "page.html").write_text("<h1>{{ title }}</h1>{{ params['id'] }}")
    (template_dir / "page.json").write_text('{"title": "{{ title }}"}')
    (template_dir / "broken.xml").write_text('{% include "gone.xml" %}')

    class Pages:
        def show(self) -> str | None:
            name = "broken" if self.params["id"] == "broken" else "page"  # type: ignore[attr-defined]
            return self.render(name, title="<b>&</b>")  # type: ignore[attr-defined, no-any-return]

        def index(self) -> str | None:
            return self.render("missing")  # type: ignore[attr-defined, no-any-return]

    class Fallback:
        def index(self) -> str:
            return "never reached: a missing template is an error, not a fall-through"

    s = site(app_of(("/pages/(:id)/(:format)", Pages), ("/pages", Fallback)))
    r = s.get("/pages/1")
    assert r.text == "<h1>&lt;b&gt;&amp;&lt;/b&gt;</h1>1"  # HTML is autoescaped
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert s.get("/pages/1/json").text == '{"title": "<b>&</b>"}'
    with caplog.at_level(logging.ERROR, logger="plezi"):
        assert s.get("/pages").status_code == 500
    first_line = caplog.records[-1].getMessage()
    assert f"'missing.html' not found in {template_dir}" in first_line
    # A format the client asked for that has no template falls through (here: to a 404).
    assert s.get("/pages/1/txt").status_code == 404
    assert s.get("/pages/1/..%2F..%2Fsecret").status_code == 404
    # A template that exists but includes a missing one is the app's error, whatever the format.
    with caplog.at_level(logging.ERROR, logger="plezi"):
        assert s.get("/pages/broken/xml").status_code == 500
    assert "'gone.xml' (included by 'broken.xml') not found in" in caplog.records[-1].getMessage()


def test_send_file(site: Callable[..., Site], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("caf\u00e9 notes")
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")

    class Files:
        def show(self) -> bool:
            return self.send_file(str(tmp_path / self.params["id"]))  # type: ignore[attr-defined, no-any-return]

    s = site(app_of(("/f", Files)))
    r = s.get("/f/notes.txt")
    assert (r.status_code, r.text) == (200, "caf\u00e9 notes")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    r = s.get("/f/data.bin")
    assert (r.content, r.headers["content-type"]) == (b"\x00\x01", "application/octet-stream")
    assert s.get("/f/missing.txt").status_code == 404
    # Conditional and range requests, as for the public folder's files.
    etag = s.get("/f/notes.txt").headers["etag"]
    again = s.get("/f/notes.txt", headers={"if-none-match": etag})
    assert (again.status_code, again.content) == (304, b"")
    part = s.get("/f/notes.txt", headers={"range": "bytes=0-2"})
    assert (part.status_code, part.content) == (206, b"caf")
    assert s.get("/f/notes.txt", headers={"range": "bytes=99-"}).status_code == 416


# -- 4. connections: keep-alive, close, pipelining, chunked bodies -------------------------


class Conn:
    hits: list[str]

    def index(self) -> str:
        self.hits.append("index")
        return "index"

    def show(self) -> str:
        self.hits.append(self.params["id"])  # type: ignore[attr-defined]
        return f"show {self.params['id']}"  # type: ignore[attr-defined]

    async def slow(self) -> str:
        await loop_turns()  # not ready at once: the requests pipelined behind it must wait
        self.hits.append("slow")
        return "slow"

    async def slow_none(self) -> None:
        await loop_turns()
        return None

    def create(self) -> dict[str, Any]:
        return {"body": self.request.body.decode(), "params": dict(self.params)}  # type: ignore[attr-defined]


class Echo:
    def on_message(self, data: Any) -> None:
        self.write(data)  # type: ignore[attr-defined]


def conn_app() -> tuple[plezi.App, list[str]]:
    hits: list[str] = []
    app = app_of(("/ws", Echo), ("/", type("Conn", (Conn,), {"hits": hits})))
    return app, hits


def test_keep_alive_serves_several_requests_on_one_socket(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app)
    with s.raw() as conn:
        for n in range(5):
            r = conn.request("GET", f"/{n}")
            assert (r.status, r.body, r.header("connection")) == (200, f"show {n}".encode(), None)
        assert conn.request("GET", "/slow").body == b"slow"
        assert conn.request("GET", "/").body == b"index"


@pytest.mark.parametrize("path", ["/1", "/slow"])
def test_connection_close_is_honoured(site: Callable[..., Site], path: str) -> None:
    app, hits = conn_app()
    s = site(app, keepalive_timeout=30 * UNIT)
    with s.raw() as conn:
        # A request pipelined after "Connection: close" must not be processed at all.
        conn.send(request_bytes("GET", path, close=True) + request_bytes("GET", "/2"))
        r = conn.read_response()
        assert r.status == 200 and r.header("connection") == "close"
        # closed right after the reply, not at the keep-alive timeout
        assert conn.rest_until_closed(5 * UNIT) == b""
    assert "2" not in hits


def test_http_1_0_closes_by_default_and_may_keep_alive(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app, keepalive_timeout=30 * UNIT)
    with s.raw() as conn:
        conn.send(b"GET /1 HTTP/1.0\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.header("connection")) == (200, "close")
        assert conn.rest_until_closed() == b""
    with s.raw() as conn:
        conn.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert conn.read_response().body == b"show 1"
        conn.send(b"GET /2 HTTP/1.0\r\n\r\n")
        assert conn.read_response().body == b"show 2"
        assert conn.rest_until_closed() == b""


@pytest.mark.parametrize(
    "paths",
    [
        ["/1", "/2", "/3", "/4"],
        ["/1", "/slow", "/2", "/3"],
        ["/slow", "/1", "/slow", "/2"],
        ["/slow_none", "/1", "/slow"],  # async fall-through to 404 in the middle
    ],
)
def test_pipelined_replies_keep_request_order(site: Callable[..., Site], paths: list[str]) -> None:
    app, hits = conn_app()
    s = site(app)
    expected = {"/slow": b"slow", "/slow_none": b"Not Found\n"}
    with s.raw() as conn:
        conn.send(b"".join(request_bytes("GET", p) for p in paths))
        bodies = [conn.read_response().body for _ in paths]
        assert bodies == [expected.get(p, f"show {p[1:]}".encode()) for p in paths]
        assert conn.request("GET", "/9").body == b"show 9"  # and the connection goes on
    assert hits == [p[1:] for p in paths if p != "/slow_none"] + ["9"]


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_upgrade_pipelined_behind_an_async_reply_waits_for_it(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app)
    with s.raw() as conn:
        conn.send(
            request_bytes("GET", "/slow")
            + request_bytes("GET", "/1")
            + request_bytes("GET", "/ws", UPGRADE)
        )
        assert conn.read_response().body == b"slow"
        assert conn.read_response().body == b"show 1"
        switch = conn.read_response()
        assert switch.status == 101
        assert switch.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        conn.send(_masked_text_frame("hi"))
        while len(conn.buf) < 4:
            assert conn._fill()
        assert conn.buf[:4] == b"\x81\x02hi"


def test_a_bad_request_pipelined_behind_an_async_reply_comes_after_it(
    site: Callable[..., Site],
) -> None:
    app, _ = conn_app()
    s = site(app)
    with s.raw() as conn:
        conn.send(request_bytes("GET", "/slow") + request_bytes("GET", "/1") + b"NOT HTTP\r\n\r\n")
        assert conn.read_response().body == b"slow"
        assert conn.read_response().body == b"show 1"
        assert conn.read_response().status == 400
        assert conn.rest_until_closed() == b""


def test_chunked_request_bodies_are_reassembled(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app)
    chunks = [b'{"name": ', b'"chunky", ', b'"n": [1, 2]}']
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with s.raw() as conn:
        conn.send(
            request_bytes(
                "POST",
                "/?q=1",
                {"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
            )
        )
        for i in range(0, len(body), 7):  # the body trickles in, split mid-chunk
            conn.send(body[i : i + 7])
        r = conn.read_response()
        assert json.loads(r.body) == {
            "body": b"".join(chunks).decode(),
            "params": {"name": "chunky", "n": [1, 2], "q": "1"},
        }
        # a form body, chunked, with a chunk extension
        form = b"5;ext=1\r\na=1&b\r\n4\r\n[]=2\r\n0\r\n\r\n"
        conn.send(
            request_bytes(
                "POST",
                "/",
                {
                    "Transfer-Encoding": "chunked",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            + form
        )
        assert json.loads(conn.read_response().body)["params"] == {"a": "1", "b": ["2"]}


def test_expect_100_continue(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app)
    with s.raw() as conn:
        conn.send(request_bytes("POST", "/", {"Expect": "100-continue", "Content-Length": "5"}))
        interim = conn.read_response()
        assert interim.status == 100
        conn.send(b"hello")
        assert json.loads(conn.read_response().body)["body"] == "hello"


def test_absolute_form_targets_are_accepted(site: Callable[..., Site]) -> None:
    app, _ = conn_app()
    s = site(app)
    with s.raw() as conn:
        assert conn.request("GET", "http://test/5?x=1").body == b"show 5"
        assert conn.request("GET", "HTTP://test").body == b"index"
