"""Fixtures of the Redis tests (a package, so that this file is ``pubsub.redis.conftest`` and
never shadows ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .redisproc import RedisProcess


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server on a free port, killed (frozen or not) after the test."""
    server = RedisProcess(tmp_path).start()
    yield server
    server.kill()
