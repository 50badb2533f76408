"""Fixtures of the pub/sub tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plezi.pubsub.hub import hub


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """The test starts and ends with no subscription in the process-global registry (checked
    after the test's servers have stopped: fixtures end in reverse order, and ``serve`` is set
    up after this one)."""
    assert hub.registry.names() == ([], []), "an earlier test leaked subscriptions"
    yield
    assert hub.registry.names() == ([], []), "this test leaked subscriptions"
