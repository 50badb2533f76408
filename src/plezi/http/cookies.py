"""Cookies: parse the ``Cookie`` request header, format ``Set-Cookie`` response headers.

The standard library's :mod:`http.cookies` is not used. Its ``SimpleCookie.load`` stops at the
first pair it dislikes, silently dropping every cookie after it (one bad cookie set by some other
app on the domain hides ours), and it decodes values with Python's octal ``\\054`` escapes rather
than the percent-encoding browsers and Rack use. Its ``Morsel`` formatting writes those octal
escapes too. The code needed here is short, so it is written out.

Values are percent-encoded when written (every byte that is not an RFC 6265 ``cookie-octet``,
plus ``%`` itself) and percent-decoded when read, so any string round-trips. ``+`` is left alone
in both directions: cookies are not form data.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final
from urllib.parse import quote, unquote

__all__ = ["format_delete_cookie", "format_set_cookie", "parse_cookie_header"]

#: RFC 6265 / RFC 9110 ``token``: the characters a cookie name may use.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: ``cookie-octet`` minus ``%`` (``%`` starts an escape): what ``quote`` may leave raw.
_VALUE_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\%')
#: An attribute value (``Path``, ``Domain``, a string ``Expires``): printable ASCII but ``;``.
_ATTRIBUTE: Final = re.compile(r"[\x20-\x3a\x3c-\x7e]*")
_SAMESITE: Final = {"lax": "Lax", "strict": "Strict", "none": "None"}
_EPOCH: Final = "Thu, 01 Jan 1970 00:00:00 GMT"


def parse_cookie_header(value: str) -> dict[str, str]:
    """Parse a ``Cookie`` request header into ``{name: value}``.

    Lenient, as browsers are: pairs without ``=`` or with an empty name are skipped, whitespace
    around names and values is dropped, one pair of double quotes around a value is removed and
    values are percent-decoded (invalid escapes stay as they are). When a name repeats, the first
    value wins: browsers send the cookie with the most specific path first.
    """
    cookies: dict[str, str] = {}
    for pair in value.split(";"):
        name, sep, raw = pair.partition("=")
        if not sep:
            continue
        name = name.strip()
        if not name or name in cookies:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
            raw = raw[1:-1]
        # PERF: unquote already returns early when there is no "%".
        cookies[name] = unquote(raw)
    return cookies


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    expires: datetime | str | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: str | None = "Lax",
) -> str:
    """The value of one ``Set-Cookie`` header.

    ``name`` must be an RFC 6265 token and ``samesite`` one of ``Lax``, ``Strict`` or ``None``
    (any case; ``None`` the string requires ``secure=True``, as browsers do, while ``None`` the
    Python value omits the attribute). ``expires`` is a :class:`~datetime.datetime` (a naive one
    is taken as UTC) or a ready-made HTTP date. ``path``, ``domain`` and a string ``expires``
    must be printable ASCII without ``;``. Any violation raises :class:`ValueError`: a header
    must never be injectable.
    """
    _check_name(name)
    parts = [f"{name}={quote(value, safe=_VALUE_SAFE)}"]
    if expires is not None:
        parts.append(f"Expires={_http_date(expires)}")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if domain is not None:
        parts.append(f"Domain={_attribute('domain', domain)}")
    if path is not None:
        parts.append(f"Path={_attribute('path', path)}")
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        parts.append(f"SameSite={_samesite(samesite, secure)}")
    return "; ".join(parts)


def format_delete_cookie(name: str, *, path: str | None = "/", domain: str | None = None) -> str:
    """A ``Set-Cookie`` value that makes browsers drop cookie ``name``: empty, ``Max-Age=0`` and
    an ``Expires`` date in the past. ``path`` and ``domain`` must be the ones it was set with."""
    _check_name(name)
    parts = [f"{name}=", f"Expires={_EPOCH}", "Max-Age=0"]
    if domain is not None:
        parts.append(f"Domain={_attribute('domain', domain)}")
    if path is not None:
        parts.append(f"Path={_attribute('path', path)}")
    return "; ".join(parts)


def _check_name(name: str) -> None:
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid cookie name {name[:40]!r}: it must be an RFC 6265 token")


def _attribute(what: str, value: str) -> str:
    if not value or not _ATTRIBUTE.fullmatch(value):
        raise ValueError(f"invalid cookie {what} {value[:40]!r}: printable ASCII without ';'")
    return value


def _http_date(expires: datetime | str) -> str:
    if isinstance(expires, str):
        return _attribute("expires", expires)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return format_datetime(expires.astimezone(UTC), usegmt=True)


def _samesite(value: str, secure: bool) -> str:
    canonical = _SAMESITE.get(value.lower())
    if canonical is None:
        raise ValueError(f"invalid SameSite value {value[:40]!r}: use Lax, Strict or None")
    if canonical == "None" and not secure:
        raise ValueError("SameSite=None requires secure=True (browsers reject it otherwise)")
    return canonical
