"""A test client that runs the real server: HTTP, WebSocket and SSE from a test's own thread.

.. code-block:: python

    from plezi.testing import TestClient

    with TestClient(app) as client:
        assert client.get("/").text == "Hello"
        with client.websocket_connect("/chat") as ws:
            ws.send_json({"event": "chat", "text": "hi"})
            assert ws.receive_json()["text"] == "hi"

Theory of operation
-------------------
:class:`TestClient` starts plezi's own :class:`~plezi.server.server.Server` on ``127.0.0.1``, on
a free port, in a background thread with its own event loop: the code paths are the ones that
serve production traffic, over a real socket. The requests are made with the standard library
(``http.client``, a raw socket for event streams) and the ``websockets`` package's sync client
(a dependency of plezi already); cookies are kept between requests as a browser keeps them
(``http.cookiejar``).

*Server exceptions.* An exception raised in application code (an HTTP action, a WebSocket or
SSE callback, an auto-dispatch event) is logged by plezi as always, and handed to the observers
of :data:`plezi.errors.error_observers`; the client registers one while it runs and re-raises
the first such exception in the test's thread: in the request that caused it, at the next call,
while a ``receive`` waits, or at exit (``raise_server_exceptions=False`` keeps them in
:attr:`TestClient.server_exceptions` instead).

*Shutdown.* Leaving the ``with`` block (or :meth:`TestClient.close`) shuts the server down as
SIGTERM would: ``on_shutdown`` runs on every open WebSocket and event stream, they are closed,
``on_close`` runs, then the pub/sub engine stops.

*Pub/sub.* The server runs in the test's process, so ``plezi.publish`` in the test reaches the
connections the test opened.
"""

from __future__ import annotations

import asyncio
import email.message
import http.client
import http.cookiejar
import http.cookies
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import orjson

from .config import Limits, ServerConfig
from .errors import ConfigError, error_observers
from .launch import autostart as _autostart
from .web.app import default_app

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

    from .server.server import Server
    from .web.app import App

__all__ = [
    "ConnectionRejected",
    "EventStream",
    "Headers",
    "Response",
    "ServerSentEvent",
    "TestClient",
    "WebSocketClosed",
    "WebSocketSession",
]

_HOST: Final = "127.0.0.1"
#: How long a blocking ``receive`` waits at a time before it looks for a server exception.
_SLICE: Final = 0.05
_REDIRECTS: Final = frozenset((301, 302, 303, 307, 308))
_MAX_REDIRECTS: Final = 20
#: Options that make no sense for a server in the test's own process.
_FIXED: Final = frozenset(("port", "bind", "workers", "public", "redis"))
_LIMIT_NAMES: Final = frozenset(f.name for f in fields(Limits))
_SERVER_NAMES: Final = frozenset(f.name for f in fields(ServerConfig)) - {"limits"}


class ConnectionRejected(Exception):
    """The server answered a WebSocket handshake or an event-stream request with something
    other than a WebSocket or a stream (``status_code``: a 403 from ``pre_connect``, a 404 ...)."""

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        super().__init__(f"the server answered {status_code}: {content[:200]!r}")
        self.status_code = status_code
        self.headers = headers
        self.content = content


