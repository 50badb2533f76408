"""``scripts/demo``, the first command a newcomer runs: it installs plezi and serves the chat."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

import httpx
from wsclient import connect

from helpers import ROOT, UNIT


def test_demo_installs_and_serves_the_live_chat() -> None:
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "demo"), "--port", "0", "--bind", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "PLEZI_NO_AUTOSTART"},
        bufsize=0,
    )
    assert proc.stderr is not None and proc.stdout is not None
    timer = threading.Timer(120 * UNIT, proc.kill)  # pip checks the install first
    timer.start()
    url = None
    try:
        for line in proc.stderr:
            m = re.search(rb"listening on (http://\S+)", line)
            if m:
                url = m.group(1).decode().replace("localhost", "127.0.0.1")
                break
    finally:
        timer.cancel()
    try:
        assert url, "the demo did not start"
        page = httpx.get(url + "/", trust_env=False, timeout=5 * UNIT)
        assert page.status_code == 200
        assert "PleziClient" in page.text  # the chat page, with the browser client
        ws_url = "ws" + url[4:] + "/"
        with (
            connect(ws_url) as a,
            connect(ws_url) as b,
        ):
            a.send(json.dumps({"event": "chat", "name": "ann", "text": "hi"}))
            got = json.loads(b.recv(timeout=5 * UNIT))
            assert got == {"event": "chat", "name": "ann", "text": "hi"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15 * UNIT)
    assert b"Open the URL below in two browser tabs" in out
    assert proc.returncode == 0, err.decode(errors="replace")
