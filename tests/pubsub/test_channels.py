"""``plezi.channel``: per-channel options, exact names and globs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import plezi
from plezi.pubsub import channels


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    channels.clear()
    yield
    channels.clear()


def test_unconfigured_channel_has_no_options() -> None:
    assert channels.options_for("chat") is None


def test_exact_name_and_defaults() -> None:
    plezi.channel("chat", history=500, history_ttl=600)
    options = channels.options_for("chat")
    assert options is not None
    assert (options.history, options.history_ttl, options.recoverable) == (500, 600.0, True)
    assert not options.presence and options.presence_ttl == channels.DEFAULT_PRESENCE_TTL
    assert channels.options_for("chat2") is None


def test_glob_matches_and_first_glob_wins() -> None:
    plezi.channel("room.*", presence=True, presence_ttl=30)
    plezi.channel("room.[ab]*", history=10)
    options = channels.options_for("room.abc")
    assert options is not None and options.presence and not options.recoverable
    assert options.pattern and options.presence_ttl == 30.0
    assert channels.options_for("rooms") is None


def test_exact_name_beats_glob_and_reconfiguring_replaces() -> None:
    plezi.channel("room.*", presence=True)
    assert channels.options_for("room.1") is not None
    plezi.channel("room.1", history=5)
    options = channels.options_for("room.1")
    assert options is not None and options.history == 5 and not options.presence
    plezi.channel("room.1", history=7)
    options = channels.options_for("room.1")
    assert options is not None and options.history == 7


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("", {}),
        ("\x00to:x", {}),
        ("chat", {"history": -1}),
        ("chat", {"history": True}),
        ("chat", {"history": 1.5}),
        ("chat", {"history_ttl": 0}),
        ("chat", {"presence_ttl": -3}),
    ],
)
def test_bad_options_are_refused(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        plezi.channel(name, **kwargs)  # type: ignore[arg-type]
    assert channels.options_for(name or "x") is None