class WebSocketClosed(Exception):
    """The WebSocket is closed (``code`` and ``reason`` are those the server sent, ``1006``
    when the connection ended without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"the WebSocket is closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class Headers(Mapping[str, str]):
    """Response headers; names are case-insensitive. A repeated header's values are joined with
    ``", "`` (:meth:`get_list` gives them apart, as ``Set-Cookie`` needs)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get_list(self, name: str) -> list[str]:
        """Every value of the header ``name``, in order."""
        name = name.lower()
        return [value for key, value in self._items if key.lower() == name]

    def items_list(self) -> list[tuple[str, str]]:
        """Every (name, value) pair as received."""
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        values = self.get_list(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key.lower() for key, _ in self._items))

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._items})

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response."""

    status_code: int
    headers: Headers
    content: bytes
    #: The URL that answered (the last one when redirects were followed).
    url: str

    @property
    def text(self) -> str:
        """The body decoded with the ``charset`` of its ``content-type`` (default UTF-8)."""
        message = email.message.Message()
        message["content-type"] = self.headers.get("content-type", "text/plain")
        charset = message.get_content_charset() or "utf-8"
        return self.content.decode(charset, errors="replace")

    def json(self) -> Any:
        """The body decoded as JSON."""
        return orjson.loads(self.content)

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies this response set (a deleted cookie's value is ``""``)."""
        found: dict[str, str] = {}
        for line in self.headers.get_list("set-cookie"):
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            jar.load(line)
            found.update((name, morsel.value) for name, morsel in jar.items())
        return found

    @property
    def is_redirect(self) -> bool:
        """A 3xx with a ``location``."""
        return self.status_code in _REDIRECTS and "location" in self.headers


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of an event stream."""

    data: str
    #: The event's name (``"message"`` when the server named none).
    event: str = "message"
    #: The last event id the stream set (``None`` before any).
    id: str | None = None
    #: The reconnection delay the event set, in milliseconds.
    retry: int | None = None

    def json(self) -> Any:
        """``data`` decoded as JSON."""
        return orjson.loads(self.data)


class _SetCookies:
    """What :meth:`http.cookiejar.CookieJar.extract_cookies` reads from a response."""

    def __init__(self, values: list[str]) -> None:
        self._message = email.message.Message()
        for value in values:
            self._message["Set-Cookie"] = value

    def info(self) -> email.message.Message:
        return self._message


class TestClient:
    """The real server on a free loopback port, in a background thread, and a client for it.

    ``app`` defaults to :data:`plezi.app`. ``options`` are :class:`~plezi.ServerConfig` and
    :class:`~plezi.Limits` fields, as :func:`plezi.run` takes them (``ping_interval=0``,
    ``max_body_size=...``), except the address, the workers, ``public`` and ``redis``.
    ``timeout`` bounds every call in seconds. The server starts at the first call (or at
    ``with``) and stops at :meth:`close` (or the end of the ``with`` block).

    Creating a client turns autostart off (:func:`plezi.no_autostart`): a script that tests
    an app must not start serving it when it ends.
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(
        self,
        app: App | None = None,
        *,
        raise_server_exceptions: bool = True,
        follow_redirects: bool = True,
        timeout: float = 10.0,
        **options: Any,
    ) -> None:
        if app is None:
            app = default_app()
        self.app = app
        self.raise_server_exceptions = raise_server_exceptions
        self.follow_redirects = follow_redirects
        self.timeout = timeout
        self.config = _config(options)
        #: Exceptions raised in application code and not re-raised (yet, or at all with
        #: ``raise_server_exceptions=False``).
        self.server_exceptions: list[BaseException] = []
        #: The cookies sent with every request; responses update them, as in a browser.
        self.cookie_jar = http.cookiejar.CookieJar()
        self._runner: _ServerThread | None = None
        self._closed = False
        self._open: list[WebSocketSession | EventStream] = []
        _autostart.no_autostart()

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> TestClient:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The test failed already: report the server's exceptions with that failure instead
        # of replacing it.
        raise_them, self.raise_server_exceptions = self.raise_server_exceptions, False
        try:
            self.close()
        finally:
            self.raise_server_exceptions = raise_them
        for error in self.server_exceptions:
            exc.add_note(f"the server also raised: {error!r}")

    def start(self) -> None:
        """Start the server (the first request does it when this was not called)."""
        if self._closed:
            raise RuntimeError("this TestClient is closed; create a new one")
        if self._runner is None:
            runner = _ServerThread(self.app, self.config, self._observe, self.timeout)
            runner.start()
            self._runner = runner

    def close(self) -> None:
        """Shut the server down gracefully (``on_shutdown``, then ``on_close``), then re-raise
        the first exception application code raised, if any."""
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.stop(self.config.shutdown_timeout + self.timeout)
        finally:
            for conn in self._open:
                conn._release()
            self._open.clear()
        self._raise_server_exceptions()

    @property
    def port(self) -> int:
        """The server's port (starts the server)."""
        self.start()
        assert self._runner is not None
        return self._runner.port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (starts the server)."""
        return f"http://{_HOST}:{self.port}"

    @property
    def server(self) -> Server:
        """The running :class:`~plezi.server.server.Server` (starts it)."""
        self.start()
        assert self._runner is not None
        return self._runner.server

    @property
    def cookies(self) -> dict[str, str]:
        """The client's cookies by name (a copy: use :meth:`set_cookie` to add one)."""
        return {cookie.name: cookie.value or "" for cookie in self.cookie_jar}

    def set_cookie(self, name: str, value: str, *, path: str = "/") -> None:
        """Add a cookie that every later request sends."""
        self.cookie_jar.set_cookie(_cookie(name, value, path))

    # -- server exceptions ------------------------------------------------------------------

    def _observe(self, exc: BaseException) -> None:
        """An error observer (runs on the server's loop): keep ``exc`` for the test thread."""
        self.server_exceptions.append(exc)

    def _raise_server_exceptions(self) -> None:
        """Re-raise the first exception application code raised (once)."""
        if not self.raise_server_exceptions or not self.server_exceptions:
            return
        # The server's thread may append meanwhile: take what is there, leave the rest.
        first, *rest = taken = self.server_exceptions[:]
        del self.server_exceptions[: len(taken)]
        if rest:
            first.add_note(f"plezi.testing: the server raised {len(rest)} more: {rest!r}")
        raise first

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("this TestClient is closed; create a new one")
        self.start()
        self._raise_server_exceptions()

    # -- HTTP -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        json: Any = None,
        content: str | bytes | None = None,
        follow_redirects: bool | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and return its response.

        ``params``: the query string (added to one already in ``path``). The body is one of
        ``data`` (a mapping is sent as a form), ``json`` (encoded as JSON) or ``content``
        (sent as it is). ``cookies`` are sent with this request only, with the client's own.
        """
        self._check()
        body, content_type = _body(data, json, content)
        sent = {"user-agent": "plezi-testclient"}
        if content_type is not None:
            sent["content-type"] = content_type
        sent.update((key.lower(), value) for key, value in (headers or {}).items())
        url = self._url("http", path, params)
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        response = self._send(method.upper(), url, body, sent, cookies, timeout)
        for _ in range(_MAX_REDIRECTS):
            if not (follow and response.is_redirect):
                break
            method, url, body = _redirected(method.upper(), response, body)
            if not url.startswith(self.base_url + "/"):
                break  # another site: the test sees the redirect itself
            if body is None:
                sent.pop("content-type", None)
            response = self._send(method, url, body, sent, cookies, timeout)
        self._raise_server_exceptions()
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        """A ``GET`` request (see :meth:`request` for the keywords)."""
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Response:
        """A ``HEAD`` request."""
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> Response:
        """An ``OPTIONS`` request."""
        return self.request("OPTIONS", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        """A ``POST`` request."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Response:
        """A ``PUT`` request."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Response:
        """A ``PATCH`` request."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        """A ``DELETE`` request."""
        return self.request("DELETE", path, **kwargs)

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        cookies: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Response:
        """One request on a new connection; the response's cookies go into the jar."""
        sent = dict(headers)
        cookie = self._cookie_header(url, cookies)
        if cookie and "cookie" not in sent:
            sent["cookie"] = cookie
        target = url[len(self.base_url) :]
        conn = http.client.HTTPConnection(_HOST, self.port, timeout=timeout or self.timeout)
        try:
            conn.request(method, target, body=body, headers=sent)
            reply = conn.getresponse()
            content = reply.read()
            items = list(reply.getheaders())
        finally:
            conn.close()
        response = Response(reply.status, Headers(items), content, url)
        self._store_cookies(url, response.headers.get_list("set-cookie"))
        return response

    # -- cookies ----------------------------------------------------------------------------

    def _cookie_header(self, url: str, extra: Mapping[str, str] | None) -> str:
        """The ``cookie`` header for ``url``: the jar's cookies, then ``extra`` (which win)."""
        request = urllib.request.Request(url)
        self.cookie_jar.add_cookie_header(request)
        jar = request.get_header("Cookie") or ""
        pairs = dict(pair.partition("=")[::2] for pair in jar.split("; ") if pair)
        pairs.update(extra or {})
        return "; ".join(f"{name}={value}" for name, value in pairs.items())

    def _store_cookies(self, url: str, set_cookies: list[str]) -> None:
        if set_cookies:
            request = urllib.request.Request(url)
            self.cookie_jar.extract_cookies(_SetCookies(set_cookies), request)  # type: ignore[arg-type]

    def _url(self, scheme: str, path: str, params: Mapping[str, Any] | None) -> str:
        if not path.startswith("/"):
            raise ValueError(f"a path starts with '/': {path!r}")
        if params:
            query = urllib.parse.urlencode(params, doseq=True)
            path += ("&" if "?" in path else "?") + query
        return f"{scheme}://{_HOST}:{self.port}{path}"

    # -- WebSocket --------------------------------------------------------------------------

    def websocket_connect(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        subprotocols: list[str] | None = None,
        timeout: float | None = None,
    ) -> WebSocketSession:
        """Open a WebSocket (with the client's cookies); use it as a context manager, or close
        it. Raises :class:`ConnectionRejected` when the server refuses the handshake."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        self._check()
        url = self._url("ws", path, params)
        sent = dict(headers or {})
        cookie = self._cookie_header("http" + url[2:], None)
        if cookie and not any(key.lower() == "cookie" for key in sent):
            sent["Cookie"] = cookie
        wait = timeout or self.timeout
        sock = socket.create_connection((_HOST, self.port), timeout=wait)
        try:
            ws = connect(
                url,
                sock=sock,
                additional_headers=sent,
                subprotocols=subprotocols,  # type: ignore[arg-type]
                open_timeout=wait,
                close_timeout=wait,
                ping_interval=None,  # the server's pings are answered; the client sends none
                compression=None,
                max_size=None,  # the server's limits are what a test checks
            )
            # The session is the context manager: it closes the connection on exit.
            ws.__enter__()
        except InvalidStatus as exc:
            sock.close()
            self._raise_server_exceptions()
            reply = exc.response
            items = [(str(k), str(v)) for k, v in reply.headers.raw_items()]
            raise ConnectionRejected(
                reply.status_code, Headers(items), bytes(reply.body or b"")
            ) from None
        except BaseException:
            sock.close()
            raise
        if ws.response is not None:
            self._store_cookies("http" + url[2:], ws.response.headers.get_all("Set-Cookie"))
        session = WebSocketSession(self, ws, self.timeout)
        self._open.append(session)
        return session

    # -- Server-Sent Events -----------------------------------------------------------------

    def events(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> EventStream:
        """Open an event stream (``GET`` with ``Accept: text/event-stream``, and the client's
        cookies); iterate it for :class:`ServerSentEvent`\\ s. Each event is awaited up to
        ``timeout`` seconds (:class:`TimeoutError` past it). Raises :class:`ConnectionRejected`
        when the answer is not a stream."""
        self._check()
        url = self._url("http", path, params)
        sent = {
            "host": f"{_HOST}:{self.port}",
            "accept": "text/event-stream",
            "cache-control": "no-cache",
            "user-agent": "plezi-testclient",
        }
        sent.update((key.lower(), value) for key, value in (headers or {}).items())
        cookie = self._cookie_header(url, None)
        if cookie and "cookie" not in sent:
            sent["cookie"] = cookie
        wait = timeout or self.timeout
        stream = EventStream(self, wait)
        try:
            stream._open(url[len(self.base_url) :], sent)
        except BaseException:
            stream._release()
            raise
        self._store_cookies(url, stream.headers.get_list("set-cookie"))
        self._open.append(stream)
        return stream


class WebSocketSession:
    """A WebSocket opened by :meth:`TestClient.websocket_connect`.

    Every ``receive_*`` waits up to ``timeout`` seconds (the client's by default) and raises
    :class:`TimeoutError` past it, :class:`WebSocketClosed` once the server closed; while it
    waits, an exception raised in application code is re-raised at once.
    """

    def __init__(self, client: TestClient, ws: ClientConnection, timeout: float) -> None:
        self._client = client
        self._ws = ws
        self._timeout = timeout

    def __enter__(self) -> WebSocketSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose."""
        return self._ws.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (``None`` while open; ``1006`` when the connection
        ended without a close frame)."""
        return self._ws.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason the server sent."""
        return self._ws.protocol.close_reason

    # -- sending ----------------------------------------------------------------------------

    def send_text(self, data: str) -> None:
        """Send a text message."""
        self._send(data)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._send(bytes(data))

    def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message."""
        self._send(orjson.dumps(data).decode())

    def _send(self, data: str | bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        self._client._raise_server_exceptions()
        try:
            self._ws.send(data)
        except ConnectionClosed:
            raise self._closed() from None

    # -- receiving --------------------------------------------------------------------------

    def receive(self, *, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary."""
        from websockets.exceptions import ConnectionClosed

        client = self._client
        client._raise_server_exceptions()
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            try:
                message = self._ws.recv(timeout=max(0.0, min(_SLICE, left)))
            except TimeoutError:
                client._raise_server_exceptions()
                if left <= 0:
                    raise TimeoutError("no WebSocket message within the timeout") from None
            except ConnectionClosed:
                client._raise_server_exceptions()
                raise self._closed() from None
            else:
                # A reply that an exception caused (auto-dispatch's ``_err_``) comes after it.
                client._raise_server_exceptions()
                return message

    def receive_text(self, *, timeout: float | None = None) -> str:
        """The next message, which must be text (``TypeError`` for a binary one)."""
        message = self.receive(timeout=timeout)
        if not isinstance(message, str):
            raise TypeError(f"expected a text message, received binary {message[:100]!r}")
        return message

    def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """The next message, which must be binary (``TypeError`` for a text one)."""
        message = self.receive(timeout=timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary message, received text {message[:100]!r}")
        return message

    def receive_json(self, *, timeout: float | None = None) -> Any:
        """The next message (text or binary) decoded as JSON."""
        return orjson.loads(self.receive(timeout=timeout))

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and wait for the server's answer (``on_close`` has then run on
        the server, unless it is ``async``)."""
        self._ws.close(code, reason)

    def _closed(self) -> WebSocketClosed:
        return WebSocketClosed(self.close_code or 1006, self.close_reason or "")

    def _release(self) -> None:
        self._ws.close_socket()


class EventStream:
    """An event stream opened by :meth:`TestClient.events`: an iterator of
    :class:`ServerSentEvent` (it ends when the server ends the stream) and a context manager."""

    def __init__(self, client: TestClient, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._eof = False
        self._parser = _EventParser()
        self.status_code = 0
        self.headers = Headers([])

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ServerSentEvent]:
        return self

    def __next__(self) -> ServerSentEvent:
        event = self.receive()
        if event is None:
            raise StopIteration
        return event

    def receive(self, *, timeout: float | None = None) -> ServerSentEvent | None:
        """The next event; ``None`` once the server ended the stream."""
        client = self._client
        client._raise_server_exceptions()
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        while True:
            event = self._parser.next_event()
            if event is not None:
                client._raise_server_exceptions()
                return event
            if self._eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                client._raise_server_exceptions()
                raise TimeoutError("no event within the timeout")
            chunk = self._read(min(_SLICE, left))
            if chunk is None:
                client._raise_server_exceptions()
            elif chunk:
                self._parser.feed(chunk)
            else:
                self._eof = True
                self._parser.feed_end()

    def close(self) -> None:
        """Close the stream (the server then runs ``on_close``)."""
        self._release()

    # -- plumbing ---------------------------------------------------------------------------

    def _open(self, target: str, headers: dict[str, str]) -> None:
        client = self._client
        self._sock = socket.create_connection((_HOST, client.port), timeout=self._timeout)
        head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._sock.sendall(head.encode("latin-1") + b"\r\n")
        deadline = time.monotonic() + self._timeout
        while b"\r\n\r\n" not in self._buffer:
            chunk = self._read(max(0.001, deadline - time.monotonic()))
            if not chunk:
                client._raise_server_exceptions()
                raise TimeoutError("no answer to the event-stream request")
            self._buffer += chunk
        raw, _, rest = self._buffer.partition(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        self.status_code = int(status_line.split(" ", 2)[1])
        self.headers = Headers([_split_header(line) for line in lines])
        if self.status_code != 200 or "text/event-stream" not in self.headers.get(
            "content-type", ""
        ):
            body = rest + self._read_body(len(rest))
            client._raise_server_exceptions()
            raise ConnectionRejected(self.status_code, self.headers, body)
        self._buffer = b""
        self._parser.feed(rest)

    def _read_body(self, have: int) -> bytes:
        """The rest of a refusal's body (by its ``content-length``)."""
        wanted = int(self.headers.get("content-length", "0")) - have
        parts = []
        while wanted > 0:
            chunk = self._read(self._timeout)
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def _read(self, timeout: float) -> bytes | None:
        """Up to 64 KiB from the socket; ``b""`` at its end, ``None`` after ``timeout``."""
        sock = self._sock
        if sock is None:
            return b""
        sock.settimeout(timeout)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return None

    def _release(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


class _EventParser:
    """The event-stream format (WHATWG HTML, "Server-sent events"): lines of ``field: value``,
    events ended by a blank line, comments starting with ``:``."""

    def __init__(self) -> None:
        self._pending = b""
        self._events: list[ServerSentEvent] = []
        self._data: list[str] = []
        self._name = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> None:
        text = self._pending + chunk
        lines = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line.decode("utf-8", errors="replace"))

    def feed_end(self) -> None:
        self._pending = b""  # an event not ended by a blank line is discarded (as browsers do)

    def next_event(self) -> ServerSentEvent | None:
        return self._events.pop(0) if self._events else None

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            return  # a comment (plezi's keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._name = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> None:
        if self._data:
            self._events.append(
                ServerSentEvent(
                    "\n".join(self._data), self._name or "message", self._id, self._retry
                )
            )
        self._data = []
        self._name = ""


# -- the server thread --------------------------------------------------------------------


class _ServerThread:
    """Serve ``app`` on a loopback socket, in a thread with its own loop, until :meth:`stop`."""

    def __init__(
        self,
        app: App,
        config: ServerConfig,
        observe: Callable[[BaseException], object],
        timeout: float,
    ) -> None:
        from .server.server import Server, bind_socket

        self.server = Server(app, config)
        self._sock = bind_socket(config)
        self.port: int = self._sock.getsockname()[1]
        self._observe = observe
        self._timeout = timeout
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="plezi-testclient", daemon=True)

    def _observer(self, exc: BaseException) -> None:
        # Only exceptions of this server's thread: two clients may run at once.
        if threading.current_thread() is self._thread:
            self._observe(exc)

    def start(self) -> None:
        error_observers.append(self._observer)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise RuntimeError("the plezi test server did not start in time")
        if self._failure is not None:
            error_observers.remove(self._observer)
            raise self._failure

    def stop(self, timeout: float) -> None:
        try:
            if self._loop is not None and self._stop is not None and self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the plezi test server did not stop in time")
        finally:
            if self._observer in error_observers:
                error_observers.remove(self._observer)
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        from .launch.run import new_event_loop

        loop = self._loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self._failure = exc
        finally:
            self._ready.set()
            asyncio.set_event_loop(None)
            loop.close()
            self._sock.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.server.start(self._sock)
        self._ready.set()
        await self._stop.wait()
        await self.server.shutdown()


