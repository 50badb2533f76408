"""The security review's findings (``docs/security.md``), each pinned by a test on a real server.

* request smuggling: ``Transfer-Encoding`` in HTTP/1.0, an upgrade request with a body, endless
  chunk extensions (each used to be accepted);
* ``Host``: required and valid in HTTP/1.1, replaced by an absolute-form target's authority;
* WebSocket upgrades: HTTP/1.1 only; the ``allowed_origins`` check (off by default);
* a message sent as endless empty fragments (memory), path normalisation, trailers;
* no exception text ever reaches a peer, in HTTP replies or in WebSocket close frames.

(The classic smuggling and malformed-request table is in ``test_http_malformed.py``.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest
from rawhttp import RawHTTP, request_bytes
from wsclient import RawClient

import plezi
from helpers import UNIT, Running
from plezi.errors import ConfigError
from plezi.launch.flags import config_from_args
from plezi.protocol import (
    MAX_EMPTY_FRAGMENTS,
    OP_BINARY,
    OP_CONT,
    OriginPolicy,
    encode_frame,
    parse_origin,
)

SECRET = "s3cr3t-detail-9f2c"


class Front:
    def index(self) -> str:
        return "front"

    def create(self) -> str:
        return f"posted {len(self.request.body)}"  # type: ignore[attr-defined]


class Secret:
    def index(self) -> str:
        return "SMUGGLED"


class Headers:
    def index(self) -> dict[str, str]:
        return {"host": self.request.host}  # type: ignore[attr-defined]


class Chat:
    opened = 0

    def pre_connect(self) -> None:
        Chat.opened += 1

    def on_message(self, data: str | bytes) -> None:
        self.write(data)  # type: ignore[attr-defined]


class Boom:
    """Every callback fails with a message that must stay on the server."""

    def index(self) -> str:
        raise ValueError(f"index failed: {SECRET}")

    async def create(self) -> str:
        raise RuntimeError(f"create failed: {SECRET}")

    def show(self) -> str:
        raise plezi.HTTPError(409, "Conflict", log=f"show failed: {SECRET}")


class BoomSocket:
    def pre_connect(self) -> bool:
        if self.params.get("fail"):  # type: ignore[attr-defined]
            raise KeyError(SECRET)
        return True

    def on_open(self) -> None:
        raise RuntimeError(f"on_open failed: {SECRET}")

    def on_message(self, data: str | bytes) -> None:
        if data == "raise":
            raise RuntimeError(f"on_message failed: {SECRET}")
        self.write(data)  # type: ignore[attr-defined]


def make_app() -> plezi.App:
    app = plezi.App()
    app.route("/secret", Secret)
    app.route("/headers", Headers)
    app.route("/chat", Chat)
    app.route("/boom", Boom)
    app.route("/boomsocket", BoomSocket)
    app.route("/", Front)
    return app


@pytest.fixture
def running(serve: Callable[..., Running]) -> Running:
    return serve(make_app())


SMUGGLED = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(path: str = "/chat", version: str = "1.1", **extra: str) -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": KEY,
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }
    return request_bytes("GET", path, headers).replace(b"HTTP/1.1", f"HTTP/{version}".encode(), 1)


def refused(running: Running, data: bytes, status: int) -> None:
    """``data`` (followed by a smuggled request) gets ``status``, and the connection closes
    without the smuggled request ever being answered."""
    with RawHTTP(running.port) as conn:
        conn.send_quietly(data + SMUGGLED)
        response = conn.read_response()
        assert response.status == status, response
        assert response.header("connection") == "close"
        rest = conn.rest_until_closed()
    assert b"SMUGGLED" not in rest and b"SMUGGLED" not in response.body
    assert httpx.get(running.url + "/", trust_env=False).text == "front"


def logged(caplog: pytest.LogCaptureFixture, *parts: str, level: int = logging.INFO) -> bool:
    return any(
        rec.name == "plezi"
        and rec.levelno >= level
        and all(part in rec.getMessage() for part in parts)
        for rec in caplog.records
    )


# -- request smuggling -----------------------------------------------------------------------


def test_transfer_encoding_in_http10_is_refused(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 6.1: an HTTP/1.0 proxy in front would not read the body as chunked, so the
    'body' ``0\\r\\n\\r\\n`` plus what follows could be two requests to it and one to us."""
    caplog.set_level(logging.INFO, logger="plezi")
    refused(
        running,
        b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    assert logged(caplog, "400", "HTTP/1.0")


def test_http10_with_content_length_is_still_served(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        conn.send(b"POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        assert conn.read_response().text == "posted 5"


@pytest.mark.parametrize(
    "data",
    [
        upgrade(Content_Length="5") + b"hello",
        upgrade(Transfer_Encoding="chunked") + b"5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
        b"Content-Length: 5\r\n\r\nhello",
    ],
    ids=["websocket-content-length", "websocket-chunked", "h2c-post"],
)
def test_an_upgrade_request_with_a_body_is_refused(running: Running, data: bytes) -> None:
    """httptools switches protocols right after the head: the body would have been read as
    WebSocket frames, or a POST answered as if it had no body."""
    opened = Chat.opened
    refused(running, data, 400)
    assert Chat.opened == opened


def test_endless_chunk_extensions_are_refused(serve: Callable[..., Running]) -> None:
    """Chunk extensions are skipped by the parser without a callback, so they counted against
    no limit: a client could stream them forever (the server just kept reading). Now they
    count against a framing allowance, and the client gets 413."""
    running = serve(make_app(), max_header_size=4096)
    with RawHTTP(running.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=")
        for _ in range(128):  # 1 MiB of one extension, unless the server answers first
            if conn.readable() or not conn.send_quietly(b"a" * 8192):
                break
        response = conn.read_response()
        assert (response.status, response.header("connection")) == (413, "close")
    assert httpx.get(running.url + "/", trust_env=False).text == "front"


def test_ordinary_chunked_bodies_pass_the_framing_allowance(serve: Callable[..., Running]) -> None:
    """1-byte chunks and chunks with extensions (AWS-style signatures) stay well inside it."""
    running = serve(make_app(), max_header_size=1024)
    tiny = b"".join(b"1\r\nx\r\n" for _ in range(3000))
    signed = b"".join(
        b"400;chunk-signature=" + b"f" * 64 + b"\r\n" + b"y" * 1024 + b"\r\n" for _ in range(200)
    )
    for body, size in ((tiny, 3000), (signed, 200 * 1024)):
        with RawHTTP(running.port) as conn:
            head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            conn.send(head)
            for i in range(0, len(body), 1000):  # in many reads, as a real upload arrives
                conn.send(body[i : i + 1000])
            conn.send(b"0\r\n\r\n")
            assert conn.read_response().text == f"posted {size}"


def test_trailers_count_against_the_head_limit(serve: Callable[..., Running]) -> None:
    running = serve(make_app(), max_header_size=1024)
    with RawHTTP(running.port) as conn:
        conn.send_quietly(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
            + b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 40) for i in range(100))
            + b"\r\n"
        )
        assert conn.read_response().status in (413, 431)
        conn.rest_until_closed()


# -- Host --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET /headers HTTP/1.1\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: evil.example/path\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: user@evil.example\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        b"GET http://user@evil.example/headers HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["missing", "space", "path", "userinfo", "two-ports", "userinfo-in-target"],
)
def test_a_missing_or_invalid_host_is_400(running: Running, data: bytes) -> None:
    """RFC 9112 3.2: applications build links (password resets...) from ``Host``."""
    refused(running, data, 400)


@pytest.mark.parametrize(
    ("data", "host"),
    [
        (b"GET /headers HTTP/1.1\r\nHost: example.com:8080 \r\n\r\n", "example.com:8080"),
        (b"GET /headers HTTP/1.1\r\nHost: [::1]:3000\r\n\r\n", "[::1]:3000"),
        (b"GET /headers HTTP/1.0\r\n\r\n", ""),
        (
            b"GET http://proxied.example:81/headers?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "proxied.example:81",
        ),
    ],
    ids=["trailing-space", "ipv6", "http10-without-host", "absolute-form"],
)
def test_the_host_the_application_sees(running: Running, data: bytes, host: str) -> None:
    """An absolute-form target's authority replaces ``Host`` (RFC 9112 3.2.2): the app sees the
    host the client asked for, the same one a proxy in front would have used."""
    with RawHTTP(running.port) as conn:
        conn.send(data)
        response = conn.read_response()
    assert response.status == 200
    assert response.text == f'{{"host":"{host}"}}'


def test_host_is_checked_on_every_request_of_a_connection(running: Running) -> None:
    """(The server skips re-checking a Host it has just seen valid on the same connection.)"""
    with RawHTTP(running.port) as conn:
        for host in ("a.example ", "a.example ", "a.example", "a.example"):
            conn.send(b"GET /headers HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
            assert conn.read_response().text == '{"host":"a.example"}'
        conn.send(b"GET http://b.example/headers HTTP/1.1\r\nHost: a.example\r\n\r\n")
        assert conn.read_response().text == '{"host":"b.example"}'
        conn.send(b"GET /headers HTTP/1.1\r\nHost: a.example/x\r\n\r\n" + SMUGGLED)
        assert conn.read_response().status == 400
        assert b"SMUGGLED" not in conn.rest_until_closed()


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/a/../../secret", 400, b""),
        ("/%2e%2e/secret", 400, b""),
        ("/%2E%2e/%2e%2E/secret", 400, b""),
        ("/x/..%2fsecret", 404, b""),
        ("/x/%2e%2e/secret", 200, b"SMUGGLED"),
        ("//secret", 200, b"SMUGGLED"),
        ("/x/./../secret/.", 200, b"SMUGGLED"),
        # Front's route ("/" plus an id) matches these, and answers only POST (``create``)
        # for an id: 405.
        ("/\\secret", 405, b""),
        ("/%00", 405, b""),
    ],
)
def test_path_normalisation(running: Running, target: str, status: int, body: bytes) -> None:
    """Dot segments (also percent-encoded) resolve and never climb above the root; ``%2F``
    stays inside its segment; a backslash is an ordinary character."""
    with RawHTTP(running.port) as conn:
        response = conn.request("GET", target)
    assert response.status == status
    assert body in response.body


