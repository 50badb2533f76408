"""The compiled modules (mypyc) and their pure-Python fallback: src/plezi/compiled.py, setup.py.

``scripts/test`` runs the whole suite twice and says which mode each run is in
(``PLEZI_TEST_MODE``); the first test checks that the modules really are what it says. The others
build plezi without a C compiler and with stale sources, in copies, never in the checkout.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from plezi import compiled

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_the_modules_are_what_the_run_says() -> None:
    loaded = {name: importlib.import_module(name).__file__ or "" for name in compiled.MODULES}
    how, why = compiled.mode()
    assert all(_is_extension(f) for f in loaded.values()) == (how == "compiled"), (how, loaded)
    assert any(_is_extension(f) for f in loaded.values()) != (how == "pure"), (how, loaded)
    expected = os.environ.get("PLEZI_TEST_MODE")
    if expected is None:
        pytest.skip(f"running {how} ({why}); scripts/test sets PLEZI_TEST_MODE to check it")
    assert how == expected, why


def _run_in(tree: Path, code: str, **env: str) -> str:
    """What ``code`` prints in a fresh interpreter that imports plezi from ``tree``."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(tree), "PLEZI_PURE_PYTHON": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def _mode_in(tree: Path, **env: str) -> str:
    """``compiled.mode()`` in a fresh interpreter that imports plezi from ``tree``."""
    return _run_in(tree, "import plezi.compiled as c; print(*c.mode(), sep='|')", **env)


@pytest.mark.skipif(compiled.mode()[0] != "compiled", reason="needs the compiled modules")
def test_a_source_edited_after_the_build_runs_all_modules_pure(tmp_path: Path) -> None:
    # A copy of the installed tree: the package and mypyc's shared library beside it.
    tree = tmp_path / "src"
    shutil.copytree(SRC / "plezi", tree / "plezi", copy_function=shutil.copy2)
    for lib in SRC.glob("*__mypyc*"):
        shutil.copy2(lib, tree / lib.name)
    assert _mode_in(tree).startswith("compiled|")
    assert _mode_in(tree, PLEZI_PURE_PYTHON="1") == "pure|PLEZI_PURE_PYTHON is set"
    edited = tree / "plezi" / "server" / "h1.py"
    later = time.time() + 60  # after the build, whenever that was
    os.utime(edited, (later, later))
    assert _mode_in(tree) == "pure|h1.py is newer than its compiled module (reinstall plezi)"
    # The edit is what runs, in every compiled module's place.
    loaded = "import plezi, plezi.server.h1 as h, plezi.web.app as a; print(h.__file__, a.__file__)"
    with_edit = _run_in(tree, loaded).split()
    assert [Path(p).suffix for p in with_edit] == [".py", ".py"]


def _wheel(project: Path, into: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``pip wheel`` of ``project`` with this environment's setuptools and mypy (``-v``: the
    build's own output, where setup.py's warning is)."""
    command = ["pip", "wheel", "--no-build-isolation", "--no-deps", "-v", "-w", str(into)]
    return subprocess.run(
        [sys.executable, "-m", *command, str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("PLEZI_TEST_MODE") == "pure", reason="the build is the same: run once"
)
def test_without_a_c_compiler_plezi_installs_as_pure_python(tmp_path: Path) -> None:
    """mypyc translates, the compiler is missing: a warning, and a wheel of sources only."""
    shutil.copytree(
        ROOT,
        tmp_path / "plezi",
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "bench",
            "tests",
            "build",
            "*.so",
            "*.egg-info",
            "__pycache__",
            ".mypy_cache",
            ".ruff_cache",
        ),
    )
    env = {**os.environ, "CC": "/bin/false", "PLEZI_PURE_PYTHON": "", "PLEZI_REQUIRE_COMPILED": ""}
    build = _wheel(tmp_path / "plezi", tmp_path / "dist", env)
    assert build.returncode == 0, build.stderr
    assert "plezi installs as pure Python" in build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("plezi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "plezi/server/h1.py" in names
    assert not [n for n in names if _is_extension(n)], names
    # The same command where compiling is required fails instead.
    strict = _wheel(tmp_path / "plezi", tmp_path / "dist2", {**env, "PLEZI_REQUIRE_COMPILED": "1"})
    assert strict.returncode != 0
