"""The ``plezi`` command: ``plezi SCRIPT.py [flags]`` (``python -m plezi`` too), ``plezi new``,
``plezi routes``, ``plezi --version``. The flags themselves are :mod:`.flags`'.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .. import mainscript
from ..pubsub.hub import set_app_name
from .flags import build_parser

__all__ = ["main", "routes_command", "version"]

#: ``plezi --help``: one usage line, then the commands (the flags follow).
USAGE = "plezi SCRIPT.py [flags]"
_COMMANDS = """\
Run SCRIPT.py as a plezi application (what `python SCRIPT.py [flags]` does).

commands:
  plezi SCRIPT.py [flags]   serve the routes SCRIPT.py defines
  plezi new NAME [--mini]   create NAME/, a runnable app with its tests (--mini: one file)
  plezi routes SCRIPT.py    print SCRIPT.py's route table without starting the server
  plezi --version           print plezi's version"""


# -- the ``plezi`` command ------------------------------------------------------------------------


def version() -> str:
    """plezi's version, from the installed package's metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("plezi")
    except PackageNotFoundError:  # running from a source tree that was never installed
        from ..version import __version__

        return __version__


def _fail(message: str) -> int:
    print(f"plezi: {message}", file=sys.stderr)
    return 2


def _load_script(script: str, argv: Sequence[str]) -> None:
    """Run ``script`` as ``__main__`` with ``argv`` as its flags, as ``python script`` would:
    its folder first on ``sys.path``, and plezi told which file is the main script (for
    ``views/``, the pub/sub app name, and autostart at the end)."""
    import runpy

    path = os.path.abspath(script)
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(path))
    mainscript.set_main(path)
    set_app_name(f"{os.path.splitext(os.path.basename(path))[0]}_app")
    runpy.run_path(path, run_name="__main__")


def _script_or_error(args: Sequence[str], usage: str) -> str | None:
    if not args or args[0].startswith("-"):
        _fail(f"name the script first: {usage}")
        return None
    if not os.path.isfile(args[0]):
        _fail(f"no such script: {args[0]} ({usage})")
        return None
    return args[0]


def routes_command(args: Sequence[str]) -> int:
    """``plezi routes SCRIPT.py [flags]``: load the script without serving, print its routes."""
    from . import autostart

    script = _script_or_error(args, "plezi routes SCRIPT.py")
    if script is None:
        return 2
    autostart.load_only()
    _load_script(script, args[1:])
    from ..web.app import default_app
    from ..web.route_table import route_table

    print(route_table(default_app()), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``plezi`` command (``python -m plezi`` too): ``plezi SCRIPT.py [flags]`` runs a
    script as ``python SCRIPT.py [flags]`` would; ``new``, ``routes``, ``--version``, ``--help``.

    Returns the exit status (for a script: 0 once it has run; the server starts when the
    interpreter finishes, as for ``python SCRIPT.py``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    first = args[0] if args else ""
    if first in ("-h", "--help"):
        print(build_parser(usage=USAGE, description=_COMMANDS).format_help(), end="")
        return 0
    if first == "--version":
        print(f"plezi {version()}")
        return 0
    if first == "new":
        from .scaffold import new_command

        code: int = new_command(args[1:])
        return code
    if first == "routes":
        return routes_command(args[1:])
    script = _script_or_error(args, f"{USAGE}; plezi --help for more")
    if script is None:
        return 2
    _load_script(script, args[1:])
    return 0
