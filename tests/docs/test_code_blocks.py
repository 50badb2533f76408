"""Every ``python`` code block in README.md and docs/*.md, run as a reader would copy it.

A block is marked on the line before its fence:

- ``<!-- runnable: NAME -->``: a whole program. It is saved as ``NAME.py`` and started in a
  subprocess (``python NAME.py --port 0``, autostart), or under uvicorn where the page is about
  ASGI; then ``CHECKS[NAME]`` talks to it with real clients and checks what the page promises.
- ``<!-- fragment -->``: a piece of a larger program (one ``route()`` line, a constructor call).
  It must still compile.
- ``<!-- test file -->``: a whole pytest file (docs/testing.md). All of them run together in one
  pytest subprocess, and every test in them must pass.

An unmarked block fails the test, so a new example cannot go untested by accident.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection
from wsclient import connect as ws_connect

from helpers import ROOT, UNIT, Script, free_port, start_script

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)
_MARK = re.compile(r"<!-- (runnable: ([\w-]+)|fragment|test file) -->\s*$")
TEST_FILE = "<test file>"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    name: str | None  # None: a fragment

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks() -> list[Block]:
    found: list[Block] = []
    for page in PAGES:
        text = page.read_text()
        for m in _FENCE.finditer(text):
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            line = text.count("\n", 0, m.start()) + 1
            mark = _MARK.search(before)
            if mark is None:
                name: str | None = "?"
            elif mark.group(1) == "test file":
                name = TEST_FILE
            else:
                name = mark.group(2)
            found.append(Block(page, line, m.group(1), name))
    return found


BLOCKS = _blocks()


def ws(s: Script, path: str = "/") -> ClientConnection:
    return ws_connect(s.ws_url + path)


def recv_json(conn: ClientConnection) -> dict[str, object]:
    message = conn.recv(timeout=5 * UNIT)
    assert isinstance(message, str)
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


# -- what each runnable block promises ----------------------------------------------------------


def check_echo(s: Script) -> None:
    with ws(s) as conn:
        conn.send("hello")
        assert conn.recv(timeout=5 * UNIT) == "hello"
        conn.send(b"\x00\x01")
        assert conn.recv(timeout=5 * UNIT) == b"\x00\x01"


def check_websocket_sample(s: Script) -> None:
    assert s.get("/").text == "Hello World!"
    assert s.get("/42").text == "showing object with id: 42..."
    with ws(s) as conn:
        conn.send("hi")
        assert conn.recv(timeout=5 * UNIT) == "echo: hi"


def check_json_events(s: Script) -> None:
    client = s.get("/client.js")
    assert client.status_code == 200
    assert "PleziClient" in client.text
    with ws(s) as conn:
        conn.send(json.dumps({"event": "chat", "text": "hi"}))
        assert recv_json(conn) == {"event": "chat", "text": "hi"}


def check_http_events_off(s: Script) -> None:
    assert s.get("/chat").text == "the chat page"
    assert s.get("/chat/chat", params={"text": "q"}).status_code in (404, 405)
    assert httpx.post(s.url + "/chat/chat", trust_env=False).status_code in (404, 405)
    with ws(s, "/chat") as conn:
        conn.send(json.dumps({"event": "chat", "text": "hi"}))
        assert recv_json(conn) == {"event": "chat", "text": "hi"}


def check_pubsub(s: Script) -> None:
    # on_open subscribes before the server answers the handshake's 101: once both clients are
    # connected, both are subscribed.
    with ws(s) as a, ws(s) as b:
        a.send("to everyone")
        assert a.recv(timeout=5 * UNIT) == "to everyone"
        assert b.recv(timeout=5 * UNIT) == "to everyone"


def check_asgi_chat(s: Script) -> None:
    with ws(s) as a, ws(s) as b:
        a.send(json.dumps({"event": "say", "text": "x"}))
        for conn in (a, b):  # both joined "room" in on_open, before the message was sent
            msg = recv_json(conn)
            while msg.get("event") != "said":
                msg = recv_json(conn)
            assert msg == {"event": "said", "text": "x"}


def check_mount(s: Script) -> None:
    r = s.get("/api/items/5")
    assert (r.status_code, r.json()) == (200, {"id": 5})
    check_asgi_chat(s)


def check_sse(s: Script) -> None:
    assert "EventSource" in s.get("/news").text
    headers = {"accept": "text/event-stream"}
    with (
        httpx.Client(trust_env=False, timeout=5 * UNIT) as client,
        client.stream("GET", s.url + "/news", headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        first = _event(lines)
        assert first == {"event": "hello", "data": "welcome", "id": "1"}
        posted = httpx.post(
            s.url + "/news", data={"text": "extra"}, trust_env=False, timeout=5 * UNIT
        )
        assert posted.text == "sent"
        assert _event(lines) == {"data": "extra"}


def _event(lines: Iterator[str]) -> dict[str, str]:
    """The next SSE event's fields (comments skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        fields[key] = value.removeprefix(" ")
    raise AssertionError("the stream ended")


