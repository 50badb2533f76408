"""The server: listening sockets, the connection registry, the reaper, the flush, shutdown.

Per-server state lives here; per-connection state lives in :mod:`.http`,
:mod:`.connection`, :mod:`.websocket` and :mod:`.sse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..config import ServerConfig
from ..errors import ServerStartError
from .http import HttpProtocol
from .state import ServerState
from .tls import server_context

if TYPE_CHECKING:
    from .types import Application

__all__ = ["Server", "bind_socket", "bind_sockets"]

log = logging.getLogger("plezi")

#: Seconds the shutdown waits for what it cut or cancelled to finish ending.
_GRACE = 1.0

#: One listening socket per worker, joined with SO_REUSEPORT: Linux only (on BSD and macOS the
#: option lets sockets share a port but does not balance connections between them).
_REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class Server(ServerState):
    """Serves one :class:`plezi.App` (any :class:`~.types.Application`) on one event loop:
    listening, the reaper, shutdown."""

    def __init__(self, app: Application, config: ServerConfig) -> None:
        super().__init__(app, config)
        self.sockets: list[socket.socket] = []
        #: The Unix socket paths listened on, read at start: closing the server closes the
        #: socket, after which its name can no longer be asked.
        self._unix_paths: list[str] = []
        self._servers: list[asyncio.AbstractServer] = []
        #: Remove a Unix socket's path at shutdown (a cluster worker leaves it to its master).
        self.owns_socket_path = True
        self._reaper: asyncio.TimerHandle | None = None
        #: When the reaper next checks the open streams too (see ``_due``).
        self._streams_due = 0.0
        if config.tls_self_signed and config.tls_cert is None:
            raise ServerStartError(
                "tls_self_signed: the certificate is made where the server is launched "
                "(plezi.run, the command line); a Server takes tls_cert and tls_key"
            )
        #: TLS: read once, here, so a bad certificate fails before anything listens.
        self.ssl_context = server_context(config)

    # -- starting ---------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind (or adopt ``sock``) and start accepting connections."""
        loop = asyncio.get_running_loop()
        self.use_loop(loop)
        self._stop = asyncio.Event()
        self.now = loop.time()
        config = self.config
        if sock is None:
            sock = bind_socket(config)
        # The application's services (the pub/sub engine) are up before the first client is
        # accepted: a cluster worker must not serve a subscriber before it is linked to the
        # other workers, or that subscriber misses their messages.
        await self.app.startup(self)
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            # The handshake comes before the first request: a client that stalls in it is cut
            # after the time it would have had to send a request head (slowloris); a peer that
            # never answers our close_notify, after the WebSocket close timeout.
            tls = {
                "ssl": self.ssl_context,
                "ssl_handshake_timeout": self.limits.header_timeout,
                "ssl_shutdown_timeout": self.limits.close_timeout,
            }
        # PERF: a partial calls the class with no Python frame (a lambda is one per connection).
        protocol = functools.partial(HttpProtocol, self)
        if sock.family == socket.AF_UNIX:
            self._unix_paths.append(sock.getsockname())
            server = await loop.create_unix_server(
                protocol, sock=sock, backlog=config.backlog, **tls
            )
        else:
            server = await loop.create_server(protocol, sock=sock, backlog=config.backlog, **tls)
        self._servers.append(server)
        self.sockets.append(sock)
        self._tick()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        return int(self.sockets[0].getsockname()[1])

    def _tick_interval(self) -> float:
        limits = self.limits
        shortest = min(
            limits.keepalive_timeout,
            limits.header_timeout,
            limits.ping_timeout,
            limits.close_timeout,
            limits.ping_interval or limits.keepalive_timeout,
        )
        return max(0.02, min(1.0, shortest / 4))

    def _tick(self) -> None:
        """The reaper: one timer for all connections (no timer handle per connection)."""
        assert self._loop is not None
        now = self.now = self._loop.time()
        if self.master_pid is not None and os.getppid() != self.master_pid:
            log.error("the cluster master (pid %d) is gone; shutting down", self.master_pid)
            self.master_pid = None
            self.request_shutdown()
        for conn in list(self._due(now)):
            try:
                conn.check_timeout(now)
            except Exception:
                log.exception("error while checking a connection's timers")
        self._reaper = self._loop.call_later(self._tick_interval(), self._tick)

    def _stream_sweep_interval(self) -> float:
        """How often the open streams are checked: their deadlines are the ping's (a ping after
        ``ping_interval`` of silence, an answer within ``ping_timeout``), checked at a quarter
        of the shorter, as the tick does for the shortest deadline of all."""
        limits = self.limits
        shorter = min(limits.ping_interval or limits.ping_timeout, limits.ping_timeout)
        return max(self._tick_interval(), shorter / 4)

    def _due(self, now: float) -> Collection[Any]:
        """The connections this tick checks: every one when the open streams are due, else only
        the quick ones (``ServerState.quick``: HTTP connections and closing streams).

        PERF: a check reads the connection's object from memory: sweeping every held connection
        every second cost 0.13-0.27 us per connection (``bench/million.py --hold``, 20,000 to
        300,000 idle connections), a sixth to a quarter of a core at a million doing nothing."""
        if now >= self._streams_due:
            self._streams_due = now + self._stream_sweep_interval()
            return self.connections
        return self.quick

    # -- running and stopping ---------------------------------------------------------------

    async def serve(self, sock: socket.socket | None = None, *, signals: bool = True) -> None:
        """Start, serve until :meth:`request_shutdown` (or SIGINT/SIGTERM), shut down."""
        await self.start(sock)
        loop = asyncio.get_running_loop()
        if signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_shutdown)
        try:
            assert self._stop is not None
            await self._stop.wait()
            await self.shutdown()
        finally:
            if signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    async def shutdown(self) -> None:
        """Stop accepting; ``on_shutdown`` and close 1001 for every WebSocket; wait up to
        ``shutdown_timeout`` for connections and running callbacks to end; then cut the remaining
        connections and cancel the remaining callbacks (each given a short grace to finish)."""
        if self.shutting_down:
            return
        self.shutting_down = True
        assert self._loop is not None
        deadline = self._loop.time() + self.config.shutdown_timeout
        for server in self._servers:
            server.close()
        if self.owns_socket_path:
            for path in self._unix_paths:
                _unlink_quietly(path)
        count = len(self.connections)
        if count:
            log.info("shutting down: closing %d connection(s)", count)
        for conn in list(self.connections):
            try:
                conn.shutdown()
            except Exception:
                log.exception("error while shutting a connection down")
        self.flusher.flush()
        await self._wait_for_connections(deadline)
        if self.connections:
            log.warning(
                "shutdown: %d connection(s) did not close in time; cutting them",
                len(self.connections),
            )
            self._abort_all()
            await self._wait_for_connections(self._loop.time() + _GRACE)
        await self._finish_tasks(deadline)
        if self._reaper is not None:
            self._reaper.cancel()
        for server in self._servers:
            # A TLS handshake still in progress is no connection of ours yet (we cannot ask it
            # to stop); asyncio's server waits for it (uvloop's does not: it is cut when the
            # process exits). Either way it ends by ``header_timeout`` at the latest.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.limits.header_timeout + _GRACE)
        try:
            await self.app.cleanup(self)
        except Exception:
            log.exception("error while stopping the application's services")

    async def _wait_for_connections(self, deadline: float) -> None:
        assert self._loop is not None
        while self.connections and self._loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def _finish_tasks(self, deadline: float) -> None:
        """Wait for running callbacks until ``deadline``, then cancel the rest."""
        loop = self._loop
        assert loop is not None
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - loop.time())
        if self._tasks:
            log.warning("shutdown: cancelling %d callback(s) still running", len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=_GRACE)


