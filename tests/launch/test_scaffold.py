"""``plezi new``: the generated app's files, its own tests passing as generated (run with this
project's Python in a subprocess, in its own folder), and the app served by ``python NAME.py``.

(The welcome page in headless Chromium is in ``browser/test_scaffold_browser.py``.)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from wsclient import connect

from helpers import ROOT, UNIT, Script
from plezi.launch.scaffold import new_command


def generate(folder: Path, *argv: str) -> tuple[int, str, str]:
    """Run ``plezi new *argv`` in ``folder``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        code = new_command(list(argv), out=out, err=err)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The generated app's tests, with this project's Python, from the app's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=90 * UNIT,
    )


def test_new_writes_the_app_and_prints_the_two_commands(tmp_path: Path) -> None:
    code, out, err = generate(tmp_path, "blog")
    assert (code, err) == (0, "")
    app = tmp_path / "blog"
    files = sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "blog.py",
        "controllers/__init__.py",
        "controllers/home.py",
        "public/style.css",
        "pyproject.toml",
        "tests/test_home.py",
        "views/index.html",
    ]
    assert "cd blog && python blog.py" in out
    assert "cd blog && python -m pytest" in out
    assert '"plezi>=' in (app / "pyproject.toml").read_text()
    assert "__NAME__" not in "".join(p.read_text() for p in app.rglob("*") if p.is_file())


def test_the_generated_tests_pass(tmp_path: Path) -> None:
    generate(tmp_path, "blog")
    result = run_pytest(tmp_path / "blog")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


def test_the_generated_app_serves_its_page_files_and_room(
    tmp_path: Path, script: Callable[..., Script]
) -> None:
    generate(tmp_path, "blog")
    s = script(tmp_path / "blog" / "blog.py")
    page = s.get("/")
    assert page.status_code == 200
    assert "Welcome to blog" in page.text
    assert s.get("/client.js").status_code == 200
    css = s.get("/style.css")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    with connect(s.ws_url + "/") as ws:
        ws.send('{"event": "chat", "text": "hi"}')
        got = {ws.recv(timeout=5 * UNIT), ws.recv(timeout=5 * UNIT)}
    assert got == {'{"event":"chat","text":"hi"}', '{"event":"delivered"}'}
    code, err = s.stop()
    assert code == 0, err


def test_mini_is_one_file_that_serves_and_tests_itself(
    tmp_path: Path, script: Callable[..., Script]
) -> None:
    code, out, _err = generate(tmp_path, "tiny", "--mini")
    assert code == 0
    assert "cd tiny && python -m pytest tiny.py" in out
    app = tmp_path / "tiny"
    assert [p.name for p in app.iterdir()] == ["tiny.py"]
    result = run_pytest(app, "tiny.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    s = script(app / "tiny.py")
    assert "Welcome to tiny" in s.get("/").text


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "keep.txt").write_text("mine")
    code, out, err = generate(tmp_path, "blog")
    assert code == 1
    assert "already exists" in err
    assert out == ""
    assert [p.name for p in (tmp_path / "blog").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("my-app", "not a valid Python identifier"),
        ("2fast", "not a valid Python identifier"),
        ("class", "not a valid Python identifier"),
        ("plezi", "shadow"),
        ("json", "shadow"),
    ],
)
def test_a_bad_name_is_a_clear_error(tmp_path: Path, name: str, why: str) -> None:
    code, _out, err = generate(tmp_path, name)
    assert code == 2
    assert why in err
    assert list(tmp_path.iterdir()) == []


def test_no_name_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, _err = generate(tmp_path)
    assert code == 2
    assert "NAME" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["-m", "plezi", "new"], ["-m", "plezi.launch.cli", "new"]])
def test_new_runs_from_the_command_line(tmp_path: Path, command: list[str]) -> None:
    """``plezi new x1`` (``python -m plezi new x1``: the same entry point as the command)."""
    if command[1] == "plezi.launch.cli":  # the console script's entry point, plezi.launch.cli:main
        command = ["-c", "import sys; from plezi.launch.cli import main; main(['new', 'x1'])"]
    else:
        command = [*command, "x1"]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30 * UNIT,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x1" / "x1.py").is_file()
    assert "python x1.py" in result.stdout


def test_every_template_is_package_data() -> None:
    """The wheel carries the templates: each matches a [tool.setuptools.package-data] glob."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["plezi"]
    package = ROOT / "src" / "plezi"
    templates = sorted((package / "launch" / "scaffold_files").rglob("*.tmpl"))
    assert templates
    for path in templates:
        relative = path.relative_to(package)
        # a glob's "*" never crosses a "/": same depth, and each part matches
        assert any(
            len(relative.parts) == len(Path(g).parts) and relative.match(g) for g in globs
        ), relative


@pytest.mark.parametrize("argv", [["blog"], ["tiny", "--mini"]])
def test_the_generated_code_is_lint_clean(tmp_path: Path, argv: list[str]) -> None:
    """ruff's defaults (line length 88, sorted imports) find nothing to say about a new app."""
    generate(tmp_path, *argv)
    app = tmp_path / argv[0]
    for command in (["check", "--select", "E,F,W,I,B,UP,SIM,RUF"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "."],
            cwd=app,
            capture_output=True,
            text=True,
            timeout=60 * UNIT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
