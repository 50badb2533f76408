"""``python -m plezi.web.client [--check]``: rebuild ``client.js`` from ``plezi-client.mjs``.

With ``--check`` nothing is written; the exit status is 1 when ``client.js`` is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import MODULE_FILE, SCRIPT_FILE, build_classic


def main(argv: list[str]) -> int:
    """Rebuild (or with ``--check``, verify) the classic-script build."""
    folder = Path(__file__).resolve().parent
    built = build_classic((folder / MODULE_FILE).read_text(encoding="utf-8"))
    target = folder / SCRIPT_FILE
    current = target.read_text(encoding="utf-8") if target.exists() else ""
    if "--check" in argv:
        if current != built:
            print(f"{target} is out of date: run python -m plezi.web.client", file=sys.stderr)
            return 1
        return 0
    if current != built:
        target.write_text(built, encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
