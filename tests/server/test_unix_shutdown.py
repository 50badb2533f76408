"""One process serving on a Unix socket stops as cleanly as on TCP: SIGINT removes the socket
file, logs "stopped" and exits 0, whether the server was started by autostart or plezi.run()."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import ROOT, UNIT, Script

RUN_APP = textwrap.dedent(
    """
    import plezi

    class Hello:
        def index(self):
            return "hello over a unix socket"

    plezi.route("/", Hello)
    plezi.run()
    """
)


@pytest.mark.parametrize("start", ["autostart", "run"])
def test_sigint_on_a_unix_socket(script: Callable[..., Script], tmp_path: Path, start: str) -> None:
    path = tmp_path / "app.sock"
    if start == "run":
        app = tmp_path / "app.py"
        app.write_text(RUN_APP)
        s = script(app, "--bind", str(path))
        expected = "hello over a unix socket"
    else:
        s = script(ROOT / "examples/websocket_sample.py", "--bind", str(path))
        expected = "Hello World!"
    assert s.url == str(path)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=5 * UNIT) as client:
        assert client.get("http://app/").text == expected
    code, err = s.stop(signal.SIGINT)
    assert (code, "Traceback" in err) == (0, False), err
    assert "stopped" in err.splitlines()[-1]
    assert not path.exists()