# -- helpers ------------------------------------------------------------------------------


def _config(options: dict[str, Any]) -> ServerConfig:
    """A loopback, port-0, one-process :class:`ServerConfig` with ``options``."""
    fixed = _FIXED & options.keys()
    if fixed:
        raise ConfigError(
            f"TestClient: {', '.join(sorted(fixed))} cannot be set (the test server listens on "
            "a free loopback port, in this process, with in-process pub/sub)"
        )
    unknown = options.keys() - _LIMIT_NAMES - _SERVER_NAMES
    if unknown:
        raise ConfigError(f"TestClient: unknown option(s): {', '.join(sorted(unknown))}")
    limits = Limits(**{k: v for k, v in options.items() if k in _LIMIT_NAMES})
    server = {k: v for k, v in options.items() if k in _SERVER_NAMES}
    server.setdefault("redis", None)
    return ServerConfig(port=0, bind=_HOST, workers=1, limits=limits, **server)


def _body(
    data: Mapping[str, Any] | str | bytes | None, json: Any, content: str | bytes | None
) -> tuple[bytes | None, str | None]:
    """The request body and its content type, from at most one of the three."""
    named = (("data", data), ("json", json), ("content", content))
    given = [name for name, value in named if value is not None]
    if len(given) > 1:
        raise TypeError(f"give one request body, not {' and '.join(given)}")
    if json is not None:
        return orjson.dumps(json), "application/json"
    if isinstance(data, Mapping):
        return urllib.parse.urlencode(data, doseq=True).encode(), (
            "application/x-www-form-urlencoded"
        )
    raw = data if data is not None else content
    if isinstance(raw, str):
        return raw.encode(), None
    return raw, None


def _redirected(
    method: str, response: Response, body: bytes | None
) -> tuple[str, str, bytes | None]:
    """The request a browser makes after ``response`` (a redirect): 303, and 301/302 after a
    POST, become a ``GET`` without a body; 307 and 308 repeat the request."""
    url = urllib.parse.urljoin(response.url, response.headers["location"])
    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
        return ("HEAD" if method == "HEAD" else "GET"), url, None
    return method, url, body


def _cookie(name: str, value: str, path: str) -> http.cookiejar.Cookie:
    return http.cookiejar.Cookie(
        version=0,
        name=name,
        value=value,
        port=None,
        port_specified=False,
        domain=_HOST,
        domain_specified=False,
        domain_initial_dot=False,
        path=path,
        path_specified=True,
        secure=False,
        expires=None,
        discard=True,
        comment=None,
        comment_url=None,
        rest={},
    )
