"""Route path patterns: Plezi's ``"/users/(:id)/(:format)"`` syntax, compiled once.

Pattern syntax (one item per ``/``-separated segment):

``users``
    A literal segment; it must match exactly (after both sides are put in canonical
    percent-encoded form, so ``caf%C3%A9`` and ``café`` are the same literal).
``:name``
    A required parameter: exactly one non-empty segment.
``(:name)``
    An optional parameter. Optional parameters are positional: once one is absent every later
    one is absent too, so only required parameters and literals may come before them, and only
    optional parameters or a tail may follow them. An absent parameter is left out of the result.
``:name{regex}`` / ``(:name){regex}``
    A constraint (the syntax of Plezi 0.11-0.12; Plezi 0.16 dropped constraints). The regex must
    match the whole *decoded* value (``re.fullmatch``) or the route does not match. Braces may nest
    (``{[0-9]{2,4}}``); a literal brace inside the regex must be escaped (``\\{``).
``*``
    The last segment only: any tail of zero or more segments. The tail is stored under the key
    ``"*"`` without a leading or trailing slash, and only when it is not empty (Plezi stores the
    left-over segments under ``'*'`` only when there are some). Unlike the named parameters the
    tail is *not* decoded - Plezi also keeps it raw - because decoding would let ``%2F`` (or
    ``..%2F``) pose as a path separator; use :func:`tail_segments` to split and decode it.

Parameter names use Plezi's alphabet: letters, digits, ``_``, ``.``, ``[`` and ``]`` (a name
such as ``user[name]`` lets the caller nest the value the way Rack's query parser would).

Request paths are matched in the canonical form produced by :func:`normalize_path`; one trailing
slash is tolerated (``/users/`` matches ``/users``). Parameter values are percent-decoded as
UTF-8 (invalid sequences become U+FFFD); ``+`` stays a plus sign, as paths are not form data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, Literal
from urllib.parse import quote, quote_from_bytes, unquote, unquote_to_bytes

from mypy_extensions import mypyc_attr

from ..http.paths import PCHAR_SAFE as _PCHAR_SAFE
from ..http.paths import normalize_path

__all__ = ["RoutePattern", "normalize_path", "tail_segments"]

_NAME: Final = re.compile(r"[A-Za-z0-9_.\[\]]+")
_PARAM: Final = re.compile(
    r"(?::(?P<req>[^(){}/]*)|\(:(?P<opt>[^(){}/]*)\))(?:\{(?P<rx>.*)\})?", re.DOTALL
)
_FORBIDDEN_IN_LITERAL: Final = frozenset("(){}*")

_Kind = Literal["literal", "required", "optional", "tail"]


def tail_segments(tail: str) -> list[str]:
    """Split a ``"*"`` tail captured by :meth:`RoutePattern.match` and decode each segment.

    A decoded segment may contain ``/`` (from ``%2F``); callers that map segments onto a file
    system must reject such segments (and ``NUL``) themselves.
    """
    return [unquote(part) for part in tail.split("/") if part]


def _canonical_segment(text: str) -> str:
    return quote_from_bytes(unquote_to_bytes(text), safe=_PCHAR_SAFE)


def _split_pattern(pattern: str) -> list[str]:
    """Split on ``/`` outside ``{...}``; drop empty parts (so ``//`` and a final ``/`` vanish)."""
    parts: list[str] = []
    buf: list[str] = []
    depth = 0
    escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\" and depth:
            escaped = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced '}}' in route {pattern!r}")
        elif ch == "/" and not depth:
            parts.append("".join(buf))
            buf.clear()
            continue
        buf.append(ch)
    if depth:
        raise ValueError(f"unbalanced '{{' in route {pattern!r}")
    parts.append("".join(buf))
    return [part for part in parts if part]


class _Segment:
    """One parsed pattern segment."""

    __slots__ = ("constraint", "kind", "text")

    def __init__(self, kind: _Kind, text: str, constraint: re.Pattern[str] | None = None) -> None:
        self.kind: _Kind = kind
        self.text = text  # literal: canonical text; parameter: its name
        self.constraint = constraint


def _parse_segment(part: str, pattern: str) -> _Segment:
    if part == "*":
        return _Segment("tail", "*")
    m = _PARAM.fullmatch(part)
    if m is None:
        if part[0] in ":(" or not _FORBIDDEN_IN_LITERAL.isdisjoint(part):
            raise ValueError(f"invalid path section {part!r} in route {pattern!r}")
        literal = _canonical_segment(part)
        if unquote_to_bytes(literal) in (b".", b".."):
            raise ValueError(f"dot segment {part!r} in route {pattern!r}")
        return _Segment("literal", literal)
    name = m["req"] if m["req"] is not None else m["opt"]
    if not name:
        raise ValueError(f"empty parameter name in route {pattern!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid parameter name {name!r} in route {pattern!r}")
    constraint = None
    if m["rx"] is not None:
        try:
            constraint = re.compile(m["rx"])
        except re.error as exc:
            raise ValueError(f"bad constraint for {name!r} in route {pattern!r}: {exc}") from None
    return _Segment("required" if m["req"] is not None else "optional", name, constraint)


def _check_order(segments: list[_Segment], pattern: str) -> None:
    seen: set[str] = set()
    optional = False
    for index, seg in enumerate(segments):
        if seg.kind == "tail" and index != len(segments) - 1:
            raise ValueError(f"'*' must be the last segment in route {pattern!r}")
        if optional and seg.kind in ("required", "literal"):
            what = "a required parameter" if seg.kind == "required" else "a literal segment"
            raise ValueError(f"{what} cannot follow an optional parameter in route {pattern!r}")
        optional = optional or seg.kind == "optional"
        if seg.kind in ("required", "optional"):
            if seg.text in seen:
                raise ValueError(f"duplicate parameter {seg.text!r} in route {pattern!r}")
            seen.add(seg.text)


def _compile(segments: list[_Segment]) -> re.Pattern[str]:
    """One regex for the whole pattern: each parameter is a group, optionals nest."""
    body: list[str] = []
    closers = 0
    for seg in segments:
        if seg.kind == "literal":
            body.append("/" + re.escape(seg.text))
        elif seg.kind == "required":
            body.append("/([^/]+)")
        elif seg.kind == "optional":
            body.append("(?:/([^/]+)")
            closers += 1
        else:
            body.append("(?:/(.+?))?")
    body.append(")?" * closers)
    # "/" itself matches only "/"; anything else tolerates one trailing slash.
    return re.compile("".join(body) + ("/?" if segments else "/"), re.DOTALL)


#: Paths whose match result each pattern remembers (see :meth:`RoutePattern.match`).
_MEMO_SIZE: Final = 1024
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


# Subclassed by the public folder's pattern (web/public.py), which is not compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
class RoutePattern:
    """A compiled route path pattern (see the module docstring for the syntax).

    ``add_id=True`` mirrors what Plezi does for controller routes: when the pattern names no
    ``id`` parameter and has no ``*`` tail, an optional ``(:id)`` segment is appended. Plezi skips
    the ``id`` for tail patterns (it would steal the tail's first segment), and so does this class.
    """

    __slots__ = (
        "_checks",
        "_literal",
        "_memo",
        "_regex",
        "_segments",
        "has_tail",
        "names",
        "path",
        "prefix",
    )

    def __init__(self, path: str, *, add_id: bool = False) -> None:
        self.path = path
        segments = [_parse_segment(part, path) for part in _split_pattern(path)]
        _check_order(segments, path)
        has_tail = bool(segments) and segments[-1].kind == "tail"
        names = [seg.text for seg in segments if seg.kind in ("required", "optional")]
        if add_id and "id" not in names and not has_tail:
            segments.append(_Segment("optional", "id"))
            names.append("id")
        self._segments: tuple[_Segment, ...] = tuple(segments)
        #: Parameter names in order (the tail is not a name; see :attr:`has_tail`).
        self.names: tuple[str, ...] = tuple(names)
        #: Whether the pattern ends in a ``*`` tail, captured under the key ``"*"``.
        self.has_tail = has_tail
        #: The literal start of the pattern (``"/"`` when it starts with a parameter), like
        #: Plezi's ``Route#prefix``; a router may use it to skip routes cheaply.
        self.prefix = self._literal_prefix()
        self._regex = _compile(segments)
        self._checks = tuple(
            (seg.text, seg.constraint) for seg in segments if seg.constraint is not None
        )
        # PERF: a pattern without parameters is matched by a set lookup, not a regex.
        self._literal: frozenset[str] | None = None
        if not names and not has_tail:
            exact = self.prefix
            self._literal = frozenset((exact, exact + "/")) if exact != "/" else frozenset(("/",))

        #: Recent match results by path (see :meth:`match`).
        self._memo: dict[str, Mapping[str, str] | None] = {}

    def __repr__(self) -> str:
        return f"RoutePattern({self.path!r}, names={self.names!r})"

    def _literal_prefix(self) -> str:
        parts: list[str] = []
        for seg in self._segments:
            if seg.kind != "literal":
                break
            parts.append(seg.text)
        return "/" + "/".join(parts)

    def match(self, path: str) -> Mapping[str, str] | None:
        """Match a request path (as returned by :func:`normalize_path`, no query string).

        Returns the decoded parameters (absent optionals left out; a non-empty tail under
        ``"*"``, still percent-encoded), or ``None`` when the path does not match. The dict may
        be shared with later calls for the same path: read it, never change it.
        """
        # PERF: hot path - runs for every route tried on every request.
        if self._literal is not None:
            return _EMPTY if path in self._literal else None
        # PERF: most traffic asks for a few paths again and again; a dict lookup replaces the
        # regex and the decoding. Bounded: cleared when full, so random paths cannot grow it.
        memo = self._memo
        try:
            return memo[path]
        except KeyError:
            pass
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        found = memo[path] = self._match(path)
        return found

    def _match(self, path: str) -> dict[str, str] | None:
        m = self._regex.fullmatch(path)
        if m is None:
            return None
        params: dict[str, str] = {}
        values = m.groups()
        for name, value in zip(self.names, values, strict=False):
            if value is not None:
                params[name] = unquote(value) if "%" in value else value
        if self.has_tail and values[-1] is not None:
            params["*"] = values[-1]
        for name, constraint in self._checks:
            value = params.get(name)
            if value is not None and constraint.fullmatch(value) is None:
                return None
        return params

    def build(self, params: Mapping[str, object]) -> str:
        """Fill the pattern with ``params`` (values pass through ``str()`` and are URL-encoded).

        A missing (or ``None``) required parameter raises :class:`KeyError`; the first missing,
        ``None`` or empty optional parameter ends the path, as Plezi's ``url_for`` does. The tail
        (``params["*"]``) may be a string (a path, kept as is apart from escaping) or a sequence
        of segments (each fully encoded). Parameters that the pattern does not name are ignored:
        the caller turns them into a query string. :class:`ValueError` when a value cannot be
        represented (empty required value, ``.``/``..``, a constraint it does not satisfy).
        """
        out: list[str] = []
        for seg in self._segments:
            if seg.kind == "literal":
                out.append(seg.text)
                continue
            value = params.get(seg.text)
            if seg.kind == "required" and value is None:
                raise KeyError(seg.text)
            text = _build_tail(value) if seg.kind == "tail" else _build_value(seg, value)
            if not text:
                break
            out.append(text)
        return "/" + "/".join(out)


def _build_value(seg: _Segment, value: object) -> str:
    """The encoded value; ``""`` for an absent optional one."""
    text = "" if value is None else str(value)
    if not text and seg.kind == "optional":
        return ""
    if text in ("", ".", ".."):
        raise ValueError(f"parameter {seg.text!r} cannot be {text!r} in a path")
    if seg.constraint is not None and seg.constraint.fullmatch(text) is None:
        raise ValueError(f"parameter {seg.text!r} does not satisfy its constraint: {text!r}")
    return quote(text, safe=_PCHAR_SAFE)


def _build_tail(value: object) -> str:
    """The encoded tail; ``""`` when there is none."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.strip("/")
        if not value:
            return ""
        parts = [_canonical_segment(part) for part in value.split("/")]
    elif isinstance(value, Sequence):
        parts = [quote(str(part), safe=_PCHAR_SAFE) for part in value]
    else:
        raise TypeError(f"the '*' tail must be a str or a sequence, not {type(value).__name__}")
    for part in parts:
        if part in ("", ".", "..") or unquote_to_bytes(part) in (b".", b".."):
            raise ValueError(f"the '*' tail cannot contain an empty or dot segment: {part!r}")
    return "/".join(parts)
