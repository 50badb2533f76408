"""A Redis that cannot be used is refused at start, before the server announces itself, in one
line that says what to do (exit status 1), with one process and with ``--workers 2`` (the master
checks before it starts any worker). Real redis-server processes, one with a password."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from helpers import ROOT, UNIT

from .redispair import APP
from .redisproc import RedisProcess

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server that wants a password."""
    server = RedisProcess(tmp_path_factory.mktemp("guarded"), "--requirepass", PASSWORD).start()
    yield server
    server.kill()


def start(url: str, workers: int) -> subprocess.CompletedProcess[str]:
    flags = ["--port", "0", "--bind", "127.0.0.1", "--workers", str(workers), "--redis", url]
    return subprocess.run(
        [sys.executable, str(APP), *flags],
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
        cwd=str(ROOT),
    )


_FIX_URL = "; fix the URL: redis://[[USER]:PASSWORD@]HOST:PORT/DB"
_START_IT = "; start redis-server there or fix the host and port in the URL"

#: A broken URL, and what its one line must say: what is wrong and what to do.
CASES = {
    "wrong password": (
        "redis://:wrong@{addr}/0",
        ["Redis refused the credentials in the URL", "; check the password"],
    ),
    "wrong user": (
        "redis://nobody:" + PASSWORD + "@{addr}/0",
        ["Redis refused the credentials in the URL", "; check the user name and password"],
    ),
    "no password": (
        "redis://{addr}/0",
        ["Redis wants a password; put it in the URL (redis://:PASSWORD@host:port/db)"],
    ),
    "nobody listening": ("redis://127.0.0.1:{free}/0", ["Connection refused", _START_IT]),
    "unknown host": ("redis://no-such-host.invalid:6379/0", [_START_IT]),
    "bad port": ("redis://127.0.0.1:port/0", ["Port could not be cast", _FIX_URL]),
    "bad scheme": ("http://{addr}/0", ["must specify one of the following schemes", _FIX_URL]),
    "bad option": (
        "redis://:" + PASSWORD + "@{addr}/0?no_such_option=1",
        ["unknown option 'no_such_option' in the URL; remove it"],
    ),
    "bad database": (
        "redis://:" + PASSWORD + "@{addr}/99",
        ["DB index is out of range; choose a database the server has"],
    ),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_redis_is_one_line_before_listening(
    guarded, tmp_path, case: str, workers: int
) -> None:
    template, expected = CASES[case]
    url = template.format(addr=f"127.0.0.1:{guarded.port}", free=RedisProcess(tmp_path).port)
    proc = start(url, workers)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback, no "listening on", no worker started
    line = lines[0]
    assert line.startswith("plezi: cannot use Redis at "), line
    for part in expected:
        assert part in line, line
    assert "wrong" not in line and PASSWORD not in line  # no password is ever printed


def test_the_right_password_starts(guarded, script) -> None:
    """The control: the same server with the right password is used (and says so)."""
    from .redispair import status

    server = script(APP, "--redis", guarded.url.replace("redis://", f"redis://:{PASSWORD}@"))
    assert status(server)["connected"] is True
