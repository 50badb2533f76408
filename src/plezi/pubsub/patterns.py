"""Redis glob patterns (``PSUBSCRIBE`` syntax) compiled to regular expressions.

The translation follows Redis's own matcher (``stringmatchlen`` in ``util.c``) case by case, so a
pattern means here what it means to Redis, edge cases included:

* ``*`` any run of characters (empty too), ``?`` exactly one character, ``\\x`` a literal ``x``
  (a trailing lone ``\\`` is a literal backslash).
* ``[abc]`` one of the characters, ``[^abc]`` any other one, ``[a-z]`` a range (``[z-a]`` is the
  same range), ``\\`` escapes inside a set (``[\\]]`` is the set of ``]``, ``[a\\-z]`` the set of
  ``a``, ``-`` and ``z``).
* ``[]`` is an empty set (it never matches), ``[^]`` any character, and a ``[`` that is never
  closed takes the rest of the pattern as its set.

Matching is on characters (code points), where Redis compares bytes: ``?`` and sets see one
non-ASCII character where Redis would see its UTF-8 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["compile_glob"]


def _translate(pattern: str) -> str:
    """Redis glob -> regular expression (see the module docstring).

    PERF: a glob is a list of fixed-length segments between stars. The first segment is anchored
    at the start, the last at the end, and each one in between is matched at its earliest
    position and never reconsidered (an atomic group): earliest is always right, because a
    segment that ends sooner leaves more room for the rest. So matching takes linear time;
    a naive ``.*a.*a.*a...`` backtracks exponentially on a name like ``aaaa...``
    (Redis's CVE-2022-36021), which here would hang the event loop on every publish.
    """
    segments: list[list[str]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            segments.append([])
        elif c == "?":
            segments[-1].append(".")
        elif c == "\\" and i < n:
            segments[-1].append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            piece, i = _translate_set(pattern, i)
            segments[-1].append(piece)
        else:
            segments[-1].append(re.escape(c))
    if len(segments) == 1:
        return "".join(segments[0])
    first, *middle, last = ("".join(segment) for segment in segments)
    return first + "".join(f"(?>.*?{m})" for m in middle if m) + ".*" + last


def _translate_set(pattern: str, i: int) -> tuple[str, int]:
    """The set that starts after the ``[`` at ``i - 1``, and the index after it."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            items.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "]":
            i += 1
            break
        elif i + 2 < n and pattern[i + 1] == "-":
            low, high = sorted((c, pattern[i + 2]))
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(c))
            i += 1
    if not items:
        return ("." if negate else "(?!)"), i
    return f"[{'^' if negate else ''}{''.join(items)}]", i


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> Callable[[str], object]:
    """A function telling whether a channel name matches ``pattern`` (whole name)."""
    return re.compile(_translate(pattern), re.DOTALL).fullmatch
