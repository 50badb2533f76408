"""Request paths in canonical form: the one normalisation routing and the public folder share.

It is an HTTP rule (RFC 3986 section 6 equivalence, dot segments resolved, escapes made
canonical per segment), so it lives here, below both users.
"""

from __future__ import annotations

import functools
import re
from typing import Final
from urllib.parse import quote_from_bytes, unquote_to_bytes

__all__ = ["PCHAR_SAFE", "normalize_path"]

#: Characters RFC 3986 allows raw in a path segment besides the unreserved ones (``pchar``).
PCHAR_SAFE: Final = "!$&'()*+,;=:@"
#: A path that is already canonical: no escapes, no empty segments, only raw ``pchar``.
_CANONICAL_PATH: Final = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*/?")


@functools.lru_cache(maxsize=1024)
def normalize_path(path: str) -> str | None:
    """Return ``path`` in canonical form, or ``None`` when it cannot be routed.

    * runs of ``/`` collapse into one;
    * ``.`` and ``..`` segments are resolved (so are their encoded forms such as ``%2E%2E``,
      which RFC 3986 makes equivalent); ``None`` when ``..`` would climb above the root;
    * escapes are canonicalised per segment: unreserved characters are decoded, everything else
      not allowed raw in a segment is encoded with upper-case hex. ``%2F`` therefore stays
      ``%2F``, inside its segment, and decoding happens only after splitting (in
      :meth:`plezi.web.patterns.RoutePattern.match`);
    * a trailing slash is kept (a final dot segment leaves one, as in RFC 3986).

    ``path`` must start with ``/`` and carry no query string; anything else gives ``None``.
    Non-ASCII characters are taken as text and encoded as UTF-8.

    PERF: most traffic asks for a few paths again and again; the recent answers are cached
    (bounded, least recently used out); a cached answer costs a third of the checks below.
    """
    if not path.startswith("/"):
        return None
    # PERF: most request paths are already canonical; one C-level regex call proves it.
    if "/." not in path and _CANONICAL_PATH.fullmatch(path):
        return path
    return _normalize_slow(path)


def _normalize_slow(path: str) -> str | None:
    out: list[str] = []
    ends_in_dir = False
    for raw in path.split("/"):
        if not raw:
            continue
        data = unquote_to_bytes(raw)
        ends_in_dir = data in (b".", b"..")
        if data == b"..":
            if not out:
                return None
            out.pop()
        elif data != b".":
            out.append(quote_from_bytes(data, safe=PCHAR_SAFE))
    if not out:
        return "/"
    trailing = "/" if ends_in_dir or path.endswith("/") else ""
    return "/" + "/".join(out) + trailing
