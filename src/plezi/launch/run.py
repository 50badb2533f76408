"""Starting the server: event loop choice, logging, the start message, the exit code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .. import compiled
from ..config import ServerConfig
from ..errors import PleziError
from ..server.limits import use_open_files_limit
from ..server.server import Server, bind_sockets
from ..server.tls import server_context
from ..web.metrics import local_stats
from ..web.stats_peers import PeerStats
from .devcert import with_dev_certificate
from .flags import config_from_args, script_help, wants_help
from .reload import Reloader, reload_child_fd
from .supervisor import Supervisor, worker_settings

__all__ = ["new_event_loop", "serve_app", "serve_config"]

log = logging.getLogger("plezi")
T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it is a dependency on Linux/macOS), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def setup_logging() -> None:
    """Print plezi's log lines to stderr unless the application configured logging itself."""
    root = logging.getLogger()
    plezi_log = logging.getLogger("plezi")
    if root.handlers or plezi_log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s plezi[%(process)d] %(levelname)s %(message)s")
    )
    plezi_log.addHandler(handler)
    plezi_log.setLevel(logging.INFO)


class _InlineFallbackExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs work inline when the interpreter refuses new threads.

    Autostart runs the server while Python is finishing the main script; some Python versions
    (3.12) refuse to start threads then. Blocking the loop briefly (e.g. one DNS lookup) beats
    failing; ``plezi.run()`` at the end of the script avoids the situation entirely.
    """

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                future.set_exception(exc)
            return future


def serve_config(app: Any, config: ServerConfig, *, inline_fallback: bool = False) -> int:
    """Serve in the mode the environment and ``config`` ask for: a worker of a cluster, the
    master of ``config.workers`` workers, or a single process. Returns the exit code."""
    worker = worker_settings()
    if worker is not None:
        return _serve_worker(app, config, *worker, inline_fallback=inline_fallback)
    reloaded = reload_child_fd()
    if reloaded is not None:  # the server under --reload: serve its parent's socket
        return _serve_worker(app, config, reloaded, 0, None, inline_fallback=inline_fallback)
    try:
        config, made_cert = with_dev_certificate(config)
        if config.redis and not config.reload:  # under --reload, the server's process checks
            from ..pubsub.redis import check_redis

            check_redis(config.redis)
        _install_public(app, config)
        sockets = bind_sockets(config)
        server = Server(app, config) if config.workers == 1 and not config.reload else None
        if server is None:
            server_context(config)  # a bad certificate fails here, not in every worker
    except PleziError as exc:
        print(f"plezi: {exc}", file=sys.stderr)
        return 1
    port = 0 if config.is_unix else sockets[0].getsockname()[1]
    where = config.bind if config.is_unix else _url(config.bind, port, config.tls)
    if config.redis and server is not None:
        _use_redis(config.redis)
    mode = _mode(config.workers, len(sockets)) if server is None else "1 process"
    if config.reload:
        mode = "1 process, restarted when a file changes"
    use_open_files_limit(config.limits)  # before any connection: the cap follows the limit
    problem = compiled.build_problem()
    if problem is not None:
        log.warning("running the pure-Python modules: %s", problem)
    mode += ", compiled" if compiled.mode()[0] == "compiled" else ", pure Python"
    log.info("listening on %s (pid %d, %s); press Ctrl+C to stop", where, os.getpid(), mode)
    if made_cert:
        log.warning(
            "TLS with a throwaway self-signed certificate for localhost, 127.0.0.1 and ::1 "
            "(%s, deleted at exit): clients do not trust it; development only",
            config.tls_cert,
        )
    if config.public is not None:
        log.info("serving the files in %s before the routes", os.path.realpath(config.public))
    if config.reload:
        code = _run_loop(Reloader(config, sockets[0]).run(), inline_fallback)
    elif server is None:
        code = _run_loop(Supervisor(config, sockets, config.workers).run(), inline_fallback)
    else:
        code = _run_loop(server.serve(sockets[0]), inline_fallback)
    log.info("stopped")
    return code or 0


def _mode(workers: int, sockets: int) -> str:
    return f"{workers} workers, " + ("a socket each" if sockets > 1 else "one shared socket")


def _serve_worker(
    app: Any,
    config: ServerConfig,
    fd: int,
    index: int,
    relay: str | None,
    *,
    inline_fallback: bool,
) -> int:
    """A worker of a cluster: serve the inherited socket (its own, or the one all workers share),
    pub/sub through the master's relay. With no relay: the server under ``--reload``, one
    process serving its parent's socket."""
    from ..pubsub.cluster import ClusterEngine
    from ..pubsub.hub import hub

    use_open_files_limit(config.limits)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    _install_public(app, config)  # the config was checked when it was parsed, in this process
    try:
        config, _made = with_dev_certificate(config)  # the parent's, when it made one
        server = Server(app, config)
    except PleziError as exc:  # the parent checked the certificate; it may have changed since
        print(f"plezi: {exc}", file=sys.stderr)
        return 1
    server.owns_socket_path = False
    server.master_pid = os.getppid()
    if config.redis:
        _use_redis(config.redis)  # Redis crosses processes itself: no relay needed
    elif relay is not None:
        hub.use_engine(ClusterEngine(hub, relay, on_lost=server.request_shutdown))
    if relay is None:
        log.info("server ready (pid %d); it restarts when a file changes", os.getpid())
        code = _run_loop(server.serve(sock), inline_fallback)
    else:
        log.info("worker %d ready (pid %d)", index, os.getpid())
        peers = PeerStats(os.path.dirname(relay), index, local_stats)
        code = _run_loop(_answering_peers(peers, server.serve(sock)), inline_fallback)
    return code or 0


async def _answering_peers(peers: PeerStats, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` while this worker answers the others' questions for figures
    (``/metrics`` covers the whole cluster: see :mod:`plezi.web.stats_peers`)."""
    try:
        await peers.start()
    except BaseException:
        main.close()
        raise
    try:
        return await main
    finally:
        await peers.stop()


def _install_public(app: Any, config: ServerConfig) -> None:
    """Put the public folder's route in front of the application's (``--public``)."""
    if config.public is not None:
        app.serve_public(config.public)


def _use_redis(url: str) -> None:
    from ..pubsub.hub import hub

    hub.use_engine(hub.redis_engine(url))


def _run_loop(main: Coroutine[Any, Any, Any], inline_fallback: bool) -> Any:
    """Run ``main`` on a new loop; a :class:`PleziError` (e.g. Redis unreachable at start) is a
    one-line message and exit status 1."""
    loop = new_event_loop()
    if inline_fallback:
        loop.set_default_executor(_InlineFallbackExecutor())
    try:
        result = loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        return result
    except PleziError as exc:
        print(f"plezi: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()


def _url(host: str, port: int, tls: bool = False) -> str:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def serve_app(
    app: Any, argv: Sequence[str] | None = None, *, inline_fallback: bool = False, **options: Any
) -> int:
    """Parse flags from ``argv`` (default ``sys.argv[1:]``), then serve ``app``; ``--help``
    prints the flags instead, and an invalid or unknown flag is a one-line error (status 2)."""
    setup_logging()
    args = sys.argv[1:] if argv is None else list(argv)
    if wants_help(args):
        print(script_help(), end="")
        return 0
    try:
        config = config_from_args(args, **options)
    except (PleziError, SystemExit) as exc:
        if isinstance(exc, SystemExit):
            return 2 if exc.code is None else int(exc.code)
        print(f"plezi: {exc}", file=sys.stderr)
        return 2
    return serve_config(app, config, inline_fallback=inline_fallback)
