"""Server-Sent Events framing (HTML Living Standard, "Server-sent events").

Each function returns the UTF-8 bytes of one event block, ready to be written to
a ``text/event-stream`` response.
"""

from __future__ import annotations

import re

__all__ = ["sse_comment", "sse_event"]

# The event stream format treats CRLF, a lone CR and a lone LF as line ends
# (and nothing else: str.splitlines() would also split on U+2028 and friends).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lines(text: str) -> list[str]:
    # PERF: most payloads have no CR, and str.split is much cheaper than a regex.
    if "\r" in text:
        return _LINE_BREAK.split(text)
    return text.split("\n")


def sse_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one Server-Sent Event.

    Every line of ``data`` (split on CRLF, CR or LF) becomes its own ``data:``
    line, so the browser rebuilds ``data`` with ``\\n`` line ends. ``event`` and
    ``id`` must not contain CR or LF (and ``id`` no NUL); ``retry`` (the
    reconnection delay in milliseconds) must not be negative. Violations raise
    ``ValueError``.
    """
    head = ""
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("SSE event name must not contain a line break")
        head = f"event: {event}\n"
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("SSE id must not contain a line break or NUL")
        head += f"id: {id}\n"
    if retry is not None:
        if retry < 0:
            raise ValueError("SSE retry must not be negative")
        head += f"retry: {int(retry)}\n"
    # PERF: the usual single-line message is one f-string and one encode.
    if "\n" not in data and "\r" not in data:
        return f"{head}data: {data}\n\n".encode()
    body = "".join(f"data: {line}\n" for line in _lines(data))
    return f"{head}{body}\n".encode()


def sse_comment(text: str = "") -> bytes:
    """Encode an SSE comment line (``: text``), ignored by clients; used as keep-alive.

    A multi-line ``text`` becomes several comment lines.
    """
    if "\n" not in text and "\r" not in text:
        return f": {text}\n\n".encode()
    return ("".join(f": {line}\n" for line in _lines(text)) + "\n").encode()
