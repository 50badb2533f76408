"""The examples and small scripts, run as a user runs them: ``python script.py`` in a subprocess.

The server starts when the script ends (autostart), answers over real sockets, and exits 0 on
SIGTERM. Scripts that fail, opt out, define nothing, or ask for a taken port never listen.
"""

from __future__ import annotations

import signal
import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from rawhttp import RawHTTP, request_bytes

from helpers import ROOT, Script, run_script

EXAMPLES = ROOT / "examples"


def test_websocket_sample_answers_http_and_stops_on_sigterm(
    script: Callable[..., Script],
) -> None:
    s = script(EXAMPLES / "websocket_sample.py")
    r = s.get("/")
    assert (r.status_code, r.text) == (200, "Hello World!")
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert s.get("/42").text == "showing object with id: 42..."
    assert s.get("/42/").text == "showing object with id: 42..."
    assert s.get("/on_message").text == "showing object with id: on_message..."  # an id, not a call
    code, err = s.stop(signal.SIGTERM, timeout=10)
    assert code == 0, err
    assert "Traceback" not in err


def test_echo_example_has_no_http_page_but_upgrades(script: Callable[..., Script]) -> None:
    s = script(EXAMPLES / "echo.py")
    assert s.get("/").status_code == 404  # MyEcho defines no HTTP action
    with RawHTTP(s.port) as conn:
        conn.send(
            request_bytes(
                "GET",
                "/",
                {
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            )
        )
        assert conn.read_response().status == 101
        mask = b"\x01\x02\x03\x04"
        conn.send(b"\x81\x82" + mask + bytes(c ^ mask[i] for i, c in enumerate(b"hi")))
        while len(conn.buf) < 4:
            assert conn._fill()
        assert conn.buf[:4] == b"\x81\x02hi"
    code, err = s.stop(signal.SIGTERM, timeout=10)
    assert code == 0, err


ROUTED = textwrap.dedent(
    """
    import plezi

    class Page:
        def index(self):
            return "page"

    plezi.route("/", Page)
    """
)


@pytest.mark.parametrize(
    ("name", "source", "expected_code", "expected_err"),
    [
        ("script raises", ROUTED + "raise RuntimeError('broken at import')\n", 1, "broken at"),
        ("no_autostart", ROUTED + "plezi.no_autostart()\n", 0, ""),
        ("no routes", "import plezi\nprint('nothing to serve')\n", 0, ""),
    ],
    ids=["raises", "no_autostart", "no_routes"],
)
def test_scripts_that_must_not_listen(
    tmp_path: Path, name: str, source: str, expected_code: int, expected_err: str
) -> None:
    done = run_script(tmp_path, source, "--port", "0", "--bind", "127.0.0.1")
    assert done.returncode == expected_code, (name, done.stderr)
    assert "listening" not in done.stderr
    assert expected_err in done.stderr


def test_a_port_already_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_script(tmp_path, ROUTED, "--port", port, "--bind", "127.0.0.1")
    assert done.returncode == 1, done.stderr
    assert "already in use" in done.stderr
    assert port in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stderr
