"""The request object a controller sees as ``self.request``."""

from __future__ import annotations

from typing import Any

__all__ = ["Request"]


class Request:
    """One parsed HTTP request (or WebSocket upgrade request).

    ``headers`` maps lower-case header names to values (repeated headers joined with ``", "``).

    PERF: every argument may be passed by position; the server does, since a call with keyword
    arguments costs twice as much (the keywords go through a dict on the way to ``__init__``).
    """

    __slots__ = (
        "_cookies",
        "body",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "scheme",
        "url",
    )

    def __init__(
        self,
        method: str,
        url: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes = b"",
        http_version: str = "1.1",
        client: tuple[str, int] | None = None,
        scheme: str = "http",
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.url = url
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.http_version = http_version
        self.client = client
        self.scheme = scheme
        self.keep_alive = keep_alive
        self._cookies: dict[str, str] | None = None

    @property
    def cookies(self) -> dict[str, str]:
        """The cookies the client sent (parsed once, on first use)."""
        if self._cookies is None:
            from .cookies import parse_cookie_header

            raw = self.headers.get("cookie")
            self._cookies = parse_cookie_header(raw) if raw else {}
        return self._cookies

    @property
    def host(self) -> str:
        """The ``Host`` header, or an empty string."""
        return self.headers.get("host", "")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not JSON)."""
        import orjson

        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"
