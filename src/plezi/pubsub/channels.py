"""Per-channel delivery options: history (recoverable channels) and presence.

``plezi.channel("chat", history=500)`` or ``plezi.channel("room.*", presence=True)`` names a
channel or a Redis glob of channels. Channels that no entry names keep the default: at most once,
no history, no presence, and no extra cost: :func:`options_for` answers them from a cache after
the first look.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .patterns import compile_glob

__all__ = [
    "DEFAULT_HISTORY_TTL",
    "DEFAULT_PRESENCE_TTL",
    "ChannelOptions",
    "clear",
    "configure",
    "options_for",
]

#: Seconds a message stays in a channel's history when ``history_ttl`` is not given.
DEFAULT_HISTORY_TTL = 300.0
#: Seconds a presence entry outlives its server's last refresh when ``presence_ttl`` is not given.
DEFAULT_PRESENCE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What one :func:`plezi.channel` call asked for a channel (or a glob of channels).

    ``history`` is the number of messages kept (0: none, the channel is not recoverable);
    ``history_ttl`` how long a message is kept, in seconds; ``presence`` whether subscribers
    are recorded; ``presence_ttl`` how long an entry outlives its server's last refresh.
    """

    name: str
    pattern: bool = False
    history: int = 0
    history_ttl: float = DEFAULT_HISTORY_TTL
    presence: bool = False
    presence_ttl: float = DEFAULT_PRESENCE_TTL

    @property
    def recoverable(self) -> bool:
        """Messages on this channel get positions and can be replayed."""
        return self.history > 0


_lock = threading.Lock()
#: Exact names, then globs in the order they were configured (the first match wins).
_exact: dict[str, ChannelOptions] = {}
_globs: list[tuple[Callable[[str], object], ChannelOptions]] = []
#: ``options_for`` answers, dropped whenever the configuration changes.
_cache: dict[str, ChannelOptions | None] = {}


def configure(
    name: str,
    *,
    history: int = 0,
    history_ttl: float = DEFAULT_HISTORY_TTL,
    presence: bool = False,
    presence_ttl: float = DEFAULT_PRESENCE_TTL,
) -> ChannelOptions:
    """Set the options of the channel ``name``; a name with glob characters (``*``, ``?``,
    ``[``) configures every channel it matches. Configuring a name again replaces its options.

    Raises :class:`ValueError` for a negative history, a TTL that is not positive, or an empty
    name.
    """
    if not isinstance(name, str) or not name or name.startswith("\x00"):
        raise ValueError(f"invalid channel name {name!r}")
    if isinstance(history, bool) or not isinstance(history, int) or history < 0:
        raise ValueError(f"history must be a whole number >= 0, not {history!r}")
    for label, ttl in (("history_ttl", history_ttl), ("presence_ttl", presence_ttl)):
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
            raise ValueError(f"{label} must be a number of seconds > 0, not {ttl!r}")
    pattern = any(c in name for c in "*?[")
    options = ChannelOptions(
        name, pattern, history, float(history_ttl), bool(presence), float(presence_ttl)
    )
    with _lock:
        if pattern:
            _globs[:] = [entry for entry in _globs if entry[1].name != name]
            _globs.append((compile_glob(name), options))
        else:
            _exact[name] = options
        _cache.clear()
    return options


def options_for(channel: str) -> ChannelOptions | None:
    """The options that apply to ``channel``: its own entry, else the first glob that matches
    it, else ``None`` (the default channel: no history, no presence)."""
    try:
        return _cache[channel]
    except KeyError:
        pass
    found = _exact.get(channel)
    if found is None:
        for match, options in _globs:
            if match(channel):
                found = options
                break
    if len(_cache) < 65536:  # a bounded cache: channel names can be made up by clients
        _cache[channel] = found
    return found


def clear() -> None:
    """Forget every channel's options (tests, and an app that reconfigures from scratch)."""
    with _lock:
        _exact.clear()
        _globs.clear()
        _cache.clear()
