"""A real Starlette application mounted under a plezi route, answering through plezi's native
server (and through plezi's ASGI application under uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsclient import connect

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp, mount

starlette = pytest.importorskip("starlette")
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

T = 5 * UNIT
#: The close codes the mounted app's WebSocket saw in ``websocket.disconnect``.
DISCONNECTS: queue.Queue[int] = queue.Queue()


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello from starlette")


async def item(request: Request) -> Response:
    return JSONResponse(
        {
            "id": request.path_params["item_id"],
            "q": request.query_params.get("q"),
            "path": request.url.path,
            "root_path": request.scope["root_path"],
            "url_for": str(request.url_for("item", item_id="z")),
        }
    )


async def echo_body(request: Request) -> Response:
    body = await request.body()
    response = PlainTextResponse(f"{request.method} {len(body)} {body.decode()}")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    response.headers["x-starlette"] = "yes"
    return response


async def state(request: Request) -> Response:
    return PlainTextResponse(str(getattr(request.state, "started", "no lifespan")))


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    await websocket.send_text(f"hi {websocket.scope['root_path']}")
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                DISCONNECTS.put(message["code"])
                return
            if message.get("text") == "bye":
                await websocket.close(4001, "asked to")
                return
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"].upper())
    except WebSocketDisconnect:  # pragma: no cover - receive() returns the message above
        pass


async def ws_refuse(websocket: WebSocket) -> None:
    await websocket.close(1008)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"started": "yes"}


def starlette_app(**kwargs: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/hello", hello),
            Route("/items/{item_id}", item, name="item"),
            Route("/echo", echo_body, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/state", state),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/refuse", ws_refuse),
        ],
        **kwargs,
    )


class Home:
    def index(self) -> str:
        return "plezi home"


def plezi_app(**mount_options: Any) -> tuple[plezi.App, type]:
    app = plezi.App()
    app.route("/", Home)
    mounted = mount(starlette_app(lifespan=lifespan), **mount_options)
    app.route("/api/v1/*", mounted)
    return app, mounted


@pytest.fixture
def native(serve: Any) -> Any:
    app, _ = plezi_app()
    return serve(app)


def test_http_routes_of_the_mounted_app(native: Any) -> None:
    with httpx.Client(base_url=native.url, timeout=T) as client:
        assert client.get("/").text == "plezi home"
        r = client.get("/api/v1/hello")
        assert (r.status_code, r.text) == (200, "hello from starlette")
        assert r.headers["content-type"].startswith("text/plain")
        r = client.get("/api/v1/items/caf%C3%A9", params={"q": "1 2"})
        assert r.json() == {
            "id": "café",
            "q": "1 2",
            "path": "/api/v1/items/café",
            "root_path": "/api/v1",
            "url_for": f"{native.url}/api/v1/items/z",
        }
        # Starlette's own 404 (and 405) inside the mount; plezi's 404 outside it.
        r = client.get("/api/v1/missing")
        assert (r.status_code, r.text) == (404, "Not Found")
        # Known limits (docs/asgi.md): verbs outside plezi's RESTful table, and bodies plezi
        # cannot parse, are answered by plezi (405: the mount answers the table's verbs).
        r = client.request("OPTIONS", "/api/v1/hello")
        assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD, POST, PUT, PATCH, DELETE")
        r = client.post(
            "/api/v1/echo", content=b"{bad", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert client.get("/elsewhere").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_bodies_verbs_headers_and_cookies(native: Any, method: str) -> None:
    r = httpx.request(method, f"{native.url}/api/v1/echo", content=b"payload", timeout=T)
    assert r.text == f"{method} 7 payload"
    assert r.headers["x-starlette"] == "yes"
    assert r.cookies.get("a") == "1"
    assert r.cookies.get("b") == "2"


def test_head_through_the_mount(native: Any) -> None:
    with socket.create_connection(("127.0.0.1", native.port), timeout=T) as sock:
        sock.sendall(b"HEAD /api/v1/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 20" in head.lower()
    assert rest == b""


def test_mounted_websocket(native: Any) -> None:
    url = f"{native.ws_url}/api/v1/ws"
    with connect(url, subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.recv(T) == "hi /api/v1"  # sent right after accept, before on_open
        ws.send("shout")
        assert ws.recv(T) == "SHOUT"
        ws.send(b"\x01\x02")
        assert ws.recv(T) == b"\x01\x02"
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(T)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "asked to")


def test_mounted_websocket_sees_the_client_leave(native: Any) -> None:
    with connect(f"{native.ws_url}/api/v1/ws") as ws:
        assert ws.recv(T) == "hi /api/v1"
    assert DISCONNECTS.get(timeout=T) == 1000


def test_mounted_websocket_refusals(native: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{native.ws_url}/api/v1/refuse")
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        connect(f"{native.ws_url}/api/v1/no-such-socket")
    assert info.value.response.status_code == 403


def test_lifespan_state(serve: Any) -> None:
    app, mounted = plezi_app(lifespan=True)
    running = serve(app)
    assert httpx.get(f"{running.url}/api/v1/state", timeout=T).text == "yes"
    life = mounted.asgi_lifespan  # type: ignore[attr-defined]
    asyncio.run_coroutine_threadsafe(life.stop(), running.loop).result(T)


def test_mount_under_plezi_under_uvicorn(uvicorn_serve: Any) -> None:
    app, _ = plezi_app()
    server = uvicorn_serve(ASGIApp(app))
    assert httpx.get(f"{server.url}/api/v1/hello", timeout=T).text == "hello from starlette"
    with connect(f"{server.ws_url}/api/v1/ws") as ws:
        assert ws.recv(T) == "hi /api/v1"
        ws.send("x")
        assert ws.recv(T) == "X"
