"""TLS from the command line: ``--tls-self-signed`` (its certificate, the log line, the folder
removed at exit), Iodine's ``-tls``, and ``--workers`` over TLS (every worker serves HTTPS and
``wss://`` with the one certificate the master made)."""

from __future__ import annotations

import os
import re
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rawhttp import RawHTTP
from wsclient import connect

from helpers import UNIT, Script, run_script, wait_for
from plezi import ConfigError
from plezi.launch.flags import config_from_args
from server.test_tls import PARTIAL_HELLO

APP = """\
import os
import plezi

class Home:
    def index(self):
        return f"{self.request.scheme} {os.getpid()}"

class Echo:
    def on_message(self, data):
        self.write(data)

plezi.route("/", Home)
plezi.route("/ws", Echo)
"""

_CERT_LINE = re.compile(rb"self-signed certificate .*\((\S+cert\.pem), deleted at exit\)")


def dev_certificate(script: Script) -> str:
    """The certificate path the script's log line names (the line after "listening on")."""
    assert script.proc.stderr is not None
    line = script.proc.stderr.readline()
    found = _CERT_LINE.search(line)
    assert found, line
    return found.group(1).decode()


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def test_self_signed_certificate_serves_and_is_deleted_at_exit(
    script: Callable[..., Script], app_file: Path
) -> None:
    running = script(app_file, "--tls-self-signed")
    assert running.url.startswith("https://127.0.0.1:")
    cert = dev_certificate(running)
    ctx = ssl.create_default_context(cafile=cert)
    for host in ("127.0.0.1", "localhost"):
        reply = httpx.get(
            f"https://{host}:{running.port}/", verify=ctx, trust_env=False, timeout=5 * UNIT
        )
        assert reply.text.startswith("https ")
    code, err = running.stop()
    assert code == 0, err
    assert not os.path.exists(os.path.dirname(cert))


def test_workers_serve_tls_with_one_certificate(
    script: Callable[..., Script], app_file: Path
) -> None:
    running = script(app_file, "--workers", "2", "-tls")
    ctx = ssl.create_default_context(cafile=dev_certificate(running))
    pids: set[str] = set()

    def both_workers_answered() -> bool:
        # A new connection each time: the kernel spreads them over the workers' sockets.
        reply = httpx.get(running.url + "/", verify=ctx, trust_env=False, timeout=5 * UNIT)
        scheme, pid = reply.text.split()
        assert scheme == "https"
        pids.add(pid)
        return len(pids) == 2

    wait_for(both_workers_answered, "an HTTPS reply from each worker")
    for _ in range(4):
        with connect(running.ws_url + "/ws", ssl=ctx) as ws:
            ws.send("through a worker")
            assert ws.recv(timeout=5 * UNIT) == "through a worker"
    code, err = running.stop()
    assert code == 0, err
    assert err.count("worker") >= 2


def test_iodine_tls_flag_means_self_signed_unless_files_are_given() -> None:
    assert config_from_args(["-tls"]).tls_self_signed
    config = config_from_args(["-tls", "-tls-cert", "c.pem", "-tls-key", "k.pem"])
    assert (config.tls_cert, config.tls_key, config.tls_self_signed) == ("c.pem", "k.pem", False)
    assert config.tls
    assert not config_from_args([]).tls
    with pytest.raises(ConfigError, match="not both"):
        config_from_args(["--tls-self-signed", "--tls-cert", "c.pem"])
    # plezi.run() keywords, overridden by flags as every option is
    assert config_from_args([], tls_cert="a.pem").tls_cert == "a.pem"
    assert config_from_args(["--tls-cert", "b.pem"], tls_cert="a.pem").tls_cert == "b.pem"


def test_sigterm_closes_wss_with_1001_and_is_not_held_by_a_stalled_handshake(
    script: Callable[..., Script], app_file: Path, tls_files: tuple[str, str]
) -> None:
    """A handshake in progress is no connection yet: the shutdown does not wait for it (the
    handshake timeout here is far longer than the test), and the process exits."""
    from websockets.exceptions import ConnectionClosed

    cert, key = tls_files
    running = script(
        app_file, "--tls-cert", cert, "--tls-key", key, "--header-timeout", str(120 * UNIT)
    )
    stalled = RawHTTP(running.port)
    try:
        stalled.send(PARTIAL_HELLO)
        with connect(running.ws_url + "/ws", ssl=ssl.create_default_context(cafile=cert)) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5 * UNIT) == "ping"
            running.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5 * UNIT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        code, err = running.stop(timeout=30)
        assert code == 0, err
        assert stalled.closed_within(5 * UNIT)
    finally:
        stalled.close()


def test_reload_keeps_the_self_signed_certificate_across_restarts(
    script: Callable[..., Script], app_file: Path
) -> None:
    running = script(app_file, "--reload", "--tls-self-signed")
    ctx = ssl.create_default_context(cafile=dev_certificate(running))

    def pid() -> str | None:
        try:
            reply = httpx.get(running.url + "/", verify=ctx, trust_env=False, timeout=5 * UNIT)
        except httpx.HTTPError:
            return None  # restarting
        return reply.text.split()[1]

    wait_for(lambda: pid() is not None, "the first server")
    first = pid()
    app_file.write_text(APP + "# edited\n")
    wait_for(lambda: pid() not in (None, first), "the restarted server, with the same certificate")
    code, err = running.stop()
    assert code == 0, err


def test_help_lists_the_tls_and_reload_flags(tmp_path: Path) -> None:
    done = run_script(tmp_path, APP, "--help")
    assert done.returncode == 0, done.stderr
    for flag in ("--tls-cert FILE", "--tls-key FILE", "--tls-self-signed", "-tls", "--reload"):
        assert flag in done.stdout
    assert "--reload-dir DIR" in done.stdout
