"""``plezi new NAME``: a new app's folder, ready to run and to test.

The files are package data (``scaffold_files/app/`` and, for ``--mini``, ``scaffold_files/mini/``),
each with a ``.tmpl`` suffix (so that no tool takes them for the package's own code) and
``__NAME__`` where the app's name goes, in file names and contents alike.
"""

from __future__ import annotations

import argparse
import keyword
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, TextIO

__all__ = ["new_command"]

_PLACEHOLDER: Final = "__NAME__"
_SUFFIX: Final = ".tmpl"
#: Names that a generated script or its folders would shadow (``import plezi`` would import the
#: app itself).
_TAKEN: Final = frozenset(("plezi", "controllers", "tests", "views", "public", "pytest"))


class _Refused(Exception):
    """``plezi new`` cannot go on; ``code`` is the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def new_command(argv: list[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``plezi new`` with ``argv`` (the arguments after ``new``); returns the exit status:
    0, 1 when the folder exists, 2 for a bad name or bad arguments."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the error
        return int(exc.code or 0)
    try:
        _check_name(args.name)
        target = Path.cwd() / args.name
        if target.exists():
            raise _Refused(
                f"plezi new: {target} already exists; choose another name or remove it", 1
            )
        _write(
            resources.files("plezi.launch") / "scaffold_files" / ("mini" if args.mini else "app"),
            target,
            args.name,
        )
    except _Refused as exc:
        print(exc, file=err)
        return exc.code
    _print_next_steps(args.name, args.mini, out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plezi new",
        description="Create NAME/: a plezi app with routes, controllers, views, public files "
        "and tests, ready to run.",
    )
    parser.add_argument("name", metavar="NAME", help="the app's name: a Python identifier")
    parser.add_argument(
        "--mini", action="store_true", help="one file (NAME/NAME.py) instead of a folder tree"
    )
    return parser


def _check_name(name: str) -> None:
    """Refuse a name that cannot be the app's module name (exit status 2)."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise _Refused(
            f"plezi new: {name!r} is not a valid Python identifier (the app is NAME.py and is "
            "imported by its tests): use letters, digits and underscores, e.g. my_app",
            2,
        )
    if name in _TAKEN or name in sys.stdlib_module_names:
        raise _Refused(
            f"plezi new: {name!r} would shadow the module of that name "
            "(import it and you would get the app): choose another name",
            2,
        )


def _write(source: Traversable, target: Path, name: str) -> None:
    """Copy the template tree ``source`` to ``target``, with ``name`` for the placeholder."""
    target.mkdir(parents=True)
    for item in sorted(source.iterdir(), key=lambda t: t.name):
        if item.is_dir():
            _write(item, target / item.name, name)
        elif item.name.endswith(_SUFFIX):
            file_name = item.name.removesuffix(_SUFFIX).replace(_PLACEHOLDER, name)
            text = item.read_text(encoding="utf-8").replace(_PLACEHOLDER, name)
            text = text.replace("__PLEZI_VERSION__", _version())
            (target / file_name).write_text(text, encoding="utf-8")


def _version() -> str:
    from ..version import __version__

    return __version__


def _print_next_steps(name: str, mini: bool, out: TextIO) -> None:
    tests = f"python -m pytest {name}.py" if mini else "python -m pytest"
    print(f"Created {name}/, a plezi app.", file=out)
    print(f"Run it (then open http://localhost:3000/):  cd {name} && python {name}.py", file=out)
    print(f"Run its tests:                              cd {name} && {tests}", file=out)
