"""The command line, as users type it: unknown flags refused with a suggestion (and the app's own
flags let through when it says so), ``--help`` on any script, the ``plezi`` command
(``--version``, ``--help``, ``python -m plezi``, ``plezi routes``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

import plezi
from helpers import ROOT, UNIT, Script
from plezi.errors import ConfigError
from plezi.launch import flags
from plezi.web.route_table import route_table

PLEZI = str(Path(sys.executable).parent / "plezi")
#: Had a test's server start by mistake, it would listen here, not on 0.0.0.0:3000.
LOOPBACK = ("--port", "0", "--bind", "127.0.0.1")

APP = textwrap.dedent(
    """
    import plezi

    class Hello:
        def index(self):
            return "hello"

    plezi.route("/", Hello)
    """
)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a command that must end by itself (a server that starts makes it time out)."""
    env = {k: v for k, v in os.environ.items() if k != "PLEZI_NO_AUTOSTART"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=20 * UNIT, env=env, cwd=cwd, check=False
    )


def write_app(tmp_path: Path, source: str = APP, name: str = "app.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


@pytest.fixture
def app_flags() -> Iterator[None]:
    """:func:`plezi.allow_flags` changes module state: start clean, leave it clean."""
    saved = (set(flags._app_flags), flags._all_flags_are_apps)
    flags._app_flags.clear()
    flags._all_flags_are_apps = False
    yield
    flags._app_flags.clear()
    flags._app_flags.update(saved[0])
    flags._all_flags_are_apps = saved[1]


# -- unknown flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    ["autostart", "plezi.run", "plezi app.py", "python -m plezi app.py"],
)
def test_an_unknown_flag_is_refused_with_the_closest_known_one(tmp_path: Path, start: str) -> None:
    path = write_app(tmp_path, APP + ("plezi.run()\n" if start == "plezi.run" else ""))
    launcher = {"plezi app.py": (PLEZI,), "python -m plezi app.py": (sys.executable, "-m", "plezi")}
    command = launcher.get(start, (sys.executable,))
    done = run(*command, str(path), *LOOPBACK, "--prot", "3001")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["plezi: unknown flag --prot; did you mean --port?"]


