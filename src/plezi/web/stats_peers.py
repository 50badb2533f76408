"""The workers of one cluster reading each other's figures (``plezi.cluster_stats()``).

Each worker listens on ``stats-<index>.sock`` in the folder the master made for the cluster (the
one that holds the pub/sub relay's socket). Connecting is the question: the worker writes its
:func:`~.metrics.local_stats` as JSON and closes. A worker that asks connects to every other
socket at once and waits at most :data:`TIMEOUT`; a worker that is gone (its socket refuses) or
slow is left out of that answer, and one restarted in its place listens on the same name.

Nothing of this runs outside a scrape or a ``cluster_stats()`` call: no counter crosses a
process while the server works.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
from collections.abc import Callable
from typing import Any, Final

import orjson

__all__ = ["TIMEOUT", "PeerStats", "peer_stats"]

log = logging.getLogger("plezi")

#: Seconds a scrape waits for the other workers' figures.
TIMEOUT: Final = 2.0
#: The largest answer read from a worker (a figure per route: far below this).
_MAX_ANSWER = 4 * 1024 * 1024

#: This worker's listener, while it serves (``None`` in a single process).
_current: PeerStats | None = None


class PeerStats:
    """A worker's end: answers the others, and asks them (see the module docstring)."""

    def __init__(self, directory: str, index: int, figures: Callable[[], dict[str, Any]]) -> None:
        self.directory = directory
        #: This process's figures (:func:`plezi.web.metrics.local_stats`).
        self.figures = figures
        self.path = os.path.join(directory, f"stats-{index}.sock")
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (replacing the socket a worker of the same index left behind)."""
        global _current
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._answer, self.path)
        _current = self

    async def stop(self) -> None:
        global _current
        if _current is self:
            _current = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self.figures()))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def ask_others(self) -> list[dict[str, Any]]:
        """The other workers' figures (those that answered within :data:`TIMEOUT`)."""
        paths = [
            path
            for path in glob.glob(os.path.join(glob.escape(self.directory), "stats-*.sock"))
            if path != self.path
        ]
        answers = await asyncio.gather(*(_ask(path) for path in paths))
        return [answer for answer in answers if answer is not None]


async def _ask(path: str) -> dict[str, Any] | None:
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path)
            data = bytearray()
            try:
                while chunk := await reader.read(65536):
                    data += chunk
                    if len(data) > _MAX_ANSWER:
                        raise ValueError("answer too large")
            finally:
                writer.close()
        figures = orjson.loads(data)
    except (OSError, TimeoutError, ValueError) as exc:  # (orjson's error is a ValueError)
        log.debug("no figures from %s: %s", path, exc)
        return None
    return figures if isinstance(figures, dict) else None


async def peer_stats() -> list[dict[str, Any]]:
    """The other workers' figures, or ``[]`` in a single process."""
    current = _current
    return [] if current is None else await current.ask_others()
