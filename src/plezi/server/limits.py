"""The process's open-file limit: raised to the hard limit at start, and the connection cap
that follows from it.

Every open connection is a file descriptor, so the soft ``RLIMIT_NOFILE`` a process was started
with (often 1024) caps its connections whatever its memory. A process may raise its own soft
limit up to the hard one without privileges, so every plezi process (single, master, worker)
does so before it accepts anything (Iodine does the same), logs the limit it obtained, and the
default ``max_connections`` is that limit minus :data:`FD_RESERVE`.
"""

from __future__ import annotations

import functools
import logging
import resource

from ..config import Limits

__all__ = ["FD_RESERVE", "connection_cap", "raise_open_files", "use_open_files_limit"]

log = logging.getLogger("plezi")

#: Descriptors kept free for what is not a client connection (listening sockets, the cluster
#: relay, Redis, logs, files being served) when the cap comes from the open-file limit.
FD_RESERVE = 64
#: The cap when the open-file limit is unlimited.
_UNLIMITED = 1 << 62


def raise_open_files() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return (before, after).

    When the kernel refuses (an unlimited hard limit above what the kernel allows one process,
    as on macOS), the soft limit stays where it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@functools.lru_cache(maxsize=8)
def connection_cap(max_connections: int) -> int:
    """The number of open connections past which a new one is refused: ``max_connections``
    when set, else the open-file limit minus :data:`FD_RESERVE` (read once: the limit is
    raised at start, before the first connection)."""
    if max_connections:
        return max_connections
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _UNLIMITED
    return max(1, soft - FD_RESERVE)


def use_open_files_limit(limits: Limits) -> int:
    """Raise the open-file limit (:func:`raise_open_files`) and log one line with the limit
    obtained and the connection cap it gives; return that cap."""
    before, after = raise_open_files()
    connection_cap.cache_clear()  # a cap read before the raise would be stale
    cap = connection_cap(limits.max_connections)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    shown = "unlimited" if after == resource.RLIM_INFINITY else str(after)
    if after != before:
        raised = f"raised from {before}, the hard limit"
    elif after == hard:
        raised = "the hard limit"
    else:
        raised = f"the hard limit {hard} refused"
    where = "set" if limits.max_connections else f"the open-file limit - {FD_RESERVE}"
    log.info("open files: %s (%s); max_connections %d (%s)", shown, raised, cap, where)
    return cap
