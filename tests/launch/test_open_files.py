"""The open-file limit: every plezi process raises its soft ``RLIMIT_NOFILE`` to the hard limit
at start, says so in one log line, and the default ``max_connections`` follows the limit
obtained; a ``max_connections`` the user set wins.

The servers run in subprocesses started with a low soft limit (as a shell with ``ulimit -n``
would start them), and real connections show the cap: more than the low limit allows are served.
"""

from __future__ import annotations

import contextlib
import re
import resource
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from rawhttp import RawHTTP

from helpers import UNIT, Script, wait_for

#: The soft limit the servers are started with: without the raise it allows 100 - 64 = 36
#: connections.
LOW = 100
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
#: More connections than the low limit allows, well within this test process's own limit.
MANY = 80

pytestmark = pytest.mark.skipif(
    HARD != resource.RLIM_INFINITY and HARD < 4 * LOW,
    reason="the hard open-file limit is too low to show a raise",
)

APP = textwrap.dedent(
    """
    import plezi

    class Hello:
        def index(self):
            return "hello"

    plezi.route("/", Hello)
    """
)

LINE = re.compile(r"open files: (\S+) \(([^)]*)\); max_connections (\d+) \(([^)]*)\)")


def low_soft_limit() -> None:
    """Runs in the child before exec: start it as ``ulimit -Sn 100`` would."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, HARD))


@pytest.fixture
def start(tmp_path: Path, script: Callable[..., Script]) -> Callable[..., Script]:
    """``start(*args)``: the hello app in a subprocess started with the low soft limit."""
    path = tmp_path / "app.py"
    path.write_text(APP)
    return lambda *args: script(path, *args, preexec_fn=low_soft_limit)


def served(running: Script, count: int) -> list[int]:
    """Open ``count`` keep-alive connections at once; the status each one's request got."""
    statuses: list[int] = []
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            conn = stack.enter_context(RawHTTP(running.port, timeout=10 * UNIT))
            statuses.append(conn.request("GET", "/").status)
    return statuses


def test_the_soft_limit_is_raised_logged_and_sizes_max_connections(
    start: Callable[..., Script],
) -> None:
    running = start()
    found = LINE.search(running.head)
    assert found, running.head
    limit = "unlimited" if HARD == resource.RLIM_INFINITY else str(HARD)
    assert found.group(1) == limit
    assert found.group(2) == f"raised from {LOW}, the hard limit"
    if HARD != resource.RLIM_INFINITY:
        assert int(found.group(3)) == HARD - 64
    assert found.group(4) == "the open-file limit - 64"
    assert served(running, MANY) == [200] * MANY  # more than 36: the cap is not the low limit's
    code, err = running.stop()
    assert code == 0, err
    assert "max_connections" not in err  # no refusal was logged


def test_a_max_connections_the_user_set_wins(start: Callable[..., Script]) -> None:
    running = start("--max-conn", "5")
    found = LINE.search(running.head)
    assert found, running.head
    assert found.group(2) == f"raised from {LOW}, the hard limit"
    assert (found.group(3), found.group(4)) == ("5", "set")
    statuses = served(running, 6)
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 503
    running.stop()


def test_the_master_and_every_worker_raise_their_limit(start: Callable[..., Script]) -> None:
    """Workers inherit the raised limit from the master; each process still logs its line."""
    running = start("--workers", "2")
    assert LINE.search(running.head), running.head  # the master, before it listens
    wait_for(lambda: running.proc.poll() is None and _ready(running), "the workers", timeout=20)
    assert served(running, MANY) == [200] * MANY
    code, err = running.stop()
    assert code == 0, err
    lines = [LINE.search(line) for line in err.splitlines() if "open files:" in line]
    assert len(lines) == 2, err  # one per worker (the master's came before "listening")
    for found in lines:
        assert found is not None
        assert found.group(3) == str(HARD - 64) or HARD == resource.RLIM_INFINITY


def _ready(running: Script) -> bool:
    try:
        return running.get("/").status_code == 200
    except OSError:
        return False
