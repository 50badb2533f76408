"""HTTP through plezi's ASGI application, served by a real uvicorn over real sockets."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp


class Items:
    def index(self) -> str:
        return "all items"

    def show(self) -> dict[str, Any]:
        return {"id": self.params["id"], "q": self.params.get("q")}  # type: ignore[attr-defined]

    def create(self) -> dict[str, Any]:
        return {"created": self.params.get("name"), "size": len(self.request.body)}  # type: ignore[attr-defined]

    def delete(self) -> str:
        return f"deleted {self.params['id']}"  # type: ignore[attr-defined]

    def login(self) -> bool:
        self.cookies["user"] = self.params.get("user", "anon")  # type: ignore[attr-defined]
        self.response.headers["X-Plezi"] = "yes"  # type: ignore[attr-defined]
        return self.redirect_to("/items/whoami")  # type: ignore[attr-defined, no-any-return]

    def whoami(self) -> str:
        return f"user={self.cookies.get('user')}"  # type: ignore[attr-defined]

    def logout(self) -> str:
        del self.cookies["user"]  # type: ignore[attr-defined]
        return "bye"

    def binary(self) -> bytes:
        return b"\x00\x01\x02"

    async def later(self) -> str:
        return "async answer"

    def nothing(self) -> None:
        return None


class Fallback:
    def show(self) -> str:
        return f"fallback {self.params['id']}"  # type: ignore[attr-defined]


def items_app() -> plezi.App:
    app = plezi.App()
    app.route("/items", Items)
    app.route("/(:id)", Fallback)
    return app


@pytest.fixture
def client(uvicorn_serve: Any) -> Any:
    server = uvicorn_serve(ASGIApp(items_app(), limits=plezi.Limits(max_body_size=1000)))
    with httpx.Client(base_url=server.url, timeout=5 * UNIT) as c:
        yield c


def test_routes_params_and_return_types(client: httpx.Client) -> None:
    r = client.get("/items")
    assert (r.status_code, r.text) == (200, "all items")
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/items/42", params={"q": "x y"})
    assert r.json() == {"id": "42", "q": "x y"}
    assert r.headers["content-type"] == "application/json"
    r = client.get("/items/binary")
    assert r.content == b"\x00\x01\x02"
    assert r.headers["content-type"] == "application/octet-stream"
    assert client.get("/items/later").text == "async answer"
    assert client.delete("/items/7").text == "deleted 7"
    # A method that returns None falls through to the next route.
    assert client.get("/items/nothing").status_code == 404
    assert client.get("/elsewhere").text == "fallback elsewhere"


def test_unknown_path_is_404(client: httpx.Client) -> None:
    r = client.get("/no/such/path")
    assert r.status_code == 404
    assert r.text == "Not Found\n"


def test_percent_encoded_path_is_routed_as_natively(client: httpx.Client) -> None:
    r = client.get("/items/caf%C3%A9%2Fx")
    assert r.json()["id"] == "café/x"


def test_post_form_and_json_bodies(client: httpx.Client) -> None:
    r = client.post("/items", data={"name": "pen"})
    assert r.json() == {"created": "pen", "size": len("name=pen")}
    r = client.post("/items", json={"name": "ink"})
    assert r.json()["created"] == "ink"


def test_cookies_headers_and_redirect(client: httpx.Client) -> None:
    r = client.get("/items/login", params={"user": "ann"})
    assert r.status_code == 302
    assert r.headers["location"] == "/items/whoami"
    assert r.headers["x-plezi"] == "yes"
    assert "user=ann" in r.headers["set-cookie"]
    assert client.cookies.get("user") == "ann"
    assert client.get("/items/whoami").text == "user=ann"
    r = client.get("/items/logout")
    assert r.text == "bye"
    assert "user=" in r.headers["set-cookie"]
    assert client.get("/items/whoami").text == "user=None"


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    assert client.post("/items", content=b"x" * 1000).status_code == 200
    r = client.post("/items", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.text == "Content Too Large\n"


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 100

    r = client.post("/items", content=chunks())  # no Content-Length: counted as it arrives
    assert r.status_code == 413


def test_head_has_the_length_and_no_body(uvicorn_serve: Any) -> None:
    server = uvicorn_serve(ASGIApp(items_app()))
    get = httpx.get(f"{server.url}/items", timeout=5 * UNIT)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT) as sock:
        sock.sendall(
            b"HEAD /items HTTP/1.1\r\nHost: x\r\n\r\nGET /items/whoami HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"user=None"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert f"content-length: {len(get.content)}".encode() in head.lower()
    # The next response starts right after the HEAD reply's head: no body was sent.
    assert rest.startswith(b"HTTP/1.1 200")


def test_root_path_is_stripped_before_routing(uvicorn_serve: Any) -> None:
    server = uvicorn_serve(ASGIApp(items_app()), root_path="/prefix")
    r = httpx.get(f"{server.url}/items/5", timeout=5 * UNIT)
    assert r.json()["id"] == "5"  # uvicorn passes path="/prefix/items/5", root_path="/prefix"


def test_default_application_serves_plezi_routes(uvicorn_serve: Any) -> None:
    from plezi.asgi import application

    class Hello:
        def index(self) -> str:
            return "hello from plezi.app"

    route = plezi.route("/asgi-default-test", Hello)
    try:
        server = uvicorn_serve(application)
        assert httpx.get(f"{server.url}/asgi-default-test").text == "hello from plezi.app"
    finally:
        plezi.app.routes.remove(route)
