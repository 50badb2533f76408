"""``--reload``: a real app started with the flag in a subprocess, its files edited by the test,
the new behaviour seen over HTTP (every wait bounded); the watch filter; the refusal with
``--workers``."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from watchfiles import Change
from websockets.exceptions import ConnectionClosed
from wsclient import connect

from helpers import UNIT, Events, Script, run_script, wait_for
from plezi.launch.reload import _Filter

APP = """\
import os
import plezi

VERSION = {version!r}

class Home:
    def index(self):
        return "version " + VERSION

    def page(self):
        return self.render("page")

    def pid(self):
        return str(os.getpid())

class Echo:
    def on_message(self, data):
        self.write(VERSION + ": " + data)

plezi.route("/ws", Echo)
plezi.route("/", Home)
"""


def replies(script: Script, path: str, expected: str) -> Callable[[], bool]:
    """A check for :func:`wait_for`: ``GET path`` answers ``expected`` (a connection cut while
    the server restarts is a "not yet"; a connection refused is a failure: the watcher holds
    the listening socket, so a client waits through a restart)."""

    def check() -> bool:
        try:
            return script.get(path).text == expected
        except httpx.ConnectError as exc:
            raise AssertionError(f"connection refused during a restart: {exc}") from exc
        except httpx.HTTPError:
            return False

    return check


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "page.html").write_text("template one")
    (tmp_path / "app.py").write_text(APP.format(version="one"))
    return tmp_path


class LogLines:
    """The script's stderr, read line by line in a thread (the test waits for a line while
    the script runs): ``wait(text)`` returns once a line containing ``text`` was written."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.lines: list[str] = []
        self.events = Events()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.script.proc.stderr is not None
        for raw in self.script.proc.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self.events.add("line")

    def wait(self, text: str, timeout: float = 15.0) -> None:
        with self.events.changed:
            found = self.events.changed.wait_for(
                lambda: any(text in line for line in self.lines), timeout * UNIT
            )
        assert found, f"no log line with {text!r}: {''.join(self.lines)}"

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the script; its exit code and everything it wrote to stderr."""
        self.script.proc.send_signal(sig)
        proc = self.script.proc
        code = proc.wait(15 * UNIT)
        self.thread.join(5 * UNIT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return code, "".join(self.lines)


def server_pids(stderr: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"server ready \(pid (\d+)\)", stderr)]


def test_editing_the_app_restarts_the_server(script: Callable[..., Script], app_dir: Path) -> None:
    running = script(app_dir / "app.py", "--reload")
    log = LogLines(running)
    wait_for(replies(running, "/", "version one"), "the first server")
    with connect(running.ws_url + "/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "one: hi"
        (app_dir / "app.py").write_text(APP.format(version="two"))
        with pytest.raises(ConnectionClosed) as info:  # the old server shuts down gracefully
            ws.recv(timeout=15 * UNIT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        wait_for(replies(running, "/", "version two"), "the edited app")
    # A broken edit: the server exits, the next good edit starts it again.
    (app_dir / "app.py").write_text("this is not python\n")
    log.wait("exited with code 1; it starts again when a file changes")
    (app_dir / "app.py").write_text(APP.format(version="three"))
    wait_for(replies(running, "/", "version three"), "the fixed app")
    with connect(running.ws_url + "/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5 * UNIT) == "three: hi"
    code, err = log.stop()
    assert code == 0, err
    assert "reload is on" in err and "never in production" in err
    assert "app.py changed: restarting the server" in err
    pids = server_pids(err)
    assert len(pids) >= 3
    for pid in pids:  # every server the reloader started is gone with it
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_templates_and_reload_dirs_restart_the_server(
    script: Callable[..., Script], app_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    extra = tmp_path_factory.mktemp("data")
    (extra / "settings.txt").write_text("a")
    running = script(app_dir / "app.py", "--reload", "--reload-dir", str(extra))
    wait_for(replies(running, "/page", "template one"), "the first server")
    first = running.get("/pid").text
    (app_dir / "views" / "page.html").write_text("template two")
    wait_for(lambda: not replies(running, "/pid", first)(), "a restart after the template edit")
    wait_for(replies(running, "/page", "template two"), "the edited template")
    second = running.get("/pid").text
    (extra / "settings.txt").write_text("b")
    wait_for(lambda: not replies(running, "/pid", second)(), "a restart after the data edit")
    wait_for(replies(running, "/page", "template two"), "the third server")
    code, err = running.stop()
    assert code == 0, err
    assert [str(pid) for pid in server_pids(err)][:2] == [first, second]
    assert "page.html changed: restarting the server" in err
    assert "settings.txt changed: restarting the server" in err


def test_watch_filter() -> None:
    accept = _Filter(["/srv/app/views", "/srv/data"])
    assert accept(Change.modified, "/srv/app/app.py")
    assert accept(Change.added, "/srv/app/lib/models.py")
    assert not accept(Change.modified, "/srv/app/notes.txt")
    assert accept(Change.modified, "/srv/app/views/index.html")
    assert accept(Change.deleted, "/srv/data/settings.toml")
    assert not accept(Change.modified, "/srv/app/__pycache__/app.cpython-311.pyc")
    assert not accept(Change.modified, "/srv/app/.venv/lib/site.py")
    assert not accept(Change.modified, "/srv/app/views.txt")


def test_reload_is_refused_with_workers(tmp_path: Path) -> None:
    done = run_script(tmp_path, APP.format(version="x"), "--reload", "--workers", "2")
    assert done.returncode == 2
    assert "--reload runs one server process, not 2 workers" in done.stderr


def test_reload_stops_cleanly_on_sigint(script: Callable[..., Script], app_dir: Path) -> None:
    """Under the ``plezi`` command (``python -m plezi app.py``): the server re-runs that."""
    running = script(app_dir / "app.py", "--reload", launcher=("-m", "plezi"))
    wait_for(replies(running, "/", "version one"), "the server")
    code, err = running.stop(signal.SIGINT)
    assert code == 0, err
    for pid in server_pids(err):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_reload_on_a_unix_socket_removes_it_at_exit(
    script: Callable[..., Script], app_dir: Path
) -> None:
    path = app_dir / "app.sock"
    running = script(app_dir / "app.py", "--reload", "--bind", str(path))
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, trust_env=False) as client:

        def served() -> bool:
            try:
                return client.get("http://app/", timeout=5 * UNIT).text == "version one"
            except httpx.HTTPError:
                return False

        wait_for(served, "the server on the Unix socket")
    code, err = running.stop()
    assert code == 0, err
    assert not path.exists()