def check_presence(s: Script) -> None:
    with ws(s, "/room?name=ann") as ann, ws(s, "/room?name=bob") as bob:
        joined = _first(ann, lambda m: {"name": "bob"} in _entries(m, "join").values())
        assert (joined["event"], joined["channel"]) == ("presence", "room.lobby")
        (bob_id,) = _entries(joined, "join")
        bob.send(json.dumps({"event": "who"}))
        who = _first(bob, lambda m: len(_entries(m, "join")) == 2)
        assert sorted(_entries(who, "join").values(), key=str) == [{"name": "ann"}, {"name": "bob"}]
        bob.close()
        left = _first(ann, lambda m: "leave" in m)
        assert left["leave"] == {bob_id: {"name": "bob"}}


def _entries(msg: dict[str, object], kind: str) -> dict[str, object]:
    found = msg.get(kind)
    return found if isinstance(found, dict) else {}


def _first(conn: ClientConnection, match: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    """The first of the next 20 JSON messages on ``conn`` that ``match`` accepts."""
    for _ in range(20):
        msg = recv_json(conn)
        if match(msg):
            return msg
    raise AssertionError("no such message among the next 20")


CHECKS: dict[str, Callable[[Script], None]] = {
    "readme-echo": check_echo,
    "readme-sample": check_websocket_sample,
    "readme-json-events": check_json_events,
    "readme-pubsub": check_pubsub,
    "asgi-chat": check_asgi_chat,
    "asgi-mount": check_mount,
    "auto-dispatch": check_json_events,
    "http-events-off": check_http_events_off,
    "pubsub": check_pubsub,
    "presence": check_presence,
    "sse": check_sse,
}

#: Blocks about ASGI run under uvicorn, as the page tells the reader to.
UNDER_UVICORN = {"asgi-chat"}


# -- the tests ----------------------------------------------------------------------------------


def test_every_python_block_is_marked() -> None:
    unmarked = [str(b) for b in BLOCKS if b.name == "?"]
    assert not unmarked, f"mark these blocks runnable or fragment: {unmarked}"
    names = [b.name for b in BLOCKS if b.name and b.name != TEST_FILE]
    assert len(names) == len(set(names)), "two blocks share a name"
    assert set(names) == set(CHECKS), "a runnable block without a check, or a check without one"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.name is None], ids=str)
def test_fragment_compiles(block: Block) -> None:
    compile(block.code, str(block), "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.name in CHECKS], ids=str)
def test_runnable_block(block: Block, tmp_path: Path) -> None:
    assert block.name is not None
    program = tmp_path / f"{block.name.replace('-', '_')}.py"
    program.write_text(block.code)
    uvicorn = block.name in UNDER_UVICORN
    s = _uvicorn(program) if uvicorn else start_script(program)
    try:
        CHECKS[block.name](s)
    finally:
        code, err = s.stop()
    assert "Traceback" not in err, err
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -SIGTERM).
    assert code in ((0, -signal.SIGTERM) if uvicorn else (0,)), err


def test_test_files_pass(tmp_path: Path) -> None:
    """The pytest files the docs show pass as copied (each defines its own routes, so each runs
    in the subprocess's own process, not in this one)."""
    blocks = [b for b in BLOCKS if b.name == TEST_FILE]
    assert len(blocks) >= 6
    for number, block in enumerate(blocks):
        (tmp_path / f"test_doc_{number}.py").write_text(block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90 * UNIT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = sum(block.code.count("\ndef test_") for block in blocks)
    assert f"{tests} passed" in result.stdout, result.stdout


def _uvicorn(program: Path) -> Script:
    """``uvicorn MODULE:application`` in ``program``'s folder, as docs/asgi.md says."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{program.stem}:application", "--port", str(port)],
        cwd=program.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stderr is not None
    timer = threading.Timer(15 * UNIT, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            if b"Uvicorn running on" in line:
                return Script(proc, f"http://127.0.0.1:{port}")
    finally:
        timer.cancel()
    proc.kill()
    raise AssertionError(f"uvicorn did not start {program}")
