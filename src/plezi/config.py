"""Server settings and limits: every tunable in one place, each with a safe, bounded default.

The command line (``--port``, ``--max-body`` ...) and :func:`plezi.run` keyword arguments both end
up here. See ``docs/configuration.md`` for the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Limits", "ServerConfig", "redis_url_from_env"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(slots=True, kw_only=True)
class Limits:
    """Per-connection limits. Each is enforced with a clear status or close code and a log line."""

    #: Request line plus headers, in bytes (HTTP 431 past it).
    max_header_size: int = 32 * KIB
    #: Request body, in bytes (HTTP 413 past it).
    max_body_size: int = 50 * MIB
    #: One incoming WebSocket message, in bytes (close 1009 past it).
    max_message_size: int = 1 * MIB
    #: Seconds an idle keep-alive HTTP connection stays open, and a stalled body may wait.
    keepalive_timeout: float = 40.0
    #: Seconds a client has to send a whole request head (slowloris protection; HTTP 408).
    header_timeout: float = 10.0
    #: Bytes per second a request body must average, counted from the request's first byte
    #: after a grace of ``header_timeout`` (a slow body, like a slow head, holds a connection
    #: forever otherwise; HTTP 408). ``0``: no minimum (a pause of ``header_timeout`` still
    #: ends the request).
    min_body_rate: int = 1 * KIB
    #: Bytes of request bodies held in memory at once, all connections together (never less than
    #: ``max_body_size``). A request whose ``Content-Length`` does not fit gets HTTP 503 before
    #: it sends its body; a chunked body that goes past it, 503 as it arrives.
    max_body_buffer: int = 256 * MIB
    #: Seconds of WebSocket silence before the server sends a ping (0 disables pings). Open
    #: streams are checked every quarter of the shorter of this and ``ping_timeout``: the ping
    #: (and the close after an unanswered one) may come up to that much later.
    ping_interval: float = 40.0
    #: Seconds to wait for any sign of life after a ping before closing with 1011.
    ping_timeout: float = 20.0
    #: Seconds to wait for the peer's close frame after we sent ours.
    close_timeout: float = 5.0
    #: Bytes queued for one client before it counts as a slow consumer and is disconnected.
    max_outgoing_buffer: int = 4 * MIB
    #: Bytes queued past which ``on_drained`` is armed and reading from the client pauses.
    write_high_water: int = 64 * KIB
    #: What happens to a client past ``max_outgoing_buffer``: ``"disconnect"`` it, or ``"drop"``
    #: the messages sent to it until it has caught up (each policy logs a line).
    slow_consumer: str = "disconnect"
    #: Open connections (HTTP, WebSocket and SSE together) past which a new one gets HTTP 503 and
    #: is closed (Iodine's ``max_clients``). ``0``: the process's open-file limit minus 64 (every
    #: plezi process raises its soft limit to the hard one at start and logs the limit obtained:
    #: ``plezi.server.limits``), so that files, Redis and logs always have descriptors left.
    max_connections: int = 0

    def validate(self) -> None:
        """Raise :class:`plezi.ConfigError` when a limit is out of range."""
        from .errors import ConfigError

        for name in (
            "max_header_size",
            "max_body_size",
            "max_message_size",
            "max_outgoing_buffer",
            "max_body_buffer",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of bytes")
        if self.min_body_rate < 0:
            raise ConfigError("min_body_rate must be >= 0 bytes per second (0: no minimum)")
        for name in ("keepalive_timeout", "header_timeout", "ping_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.ping_interval < 0:
            raise ConfigError("ping_interval must be >= 0 (0 disables pings)")
        if self.max_connections < 0:
            raise ConfigError("max_connections must be >= 0 (0: from the open-file limit)")
        if self.slow_consumer not in ("disconnect", "drop"):
            raise ConfigError("slow_consumer must be 'disconnect' or 'drop'")
        if self.write_high_water > self.max_outgoing_buffer:
            raise ConfigError("write_high_water must not exceed max_outgoing_buffer")


def redis_url_from_env() -> str | None:
    """``PL_REDIS_URL``, else ``REDIS_URL`` (Plezi's order), else ``None``."""
    return os.environ.get("PL_REDIS_URL") or os.environ.get("REDIS_URL") or None


def _default_workers() -> int:
    value = os.environ.get("WEB_CONCURRENCY", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _default_port() -> int:
    value = os.environ.get("PORT", "")
    return int(value) if value.isdigit() else 3000


@dataclass(slots=True, kw_only=True)
class ServerConfig:
    """Where and how the server listens."""

    port: int = field(default_factory=_default_port)
    #: An address to bind (``0.0.0.0``, ``::1`` ...) or a Unix socket path (contains ``/``).
    bind: str = "0.0.0.0"
    #: Worker processes (``--workers``, ``$WEB_CONCURRENCY``); more than 1 starts a master
    #: process that supervises them and relays pub/sub between them.
    workers: int = field(default_factory=_default_workers)
    #: Redis URL for pub/sub across machines (``--redis``; default ``$PL_REDIS_URL``, else
    #: ``$REDIS_URL``); ``None``: in-process (or cluster) pub/sub only.
    redis: str | None = field(default_factory=redis_url_from_env)
    #: Log one line per request.
    verbose: bool = False
    #: Seconds graceful shutdown waits for connections to finish before cutting them.
    shutdown_timeout: float = 10.0
    #: Listen backlog.
    backlog: int = 2048
    #: Origins allowed to open a WebSocket (``https://example.com``, ``https://*.example.com``);
    #: others get HTTP 403 and a log line. Empty (the default): no Origin check. See
    #: :class:`plezi.protocol.OriginPolicy` and ``docs/security.md``.
    allowed_origins: tuple[str, ...] = ()
    #: A folder whose files are served before the routes (``--public``, Iodine's ``-www``):
    #: GET and HEAD of a path that names a regular file in it, ``index.html`` for ``/`` and
    #: ``/dir/``. ``None`` (the default): no static files, and no cost. See
    #: :mod:`plezi.http.static` and ``docs/security.md``.
    public: str | None = None
    #: TLS (``--tls-cert``, ``--tls-key``): the certificate chain and its private key, PEM
    #: files read at start; the key may sit in the certificate's file (``tls_key`` ``None``).
    #: ``None`` (the default): plain HTTP. See :mod:`plezi.server.tls` and ``docs/tls.md``.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Serve TLS with a throwaway self-signed certificate for localhost, made at start
    #: (``--tls-self-signed``, Iodine's ``-tls`` without files): development only.
    tls_self_signed: bool = False
    #: Restart the server when the application's files change (``--reload``): development
    #: only, one process. See :mod:`plezi.launch.reload`.
    reload: bool = False
    #: More folders whose files restart the server under ``reload`` (``--reload-dir``).
    reload_dirs: tuple[str, ...] = ()
    #: WebSocket ``permessage-deflate`` (``--compression``): ``"on"`` (published messages and
    #: each connection's own writes), ``"broadcasts"`` (published messages only) or ``"off"``
    #: (never negotiated). See ``docs/compression.md``.
    compression: str = "on"
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.compression not in ("on", "off", "broadcasts"):
            from .errors import ConfigError

            raise ConfigError("compression must be 'on', 'off' or 'broadcasts'")
        if self.public is not None:
            from .http.static import PublicFolder

            self.public = os.fspath(self.public)
            PublicFolder(self.public)  # ConfigError when it is not a folder
        origins = self.allowed_origins
        if isinstance(origins, str):  # one origin given as a plain string
            origins = (origins,)
        self.allowed_origins = tuple(origins)
        if self.allowed_origins:
            from .errors import ConfigError
            from .protocol.handshake import OriginPolicy

            try:
                OriginPolicy(self.allowed_origins)
            except ValueError as exc:
                raise ConfigError(f"allowed_origins: {exc}") from None
        self._check_tls()
        self._check_reload()

    def _check_tls(self) -> None:
        from .errors import ConfigError

        if self.tls_cert is not None:
            self.tls_cert = os.fspath(self.tls_cert)
        if self.tls_key is not None:
            self.tls_key = os.fspath(self.tls_key)
            if self.tls_cert is None:
                raise ConfigError("--tls-key needs --tls-cert (the certificate it belongs to)")
        if self.tls_self_signed and self.tls_cert is not None:
            raise ConfigError("choose --tls-cert/--tls-key or --tls-self-signed, not both")

    def _check_reload(self) -> None:
        from .errors import ConfigError

        dirs = self.reload_dirs
        self.reload_dirs = (
            (os.fspath(dirs),)
            if isinstance(dirs, str | os.PathLike)
            else tuple(os.fspath(d) for d in dirs)
        )
        for folder in self.reload_dirs:
            if not os.path.isdir(folder):
                raise ConfigError(f"--reload-dir {folder}: not a folder")
        if self.reload and self.workers > 1:
            raise ConfigError(
                f"--reload runs one server process, not {self.workers} workers: drop --workers "
                "(and $WEB_CONCURRENCY) while developing"
            )

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS (a certificate given, or a self-signed one asked)."""
        return self.tls_cert is not None or self.tls_self_signed

    @property
    def is_unix(self) -> bool:
        """Whether :attr:`bind` names a Unix socket path rather than an address."""
        return "/" in self.bind or self.bind.endswith(".sock")