def bind_socket(config: ServerConfig) -> socket.socket:
    """Bind the listening socket, with a clear error when the address is taken."""
    return _listen(_bind(config), config.backlog)


def bind_sockets(config: ServerConfig) -> list[socket.socket]:
    """The listening sockets for ``config.workers`` processes: one per worker (TCP on Linux), or
    one that all of them share.

    Workers accepting from one shared socket split connections unevenly on Linux (the kernel
    wakes the worker that waited last; in a burst of connects one worker may take nearly all).
    Sockets bound to the same address with ``SO_REUSEPORT`` form a group in which the kernel
    hashes each new connection to one socket: an even split. The first socket is bound without
    the option, so the address-in-use check is the same as for one process (another server on
    the port, plezi or not, same user or not, is refused); the option is set after that bind
    (Linux reads it when a later socket binds) and before the listen (which makes the group),
    then the others join it. All listen at once, before any worker starts: a connection
    that arrives before its worker is ready (or while a dead worker is restarted, since the
    master keeps every socket open) waits in that socket's backlog.
    """
    first = _bind(config)
    if config.workers == 1 or config.is_unix or not _REUSE_PORT:
        return [_listen(first, config.backlog)]
    try:
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        log.warning("SO_REUSEPORT refused (%s): the workers share one socket", exc)
        return [_listen(first, config.backlog)]
    sockets = [_listen(first, config.backlog)]
    try:
        for _ in range(config.workers - 1):
            sockets.append(_join(first, config.backlog))
    except OSError as exc:
        log.warning("cannot bind a socket per worker (%s): the workers share one socket", exc)
        for sock in sockets[1:]:
            sock.close()
        return [first]
    return sockets


def _bind(config: ServerConfig) -> socket.socket:
    try:
        if config.is_unix:
            _unlink_stale(config.bind)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(config.bind)
        else:
            family = socket.AF_INET6 if ":" in config.bind else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.bind, config.port))
    except OSError as exc:
        where = config.bind if config.is_unix else f"{config.bind}:{config.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ServerStartError(
                f"cannot listen on {where}: the address is already in use "
                "(is another server running? choose another with --port or $PORT)"
            ) from exc
        raise ServerStartError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    return sock


def _join(first: socket.socket, backlog: int) -> socket.socket:
    """Another listening socket on ``first``'s address (port 0 resolved), in its reuseport
    group."""
    sock = socket.socket(first.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(first.getsockname())
    except OSError:
        sock.close()
        raise
    return _listen(sock, backlog)


def _listen(sock: socket.socket, backlog: int) -> socket.socket:
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _unlink_stale(path: str) -> None:
    """Remove a Unix socket left by a dead server; refuse to remove anything else."""
    if not os.path.exists(path):
        return
    import stat

    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise ServerStartError(f"cannot listen on {path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens there: stale
    else:
        raise ServerStartError(f"cannot listen on {path}: another server is using it")
    finally:
        probe.close()


def _unlink_quietly(path: Any) -> None:
    if isinstance(path, str) and path:
        try:
            os.unlink(path)
        except OSError:
            pass
