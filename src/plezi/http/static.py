"""Files: ``send_file`` in controllers."""

from __future__ import annotations

import mimetypes
import os

from .response import Response

__all__ = ["file_response", "guess_type"]


def guess_type(path: str) -> str:
    """The ``Content-Type`` for a file name (``application/octet-stream`` when unknown)."""
    ctype, encoding = mimetypes.guess_type(path)
    if ctype is None or encoding is not None:
        return "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        return f"{ctype}; charset=utf-8"
    return ctype


def file_response(path: str, *, content_type: str | None = None) -> Response | None:
    """A 200 response with the file's bytes, or ``None`` when ``path`` is not a regular file."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as fh:
            body = fh.read()
    except OSError:
        return None
    response = Response()
    response.body = body
    response.headers["Content-Type"] = content_type or guess_type(path)
    return response
