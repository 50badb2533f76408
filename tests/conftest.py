"""Fixtures shared by every test: real servers on port 0 (in a thread or a subprocess).

Only fixtures live here; what they use, and what test modules import, lives in ``helpers.py``
(``from helpers import ...``): a test module never imports from ``conftest``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import Running, Script, start_script, start_server
from plezi import App

# Tests that want Redis pass a private server's URL explicitly; one inherited from the
# environment must not switch the in-process tests to a shared Redis.
os.environ.pop("PL_REDIS_URL", None)
os.environ.pop("REDIS_URL", None)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    """``serve(app, **limits)`` starts a server; all are stopped after the test."""
    running: list[Running] = []

    def start(app: App, **limits: Any) -> Running:
        r = start_server(app, **limits)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()
        assert not r.errors, r.errors


@pytest.fixture
def script() -> Iterator[Callable[..., Script]]:
    """``script(path, *args)`` runs a plezi script in a subprocess; killed after the test."""
    started: list[Script] = []

    def start(path: Path | str, *args: str, **kwargs: Any) -> Script:
        s = start_script(path, *args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(cert, key)``: a self-signed certificate for localhost, 127.0.0.1 and ::1 (made by
    ``--tls-self-signed``'s own code), shared by the TLS tests."""
    from plezi.launch.devcert import make_certificate

    return make_certificate(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def clients() -> Iterator[contextlib.ExitStack]:
    """Every client a test enters into this stack is closed at its end."""
    with contextlib.ExitStack() as stack:
        yield stack