# -- WebSocket upgrades ------------------------------------------------------------------------


def test_a_websocket_upgrade_over_http10_is_refused(running: Running) -> None:
    """RFC 6455 4.1: the handshake needs HTTP/1.1."""
    opened = Chat.opened
    refused(running, upgrade(version="1.0"), 400)
    assert Chat.opened == opened


def handshake(running: Running, data: bytes) -> int:
    with RawHTTP(running.port) as conn:
        conn.send(data)
        status = conn.read_response().status
        if status != 101:
            conn.rest_until_closed()
    return status


def test_origins_are_not_checked_by_default(running: Running) -> None:
    assert running.server.config.allowed_origins == ()
    assert handshake(running, upgrade(Origin="https://evil.example")) == 101


ALLOWED = ("https://example.com", "http://localhost:3000", "https://*.example.org")


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://example.com", 101),
        ("HTTPS://Example.COM", 101),
        ("https://example.com:443", 101),
        ("http://localhost:3000", 101),
        ("https://chat.example.org", 101),
        ("https://a.b.example.org", 101),
        (None, 101),
        ("https://evil.example", 403),
        ("http://example.com", 403),
        ("https://example.com:8443", 403),
        ("https://example.com.evil.example", 403),
        ("https://evilexample.org", 403),
        ("https://example.org", 403),
        ("http://localhost:3001", 403),
        ("null", 403),
        ("https://example.com/", 403),
        ("https://example.com, https://evil.example", 403),
        ("https://user@example.com", 403),
    ],
)
def test_allowed_origins(
    serve: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
    origin: str | None,
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    running = serve(make_app())
    running.server.config.allowed_origins = ALLOWED
    opened = Chat.opened
    extra = {} if origin is None else {"Origin": origin}
    assert handshake(running, upgrade(**extra)) == status
    if status == 403:
        assert Chat.opened == opened, "pre_connect ran for a refused origin"
        assert logged(caplog, "403", "Origin", "allowed_origins", level=logging.WARNING)
    else:
        assert Chat.opened == opened + 1


def test_a_refused_origin_still_gets_plain_http(serve: Callable[..., Running]) -> None:
    """The check is about WebSocket upgrades only."""
    running = serve(make_app())
    running.server.config.allowed_origins = ALLOWED
    r = httpx.get(running.url + "/", headers={"Origin": "https://evil.example"}, trust_env=False)
    assert r.text == "front"


def test_allowed_origins_from_the_command_line() -> None:
    config = config_from_args(
        ["--origin", "https://a.example", "--origin", "https://b.example, https://*.c.example"]
    )
    assert config.allowed_origins == (
        "https://a.example",
        "https://b.example",
        "https://*.c.example",
    )
    assert config_from_args([]).allowed_origins == ()
    assert config_from_args([], allowed_origins=["https://k.example"]).allowed_origins == (
        "https://k.example",
    )


@pytest.mark.parametrize(
    "entry",
    [
        "example.com",
        "https://",
        "https://exa mple.com",
        "https://example.com/path",
        "null",
        "https://example.com:99999",
        "https://*",
        "https://a.*.example.com",
        "*",
    ],
)
def test_invalid_allowed_origins_are_config_errors(entry: str) -> None:
    with pytest.raises(ConfigError, match="allowed_origins"):
        config_from_args(["--origin", entry])


def test_origin_parsing() -> None:
    assert parse_origin("https://Example.com") == ("https", "example.com", 443)
    assert parse_origin("http://[::1]:8080") == ("http", "[::1]", 8080)
    assert parse_origin("chrome-extension://abcdef") == ("chrome-extension", "abcdef", None)
    for bad in (
        "null",
        "",
        "https://",
        "example.com",
        "https://a/b",
        "https://a:x",
        "https://[::1",
    ):
        assert parse_origin(bad) is None
    policy = OriginPolicy(["https://example.com/", "chrome-extension://abcdef"])
    assert policy.allows("https://example.com")
    assert policy.allows("chrome-extension://abcdef")
    assert not policy.allows("chrome-extension://abcdeg")


# -- WebSocket messages ------------------------------------------------------------------------


def test_endless_empty_fragments_are_harmless(serve: Callable[..., Running]) -> None:
    """Empty continuation frames add nothing to a message's size, so the size limit does not
    stop them; the reader used to keep one list entry per fragment (memory without bound).
    Memory is asserted in tests/protocol (test_empty_fragments_cost_no_memory); here, the real
    server delivers a message with ``MAX_EMPTY_FRAGMENTS`` of them, and closes with 1008 one
    that goes on (issue 18: an endless stream of them held the process)."""
    running = serve(make_app(), max_message_size=1024)
    with RawClient(running.port, "/chat") as client:
        client.send_raw(encode_frame(OP_BINARY, b"a", fin=False, mask=b"abcd"))
        empty = encode_frame(OP_CONT, b"", fin=False, mask=b"abcd")
        client.send_raw(empty * MAX_EMPTY_FRAGMENTS)
        client.send_raw(encode_frame(OP_CONT, b"z", mask=b"abcd"))
        assert client.recv_message(timeout=10 * UNIT).payload == b"az"
        client.send_raw(encode_frame(OP_BINARY, b"a", fin=False, mask=b"abcd"))
        client.send_raw(empty * (MAX_EMPTY_FRAGMENTS + 1))
        assert client.recv_close() == 1008


# -- nothing leaks ---------------------------------------------------------------------------


def test_exception_text_never_reaches_an_http_client(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    replies = [
        httpx.get(running.url + "/boom", trust_env=False),
        httpx.post(running.url + "/boom", content=b"x", trust_env=False),
        httpx.get(running.url + "/boom/1", trust_env=False),
    ]
    assert [r.status_code for r in replies] == [500, 500, 409]
    for r in replies:
        for word in (SECRET, "ValueError", "RuntimeError", "Traceback", "failed"):
            assert word not in r.text
        assert SECRET not in str(r.headers)
    assert caplog.text.count(SECRET) >= 2, "the details belong in the server's log"


def test_exception_text_never_reaches_a_websocket_client(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    assert handshake(running, upgrade("/boomsocket?fail=1")) == 500
    with RawClient(running.port, "/boomsocket") as client:
        client.send_text("raise")
        client.send_text("still here")
        assert client.recv_message().text == "still here"
        client.send_raw(encode_frame(OP_BINARY, b"x", rsv=4, mask=b"abcd"))  # a protocol error
        frame = client.recv_frame()
        assert frame.close_code == 1002
        assert frame.payload == b"\x03\xea", "a close frame carries the code only"
        rest = client.wait_eof()
    assert SECRET.encode() not in rest
    assert "on_open failed" in caplog.text and "on_message failed" in caplog.text
