"""``self.render()`` finds ``views/`` beside the main script however the app starts, from another
working directory; a missing template is a 500 with a log line naming the folder searched."""

from __future__ import annotations

import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import ROOT, UNIT, Script
from plezi.http import templates

APP = textwrap.dedent(
    """
    import plezi

    class Users:
        def index(self):
            return self.render("users/index", title="the users")

    class Broken:
        def index(self):
            return self.render("users/nope")

    plezi.route("/users", Users)
    plezi.route("/broken", Broken)
    """
)

#: How the app is started: (what the script ends with, what runs it before its path).
STARTS = {
    "autostart": ("", ()),
    "plezi.run": ("plezi.run()\n", ()),
    "plezi app.py": ("", (str(Path(sys.executable).parent / "plezi"),)),
    "python -m plezi app.py": ("", ("-m", "plezi")),
}


@pytest.mark.parametrize("start", list(STARTS))
def test_views_beside_the_main_script(
    script: Callable[..., Script], tmp_path: Path, start: str
) -> None:
    ending, launcher = STARTS[start]
    folder = tmp_path / "myapp"
    (folder / "views" / "users").mkdir(parents=True)
    (folder / "views" / "users" / "index.html").write_text("<h1>{{ title }}</h1>")
    (folder / "app.py").write_text(APP + ending)
    assert Path.cwd() != folder and folder != ROOT  # the scripts run with ROOT as their cwd
    s = script(folder / "app.py", launcher=launcher)
    with httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT) as client:
        assert client.get("/users").text == "<h1>the users</h1>"
        assert client.get("/broken").status_code == 500
    code, err = s.stop(signal.SIGINT)
    assert code == 0, err
    wanted = f"error answering GET /broken: template 'users/nope.html' not found in {folder}/views"
    assert wanted in err


def test_without_a_script_of_the_apps_views_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under pytest (as under uvicorn) the main program is the tool, not the app: its folder
    # (.venv/bin, site-packages) is no place for views; the working directory is.
    monkeypatch.chdir(tmp_path)
    assert templates.default_folder() == str(tmp_path / "views")
