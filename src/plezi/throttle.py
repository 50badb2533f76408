"""Log lines a peer can trigger at will, at most one a second per kind.

A refusal that a client can repeat as fast as it can send (a connection past ``max_connections``,
a WebSocket from a refused ``Origin``, a public-folder link that leads out of the folder) must not
let that client flood the log. Each kind of line gets one :class:`LogThrottle`: the first line of
a second is logged, the others are counted and the count is added to the next line logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most one line per ``interval`` seconds; the lines left out are counted."""

    __slots__ = ("_next", "_suppressed", "interval")

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def log(self, logger: logging.Logger, level: int, message: str, *args: Any) -> bool:
        """Log ``message % args`` at ``level`` unless a line was logged less than ``interval``
        seconds ago; ``True`` when it was logged."""
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (%d more like it since the last such line: not logged)"
            args = (*args, suppressed)
        logger.log(level, message, *args)
        return True
