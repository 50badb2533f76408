"""Request parameters: query strings, url-encoded forms and JSON bodies.

Nesting follows Rack 3's ``parse_nested_query`` (what Plezi hands its controllers):

* ``a=1`` gives ``{"a": "1"}``; a repeated plain key keeps the last value;
* ``a[b]=1`` gives ``{"a": {"b": "1"}}``;
* ``a[]=1&a[]=2`` gives ``{"a": ["1", "2"]}``;
* ``a[][x]=1&a[][y]=2&a[][x]=3`` gives ``{"a": [{"x": "1", "y": "2"}, {"x": "3"}]}``: a key
  goes into the array's last hash unless that hash already has it, which starts a new hash;
* a pair without ``=`` has the value ``""`` (the URL standard's rule, and Rack 3.0's; Rack 3.1
  went back to ``nil``, which Python code would rather not see); pairs with an empty key are
  skipped, and so are empty pairs (``&&``);
* only ``&`` separates pairs (Rack 3 dropped ``;``), and spaces right after a ``&`` are ignored;
* ``+`` is a space; invalid percent escapes are kept literally; decoded bytes are UTF-8 (bad
  sequences become U+FFFD).

Rack raises when a name asks for a hash or an array where a different type already is
(``a=1&a[b]=2``), but a plain name simply replaces what was there (``a[b]=1&a=2`` gives
``{"a": "2"}``); so does this module, raising :class:`ParamsError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson

__all__ = ["ParamsError", "add_param", "merge_params", "parse_json_body", "parse_query"]

_BRACKET_RUNS: Final = re.compile(r"[\[\]]+")
_MAX_SHOWN: Final = 40


class ParamsError(ValueError):
    """Malformed or abusive request parameters; the request deserves a ``400 Bad Request``."""

    status: int = 400


def _shown(name: str) -> str:
    """A parameter name for an error message, cut short so huge input never reaches logs."""
    if len(name) > _MAX_SHOWN:
        name = name[:_MAX_SHOWN] + "..."
    return repr(name)


def parse_query(qs: str | bytes, *, max_params: int = 1000, max_depth: int = 32) -> dict[str, Any]:
    """Parse a query string or an ``application/x-www-form-urlencoded`` body, with nesting.

    Raises :class:`ParamsError` for conflicting types, for more than ``max_params`` pairs, or
    for names nested ``max_depth`` levels or deeper (both limits guard against abuse).
    """
    if isinstance(qs, bytes):
        qs = qs.decode("utf-8", "replace")
    params: dict[str, Any] = {}
    if not qs:
        return params
    # PERF: counting separators is one C call and rejects floods before any work is done.
    if qs.count("&") >= max_params:
        raise ParamsError(f"too many parameters (the limit is {max_params})")
    for pair in qs.split("&"):
        pair = pair.lstrip(" ")
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = unquote_plus(name)
        if name:
            _normalize(params, name, unquote_plus(value), 0, max_depth)
    return params


def add_param(params: dict[str, Any], name: str, value: Any, *, max_depth: int = 32) -> None:
    """Store one already-decoded pair in ``params`` with the nesting rules above.

    This is what Plezi does with route parameters, so a route segment named ``user[name]``
    lands in ``params["user"]["name"]``. An empty ``name`` is ignored; conflicts and excessive
    depth raise :class:`ParamsError`.
    """
    if name:
        _normalize(params, name, value, 0, max_depth)


def _split_name(name: str, depth: int) -> tuple[str, str]:
    """The key this level consumes and the rest of the name (Rack's rules)."""
    if depth == 0:
        # A leading "[" is part of the key at the top level.
        start = name.find("[", 1)
        return (name, "") if start < 0 else (name[:start], name[start:])
    if name.startswith("[]"):
        return "[]", name[2:]
    if name.startswith("["):
        end = name.find("]", 1)
        if end >= 0:
            return name[1:end], name[end + 1 :]
    return name, ""  # malformed nesting: the whole rest is a key


def _normalize(params: Any, name: str, value: Any, depth: int, max_depth: int) -> Any:
    """Store ``value`` under the (possibly nested) ``name`` in ``params``; return the container."""
    if depth >= max_depth:
        raise ParamsError(f"parameter nested too deeply (the limit is {max_depth})")
    key, after = _split_name(name, depth)
    if not key:
        return params
    if not after:
        if key == "[]" and depth:
            return [value]
        params[key] = value
    elif after == "[":
        params[name] = value
    elif after == "[]":
        _array_at(params, key).append(value)
    elif after.startswith("[]"):
        _into_array_of_hashes(_array_at(params, key), after, value, depth, max_depth)
    else:
        child = params.setdefault(key, {})
        if not isinstance(child, dict):
            raise ParamsError(f"expected a hash for parameter {_shown(key)}")
        params[key] = _normalize(child, after, value, depth + 1, max_depth)
    return params


def _array_at(params: dict[str, Any], key: str) -> list[Any]:
    found = params.setdefault(key, [])
    if not isinstance(found, list):
        raise ParamsError(f"expected an array for parameter {_shown(key)}")
    return found


def _into_array_of_hashes(
    array: list[Any], after: str, value: Any, depth: int, max_depth: int
) -> None:
    """``a[][x]=1``: fill the array's last hash unless it already has ``x``."""
    inner = after[3:-1]
    if after[2:3] == "[" and after.endswith("]") and inner and not _BRACKET_RUNS.search(inner):
        child_key = inner
    else:
        child_key = after[2:]
    last = array[-1] if array else None
    if isinstance(last, dict) and not _has_key(last, child_key):
        _normalize(last, child_key, value, depth + 1, max_depth)
    else:
        array.append(_normalize({}, child_key, value, depth + 1, max_depth))


def _has_key(hash_: dict[str, Any], key: str) -> bool:
    """Whether the nested ``key`` (``x`` or ``[x][y]``) is already set in ``hash_``."""
    if "[]" in key:
        return False
    node: Any = hash_
    for part in _BRACKET_RUNS.split(key):
        if not part:
            continue
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Parse a JSON request body: an object becomes the parameters themselves, any other JSON
    value is wrapped as ``{"_json": value}`` (as Rails does). An empty body gives ``{}``.

    Raises :class:`ParamsError` when the body is not valid JSON.
    """
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names a position rather than echoing input; cut it short anyway.
        raise ParamsError(f"invalid JSON body: {str(exc)[:200]}") from None
    if isinstance(value, dict):
        return value
    return {"_json": value}


def merge_params(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """Merge parameter mappings into a new dict; later sources win.

    Nested mappings are merged key by key, at any depth; every other value (lists included)
    replaces the earlier one. The sources are never modified, and every dict in the result is a
    fresh copy, so the result may be changed freely.
    """
    merged: dict[str, Any] = {}
    for source in sources:
        _merge_into(merged, source)
    return merged


def _merge_into(target: dict[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in source.items():
        if isinstance(value, Mapping):
            existing = target.get(key)
            if not isinstance(existing, dict):
                existing = target[key] = {}
            _merge_into(existing, value)
        else:
            target[key] = value
    return target
