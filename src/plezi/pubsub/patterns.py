"""Redis glob patterns (``PSUBSCRIBE`` syntax) compiled to regular expressions."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_glob"]


def _translate(pattern: str) -> str:
    """Redis glob -> regex: ``*`` any run, ``?`` one character, ``[abc]``/``[a-z]`` a set,
    ``[^a]`` a negated set, ``\\x`` a literal ``x``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1 if pattern[i : i + 1] in ("^", "]") else i)
            if end < 0:
                out.append(re.escape(c))
                continue
            body = pattern[i:end]
            i = end + 1
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            # Keep ranges (a-z), escape everything else that means something inside [].
            body = re.sub(r"([\\\]\[^])", r"\\\1", body)
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> Callable[[str], object]:
    """A function telling whether a channel name matches ``pattern`` (whole name)."""
    return re.compile(_translate(pattern), re.DOTALL).fullmatch
