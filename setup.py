"""Build plezi: pure Python, with its hot modules compiled by mypyc where this machine can.

Everything else lives in pyproject.toml. The modules to compile are listed in
``src/plezi/compiled.py``, which also chooses at run time between them and their sources.

* No mypy, no C compiler, or a failed compile: a warning, and plezi installs as pure Python
  (the same ``.py`` files, slower).
* ``PLEZI_PURE_PYTHON=1``: do not compile.
* ``PLEZI_REQUIRE_COMPILED=1``: a failed compile fails the install (CI uses it, so that a
  change mypyc cannot compile is seen, not silently run as pure Python).
"""

from __future__ import annotations

import os
import runpy
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
MODULES: tuple[str, ...] = runpy.run_path(str(HERE / "src" / "plezi" / "compiled.py"))["MODULES"]
REQUIRED = os.environ.get("PLEZI_REQUIRE_COMPILED", "") not in ("", "0")


def _warn(message: str) -> None:
    print(f"plezi: {message}; plezi installs as pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Builds the compiled modules, or none of them when any fails (half a build would not load)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:
            if REQUIRED:
                raise
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            _warn(f"the compiled modules were not built ({error})")

    def copy_file(self, infile: Any, outfile: Any, *args: Any, **kwargs: Any) -> Any:
        # An editable install copies the extensions into src/. Overwriting one in place would
        # change the pages of a process that has it loaded (a running server, the test run
        # that reinstalls): a new file instead, the old one lives on until they exit.
        target = Path(outfile)
        if target.is_dir():
            target = target / Path(infile).name
        if str(infile).endswith(tuple(EXTENSION_SUFFIXES)) and target.is_file():
            target.unlink()
        return super().copy_file(infile, outfile, *args, **kwargs)


#: The setup.py commands that build: the others (pip's metadata steps) need no extensions, and
#: translating the modules takes mypyc a while.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"}


def extensions() -> list[Any]:
    if os.environ.get("PLEZI_PURE_PYTHON", "") not in ("", "0") or not BUILDS & set(sys.argv):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        if REQUIRED:
            raise
        _warn(f"mypyc is not available ({error})")
        return []
    paths = [str(Path("src", *module.split(".")).with_suffix(".py")) for module in MODULES]
    try:
        # The build environment need not hold plezi's dependencies: what it lacks is typed Any,
        # which pyproject's strict settings would refuse; so they are not read here (CI's mypy
        # run checks the code), and only the compiled modules' own errors stop the build.
        flags = ["--config-file=", "--ignore-missing-imports", "--follow-imports=silent"]
        compiled = list(mypycify([*flags, *paths], opt_level="3"))
    except (Exception, SystemExit) as error:
        if REQUIRED:
            raise
        _warn(f"mypyc could not compile plezi ({error})")
        return []
    # The batched sender of the server's flush (io_uring, or send()): Linux only, C by hand.
    if sys.platform.startswith("linux"):
        compiled.append(Extension("plezi.server._sendmany", ["src/plezi/server/_sendmany.c"]))
    return compiled


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