@pytest.mark.usefixtures("app_flags")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prot", "3001"], "unknown flag --prot; did you mean --port?"),
        (["--prot=3001"], "unknown flag --prot; did you mean --port?"),
        (["--por", "3001"], "unknown flag --por; did you mean --port?"),  # no abbreviations
        (["--max-bdy", "1m"], "unknown flag --max-bdy; did you mean --max-body?"),
        (["-x"], "unknown flag -x; --help lists plezi's flags"),
        (["--port", "0", "--seed", "4"], "plezi.allow_flags('--seed')"),
    ],
)
def test_unknown_flag_messages(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        flags.config_from_args(argv)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("app_flags")
def test_what_is_not_a_flag_of_plezis_is_left_alone() -> None:
    # Words (an app's arguments), negative numbers, and everything after a lone `--`.
    config = flags.config_from_args(["data.csv", "--port", "4000", "-5", "--", "--anything"])
    assert config.port == 4000
    plezi.allow_flags("--seed", "-n")
    assert flags.config_from_args(["--seed", "7", "-n", "--seed=8", "-p", "1"]).port == 1
    with pytest.raises(ConfigError, match="--other"):
        flags.config_from_args(["--seed", "7", "--other"])
    assert flags.wants_help(["--help"]) and not flags.wants_help(["--", "-h"])
    plezi.allow_flags("-h")  # e.g. the app's -h HOST
    assert not flags.wants_help(["-h", "example.com"]) and flags.wants_help(["--help"])
    plezi.allow_flags()
    assert flags.config_from_args(["--other", "--port", "5"]).port == 5
    with pytest.raises(ConfigError, match="name the flag as typed"):
        plezi.allow_flags("seed")


OWN_FLAGS = {
    "allow_flags": 'plezi.allow_flags("--seed")\n',
    "own_flags": "plezi.run(own_flags=True)\n",
    "after --": "",
}


@pytest.mark.parametrize("how", list(OWN_FLAGS))
def test_an_app_with_flags_of_its_own_starts(
    script: Callable[..., Script], tmp_path: Path, how: str
) -> None:
    path = write_app(tmp_path, APP + OWN_FLAGS[how])
    extra = ("--", "--seed", "7") if how == "after --" else ("--seed", "7")
    s = script(path, *extra)
    assert httpx.get(s.url + "/", trust_env=False, timeout=5 * UNIT).text == "hello"


# -- --help on any script ------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["examples/echo.py", "plezi.run", "plezi app.py"])
def test_help_prints_the_flags_and_exits(tmp_path: Path, start: str) -> None:
    if start == "examples/echo.py":
        done = run(sys.executable, str(ROOT / "examples/echo.py"), *LOOPBACK, "--help")
        name = "echo.py"
    else:
        path = write_app(tmp_path, APP + ("plezi.run()\n" if start == "plezi.run" else ""))
        command = (PLEZI,) if start == "plezi app.py" else (sys.executable,)
        done = run(*command, str(path), *LOOPBACK, "-h")
        name = "app.py"
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python {name} [flags]\n")
    assert "--port PORT" in done.stdout and "--max-body SIZE" in done.stdout
    assert "listening" not in done.stderr


# -- the plezi command ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(PLEZI,), (sys.executable, "-m", "plezi")])
def test_version(command: tuple[str, ...]) -> None:
    done = run(*command, "--version")
    assert (done.returncode, done.stdout) == (0, f"plezi {version('plezi')}\n"), done.stderr


def test_help_has_one_usage_line_and_the_commands() -> None:
    done = run(PLEZI, "--help")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if "usage" in line.lower()] == [
        "usage: plezi SCRIPT.py [flags]"
    ]
    for command in ("plezi new NAME [--mini]", "plezi routes SCRIPT.py", "plezi --version"):
        assert command in done.stdout
    assert "--port PORT" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "plezi: name the script first: plezi SCRIPT.py [flags]"),
        (("--port", "4000", "app.py"), "plezi: name the script first: plezi SCRIPT.py [flags]"),
        (("nope.py",), "plezi: no such script: nope.py"),
        (("routes",), "plezi: name the script first: plezi routes SCRIPT.py"),
    ],
)
def test_command_mistakes_are_one_line(args: tuple[str, ...], message: str) -> None:
    done = run(sys.executable, "-m", "plezi", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr


def test_python_m_plezi_runs_a_script_from_another_folder(
    script: Callable[..., Script], tmp_path: Path
) -> None:
    # The script's folder comes first on sys.path, as with `python app.py`: it can import its
    # own modules. The pub/sub app name is the script's, as with `python app.py`.
    (tmp_path / "greeting.py").write_text("TEXT = 'hello from a module beside the script'\n")
    source = textwrap.dedent(
        """
        import plezi
        from greeting import TEXT

        class Hello:
            def index(self):
                return f"{TEXT} ({plezi.app_name})"

        plezi.route("/", Hello)
        """
    )
    path = write_app(tmp_path, source, name="greeter.py")
    s = script(path, launcher=("-m", "plezi"))
    got = httpx.get(s.url + "/", trust_env=False, timeout=5 * UNIT).text
    assert got == "hello from a module beside the script (greeter_app)"


# -- plezi routes --------------------------------------------------------------------------------

ROUTED = textwrap.dedent(
    """
    import plezi

    class Users:
        def index(self):
            return "users"

        def show(self):
            return "one"

        def create(self):
            return "made"

        def update(self):
            return "changed"

        def delete(self):
            return "gone"

        def profile(self):
            return "profile"

    class Room:
        auto_dispatch = True

        def on_open(self):
            pass

        def say(self, msg):
            return msg

    class Quiet(Room):
        http_events = False

    class Feed:
        def on_sse(self):
            pass

    plezi.route("/users", Users)
    plezi.route("/room", Room)
    plezi.route("/quiet", Quiet)
    plezi.route("/feed/*", Feed)
    plezi.run()  # `plezi routes` must list the routes without serving them
    """
)

EXPECTED = """\
/users  app.Users
  GET|HEAD       /users          index
  POST|PUT|PATCH /users          create
  DELETE         /users          delete
  GET|HEAD       /users/profile  profile
  GET|HEAD       /users/:id      show
  POST           /users/:id      create
  PUT|PATCH      /users/:id      update
  DELETE         /users/:id      delete
  WebSocket      /users          no (no on_message, no auto_dispatch)
  SSE            /users          no

/room  app.Room
  ANY            /room/say  say  (JSON event over HTTP too: http_events = False turns that off)
  WebSocket      /room      yes (on_open); JSON events: say
  SSE            /room      yes

/quiet  app.Quiet
  WebSocket      /quiet  yes (on_open); JSON events: say (WebSocket only: http_events = False)
  SSE            /quiet  yes

/feed/*  app.Feed
  WebSocket      /feed/*  no (no on_message, no auto_dispatch)
  SSE            /feed/*  yes
"""


def test_plezi_routes_lists_without_serving(tmp_path: Path) -> None:
    path = write_app(tmp_path, ROUTED)
    done = run(PLEZI, "routes", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == EXPECTED
    assert "listening" not in done.stderr


class Pages:
    def show(self) -> str:
        return "page"


def test_route_table_of_an_app_in_process() -> None:
    app = plezi.App()
    app.route("/pages/(:id)/(:format)", Pages)
    app.route("/client.js", "client")
    text = route_table(app)
    assert text.startswith("/pages/(:id)/(:format)  test_cli.Pages\n")
    assert "GET|HEAD       /pages/(:id)/(:format)  (id = :id)  show\n" in text
    assert "/client.js  plezi.web.client.ClientScript\n  GET|HEAD       /client.js  index" in text
    assert route_table(plezi.App()) == "no routes\n"
