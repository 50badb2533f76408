"""``--workers N``: the master process. It holds the listening sockets (one per worker, or one that
all share: see :func:`~plezi.server.server.bind_sockets`), starts N worker processes, restarts any
that die (a restarted worker serves the socket of the one it replaces), relays pub/sub between
them, and shuts them down gracefully.

Workers are fresh interpreters running the same command line (``sys.orig_argv``), told by the
``PLEZI_WORKER`` environment variable which inherited socket to serve and where the relay is:
no ``fork()`` of a process that has threads or a running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..config import ServerConfig
from ..pubsub.cluster import Relay

__all__ = ["WORKER_ENV", "Supervisor", "worker_settings"]

log = logging.getLogger("plezi")

#: ``"<fd>:<index>:<relay path>"`` in a worker's environment.
WORKER_ENV = "PLEZI_WORKER"
#: Seconds between checks of the workers' health.
_POLL = 0.1


def worker_settings() -> tuple[int, int, str] | None:
    """``(fd, index, relay path)`` when this process is a worker, else ``None``."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    fd, index, path = value.split(":", 2)
    return int(fd), int(index), path


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    failures: int = 0


class Supervisor:
    """Runs in the master process (see the module docstring)."""

    def __init__(self, config: ServerConfig, sockets: list[socket.socket], count: int) -> None:
        self.config = config
        #: Worker ``i`` (from 1) serves ``sockets[(i - 1) % len(sockets)]``.
        self.sockets = sockets
        self.count = count
        self.workers: dict[int, _Worker] = {}
        self._dir = tempfile.mkdtemp(prefix="plezi-")
        self.relay = Relay(os.path.join(self._dir, "relay.sock"))
        self._stop: asyncio.Event | None = None
        self._restart_at: dict[int, float] = {}

    def _spawn(self, index: int, failures: int = 0) -> None:
        fd = self.sockets[(index - 1) % len(self.sockets)].fileno()
        env = {**os.environ, WORKER_ENV: f"{fd}:{index}:{self.relay.path}"}
        argv = [sys.executable, *sys.orig_argv[1:]]
        # A session of its own: a Ctrl+C in the terminal reaches the master only, which then
        # stops every worker once (a second signal would cut their connections).
        proc = subprocess.Popen(argv, env=env, pass_fds=(fd,), start_new_session=True)
        self.workers[index] = _Worker(index, proc, time.monotonic(), failures)
        log.info("worker %d started (pid %d)", index, proc.pid)

    async def run(self) -> int:
        """Serve until SIGINT/SIGTERM; returns the exit code."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        await self.relay.start()
        try:
            for index in range(1, self.count + 1):
                self._spawn(index)
            while not self._stop.is_set():
                self._check_workers()
                try:
                    await asyncio.wait_for(self._stop.wait(), _POLL)
                except TimeoutError:
                    pass
            await self._stop_workers()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.relay.stop()
            shutil.rmtree(self._dir, ignore_errors=True)
            if self.config.is_unix:  # the workers leave the socket's path to the master
                with contextlib.suppress(OSError):
                    os.unlink(self.config.bind)
        return 0

    def _check_workers(self) -> None:
        now = time.monotonic()
        for index, worker in list(self.workers.items()):
            code = worker.proc.poll()
            if code is None:
                continue
            if index not in self._restart_at:
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                # A worker that dies right after starting is probably broken: back off.
                quick = now - worker.started < 2.0
                failures = worker.failures + 1 if quick else 0
                delay = min(5.0, 0.1 * 2**failures) if quick else 0.0
                log.error(
                    "worker %d (pid %d) died (%s); restarting%s",
                    index,
                    worker.proc.pid,
                    how,
                    f" in {delay:.1f}s" if delay else "",
                )
                worker.failures = failures
                self._restart_at[index] = now + delay
            if now >= self._restart_at[index]:
                del self._restart_at[index]
                self._spawn(index, worker.failures)

    async def _stop_workers(self) -> None:
        log.info("stopping %d worker(s)", len(self.workers))
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout + 5.0
        while time.monotonic() < deadline and any(
            w.proc.poll() is None for w in self.workers.values()
        ):
            await asyncio.sleep(_POLL / 2)
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                log.warning(
                    "worker %d (pid %d) did not stop in time; killing it",
                    worker.index,
                    worker.proc.pid,
                )
                worker.proc.kill()
                worker.proc.wait()
