"""``plezi.app_name`` under an ASGI server: the app's module, not the server's script."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from helpers import UNIT

APP = """
import plezi
from plezi.asgi import application


class Name:
    def index(self):
        return plezi.app_name


plezi.route("/", Name)
"""

_RUNNING = re.compile(rb"running on (http://\S+)")


def served_name(tmp_path: Path, *argv: str) -> str:
    """Run ``python -m uvicorn argv...`` in ``tmp_path`` and return what ``GET /`` answers."""
    (tmp_path / "chatroom.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *argv, "--port", "0", "--log-level", "info"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    timer = threading.Timer(15 * UNIT, proc.kill)
    timer.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = _RUNNING.search(line)
            if found:
                url = found.group(1).decode()
                return httpx.get(url + "/", trust_env=False, timeout=5 * UNIT).text
        raise AssertionError("uvicorn did not start")
    finally:
        timer.cancel()
        proc.kill()
        proc.communicate()  # reaps it and closes its pipe


def test_the_app_name_comes_from_the_app_module(tmp_path: Path) -> None:
    assert served_name(tmp_path, "chatroom:application") == "chatroom_app"
    assert served_name(tmp_path, "--app-dir", str(tmp_path), "chatroom:application") == (
        "chatroom_app"
    )
