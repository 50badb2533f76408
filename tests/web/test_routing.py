"""Route patterns: matching, building, normalisation (plezi.web.patterns)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plezi.web.patterns import RoutePattern, normalize_path, tail_segments

# (pattern, add_id, request path, expected params or None)
MATCH_TABLE: list[tuple[str, bool, str, dict[str, str] | None]] = [
    # literals
    ("/", False, "/", {}),
    ("/", False, "/x", None),
    ("", False, "/", {}),
    ("/users", False, "/users", {}),
    ("/users", False, "/users/", {}),
    ("/users", False, "/usersx", None),
    ("/users", False, "/users/5", None),
    ("/users", False, "/Users", None),
    ("users/", False, "/users", {}),
    ("/a/b", False, "/a/b", {}),
    ("/a/b", False, "/a", None),
    ("/caf\u00e9", False, "/caf%C3%A9", {}),
    ("/caf%c3%a9", False, "/caf%C3%A9", {}),
    # required parameters
    ("/users/:id", False, "/users/5", {"id": "5"}),
    ("/users/:id", False, "/users/5/", {"id": "5"}),
    ("/users/:id", False, "/users", None),
    ("/users/:id", False, "/users/", None),
    ("/users/:id", False, "/users/5/6", None),
    ("/:a/:b", False, "/x/y", {"a": "x", "b": "y"}),
    ("/users/:id/edit", False, "/users/5/edit", {"id": "5"}),
    ("/users/:id/edit", False, "/users/5/show", None),
    ("/u/:user[name]", False, "/u/bob", {"user[name]": "bob"}),
    ("/u/:a.b", False, "/u/x", {"a.b": "x"}),
    # optional parameters
    ("/users/(:id)/(:format)", False, "/users", {}),
    ("/users/(:id)/(:format)", False, "/users/", {}),
    ("/users/(:id)/(:format)", False, "/users/5", {"id": "5"}),
    ("/users/(:id)/(:format)", False, "/users/5/json", {"id": "5", "format": "json"}),
    ("/users/(:id)/(:format)", False, "/users/5/json/", {"id": "5", "format": "json"}),
    ("/users/(:id)/(:format)", False, "/users/5/json/x", None),
    ("/:a/(:b)", False, "/x", {"a": "x"}),
    ("/(:id)", False, "/", {}),
    ("/(:id)", False, "/7", {"id": "7"}),
    # constraints
    ("/n/:id{[0-9]+}", False, "/n/42", {"id": "42"}),
    ("/n/:id{[0-9]+}", False, "/n/4a", None),
    ("/n/(:id){[0-9]+}", False, "/n", {}),
    ("/n/(:id){[0-9]+}", False, "/n/42", {"id": "42"}),
    ("/n/(:id){[0-9]+}", False, "/n/x", None),
    ("/n/(:id){[0-9]{2,3}}", False, "/n/123", {"id": "123"}),
    ("/n/(:id){[0-9]{2,3}}", False, "/n/1234", None),
    ("/n/:x{a|b}", False, "/n/a", {"x": "a"}),
    ("/n/:x{a|b}", False, "/n/ab", None),  # fullmatch, not search
    ("/n/:x{\\{}", False, "/n/%7B", {"x": "{"}),  # escaped brace, matched decoded
    ("/n/:x{caf\u00e9}", False, "/n/caf%C3%A9", {"x": "caf\u00e9"}),
    # tail
    ("/files/*", False, "/files", {}),
    ("/files/*", False, "/files/", {}),
    ("/files/*", False, "/files/a", {"*": "a"}),
    ("/files/*", False, "/files/a/b/c", {"*": "a/b/c"}),
    ("/files/*", False, "/files/a/b/", {"*": "a/b"}),
    ("/files/*", False, "/files/a%2Fb%20c", {"*": "a%2Fb%20c"}),  # the tail stays raw
    ("/files/*", False, "/filesx", None),
    ("/*", False, "/", {}),
    ("/*", False, "/a/b", {"*": "a/b"}),
    ("/f/:k/*", False, "/f/x/y/z", {"k": "x", "*": "y/z"}),
    ("/f/:k/*", False, "/f", None),
    ("/f/(:k)/*", False, "/f", {}),
    ("/f/(:k)/*", False, "/f/x/y", {"k": "x", "*": "y"}),
    # decoding
    ("/a/:b", False, "/a/x%20y", {"b": "x y"}),
    ("/a/:b", False, "/a/x+y", {"b": "x+y"}),  # '+' is not a space in paths
    ("/a/:b", False, "/a/x%2By", {"b": "x+y"}),
    ("/a/:b/c", False, "/a/x%2Fy/c", {"b": "x/y"}),  # %2F stays inside its segment
    ("/a/:b", False, "/a/x%2Fy%2Fz", {"b": "x/y/z"}),
    ("/a/:b", False, "/a/%C3%A9", {"b": "\u00e9"}),
    ("/a/:b", False, "/a/%FF", {"b": "\ufffd"}),
    ("/a/:b", False, "/a/%25zz", {"b": "%zz"}),
    # add_id
    ("/users", True, "/users", {}),
    ("/users", True, "/users/", {}),
    ("/users", True, "/users/5", {"id": "5"}),
    ("/users", True, "/users/5/6", None),
    ("/", True, "/", {}),
    ("/", True, "/new", {"id": "new"}),
    ("/u/(:format)", True, "/u/json/9", {"format": "json", "id": "9"}),
    ("/u/:id/(:format)", True, "/u/9", {"id": "9"}),
    ("/u/:id/(:format)", True, "/u/9/json/1", None),  # has an id: nothing is added
    ("/u/*", True, "/u/a/b", {"*": "a/b"}),  # tails get no id, as in Plezi
]


@pytest.mark.parametrize(("pattern", "add_id", "path", "expected"), MATCH_TABLE)
def test_match(pattern: str, add_id: bool, path: str, expected: dict[str, str] | None) -> None:
    assert RoutePattern(pattern, add_id=add_id).match(path) == expected


NAMES_TABLE: list[tuple[str, bool, tuple[str, ...], bool, str]] = [
    ("/", False, (), False, "/"),
    ("/users", True, ("id",), False, "/users"),
    ("/users/(:id)/(:format)", False, ("id", "format"), False, "/users"),
    ("/users/(:id)/(:format)", True, ("id", "format"), False, "/users"),
    ("/u/:uid/posts", True, ("uid", "id"), False, "/u"),
    ("/files/*", True, (), True, "/files"),
    ("/:a", False, ("a",), False, "/"),
]


@pytest.mark.parametrize(("pattern", "add_id", "names", "has_tail", "prefix"), NAMES_TABLE)
def test_names_tail_prefix(
    pattern: str, add_id: bool, names: tuple[str, ...], has_tail: bool, prefix: str
) -> None:
    route = RoutePattern(pattern, add_id=add_id)
    assert (route.names, route.has_tail, route.prefix, route.path) == (
        names,
        has_tail,
        prefix,
        pattern,
    )


INVALID_PATTERNS: list[tuple[str, str]] = [
    ("/a/(:b)/:c", "cannot follow an optional"),
    ("/a/(:b)/c", "cannot follow an optional"),
    ("/a/*/b", "must be the last"),
    ("/*/*", "must be the last"),
    ("/a/:", "empty parameter name"),
    ("/a/(:)", "empty parameter name"),
    ("/a/:b/:b", "duplicate parameter"),
    ("/a/:b/(:b)", "duplicate parameter"),
    ("/a/:b{[}", "bad constraint"),
    ("/a/:b{(}", "bad constraint"),
    ("/a/:b{x", "unbalanced"),
    ("/a/:b}", "unbalanced"),
    ("/a/{x}", "invalid path section"),
    ("/a/(x)", "invalid path section"),
    ("/a/(:b", "invalid path section"),
    ("/a/(:b{x})", "invalid path section"),
    ("/a/b*", "invalid path section"),
    ("/a/:b-c", "invalid parameter name"),
    ("/a/:b c", "invalid parameter name"),
    ("/a/..", "dot segment"),
    ("/./a", "dot segment"),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID_PATTERNS)
def test_invalid_pattern(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoutePattern(pattern)


# (pattern, add_id, params, expected path)
BUILD_TABLE: list[tuple[str, bool, dict[str, object], str]] = [
    ("/", False, {}, "/"),
    ("/", True, {"id": 5}, "/5"),
    ("/users", True, {}, "/users"),
    ("/users", True, {"id": None}, "/users"),
    ("/users", True, {"id": ""}, "/users"),
    ("/users", True, {"id": 5}, "/users/5"),
    ("/users", True, {"id": "a b/c?d#e%"}, "/users/a%20b%2Fc%3Fd%23e%25"),
    ("/users", True, {"id": "x+y:@!"}, "/users/x+y:@!"),
    ("/users", True, {"id": "\u00e9"}, "/users/%C3%A9"),
    ("/users", True, {"id": 5, "page": 2}, "/users/5"),  # leftovers are ignored
    ("/users/(:id)/(:format)", False, {"format": "json"}, "/users"),  # stops at the gap
    ("/users/(:id)/(:format)", False, {"id": 1, "format": "json"}, "/users/1/json"),
    ("/users/:id/edit", False, {"id": 3}, "/users/3/edit"),
    ("/n/:id{[0-9]+}", False, {"id": 12}, "/n/12"),
    ("/f/*", False, {}, "/f"),
    ("/f/*", False, {"*": ""}, "/f"),
    ("/f/*", False, {"*": "/"}, "/f"),
    ("/f/*", False, {"*": "a/b c/%2F"}, "/f/a/b%20c/%2F"),
    ("/f/*", False, {"*": "/a/b/"}, "/f/a/b"),
    ("/f/*", False, {"*": ["a/b", "c d"]}, "/f/a%2Fb/c%20d"),
    ("/f/*", False, {"*": []}, "/f"),
    ("/caf\u00e9", False, {}, "/caf%C3%A9"),
]


@pytest.mark.parametrize(("pattern", "add_id", "params", "expected"), BUILD_TABLE)
def test_build(pattern: str, add_id: bool, params: dict[str, object], expected: str) -> None:
    assert RoutePattern(pattern, add_id=add_id).build(params) == expected


@pytest.mark.parametrize(
    ("pattern", "params"),
    [("/users/:id", {}), ("/users/:id", {"id": None}), ("/:a/:b", {"a": 1})],
)
def test_build_missing_required(pattern: str, params: dict[str, object]) -> None:
    with pytest.raises(KeyError):
        RoutePattern(pattern).build(params)


@pytest.mark.parametrize(
    ("pattern", "params"),
    [
        ("/users/:id", {"id": ""}),
        ("/users/:id", {"id": "."}),
        ("/users/(:id)", {"id": ".."}),
        ("/n/:id{[0-9]+}", {"id": "x"}),
        ("/f/*", {"*": "a/../b"}),
        ("/f/*", {"*": "a//b"}),
        ("/f/*", {"*": ["a", "."]}),
        ("/f/*", {"*": "%2e%2E"}),
    ],
)
def test_build_unrepresentable(pattern: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RoutePattern(pattern).build(params)


def test_build_bad_tail_type() -> None:
    with pytest.raises(TypeError):
        RoutePattern("/f/*").build({"*": 5})


# Values that survive a path: non-empty, not a dot segment, any other text at all.
_VALUES = st.text(min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_TAIL_SEGMENTS = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters="-._~!$&'()*+,;=:@"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))


def _canonical_tail(segments: list[str]) -> str:
    path = normalize_path("/" + "/".join(segments))
    assert path is not None
    return path.strip("/")


@settings(max_examples=150, deadline=None)
@given(
    a=_VALUES,
    b=st.none() | _VALUES,
    c=st.none() | _VALUES,
    tail=st.lists(_TAIL_SEGMENTS, max_size=3),
)
def test_build_match_round_trip(a: str, b: str | None, c: str | None, tail: list[str]) -> None:
    route = RoutePattern("/x/:a/(:b)/(:c)/*")
    params = {"a": a}
    if b is not None:
        params["b"] = b
        if c is not None:
            params["c"] = c
            if tail:
                params["*"] = _canonical_tail(tail)
    path = route.build(params)
    assert normalize_path(path) == path  # build produces canonical paths
    assert route.match(path) == params


@settings(max_examples=100, deadline=None)
@given(values=st.lists(_VALUES, min_size=1, max_size=3))
def test_tail_segments_round_trip(values: list[str]) -> None:
    route = RoutePattern("/f/*")
    found = route.match(route.build({"*": values}))
    assert found is not None
    assert tail_segments(found["*"]) == values


NORMALIZE_TABLE: list[tuple[str, str | None]] = [
    ("/", "/"),
    ("/users", "/users"),
    ("/users/", "/users/"),
    ("//users///5", "/users/5"),
    ("/a/./b", "/a/b"),
    ("/a/b/.", "/a/b/"),
    ("/a/b/..", "/a/"),
    ("/a/b/../c", "/a/c"),
    ("/a/../../b", None),
    ("/..", None),
    ("/../a", None),
    ("/a/..", "/"),
    ("/.", "/"),
    ("/a/%2e%2E/b", "/b"),  # encoded dot segments are dot segments
    ("/a/%2E", "/a/"),
    ("/%2e%2e", None),
    ("/a/..%2Fb", "/a/..%2Fb"),  # not a dot segment: one segment holding '../b'
    ("/.well-known/x", "/.well-known/x"),
    ("/a/.b/..c", "/a/.b/..c"),
    ("/a%2Fb", "/a%2Fb"),
    ("/a%2fb", "/a%2Fb"),
    ("/%41%7e", "/A~"),  # unreserved characters are decoded
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/caf\u00e9", "/caf%C3%A9"),
    ("/a b", "/a%20b"),
    ("/a%zz", "/a%25zz"),
    ("/a%", "/a%25"),
    ("/x+y:@!", "/x+y:@!"),
    ("", None),
    ("users", None),
    ("*", None),
    ("http://example.com/", None),
]


@pytest.mark.parametrize(("path", "expected"), NORMALIZE_TABLE)
def test_normalize_path(path: str, expected: str | None) -> None:
    assert normalize_path(path) == expected


@pytest.mark.parametrize(
    ("raw", "tail", "segments"),
    [
        ("a/b", "a/b", ["a", "b"]),
        ("a%2Fb/c", "a%2Fb/c", ["a/b", "c"]),
        ("%2e%2e%2Fetc", "..%2Fetc", ["../etc"]),
        ("..%2F..%2Fetc/passwd", "..%2F..%2Fetc/passwd", ["../../etc", "passwd"]),
    ],
)
def test_tail_keeps_encoded_slashes(raw: str, tail: str, segments: list[str]) -> None:
    # Traversal through a tail needs a real '/': '..%2F' stays inside one raw segment, and a
    # decoded segment holding '/' is visible as such to whoever maps segments onto files.
    path = normalize_path("/static/" + raw)
    assert path is not None
    found = RoutePattern("/static/*").match(path)
    assert found == {"*": tail}
    assert tail_segments(tail) == segments


@pytest.mark.parametrize(
    ("tail", "segments"),
    [("a/b", ["a", "b"]), ("a%2Fb/c%20d", ["a/b", "c d"]), ("", []), ("%2e%2e", [".."])],
)
def test_tail_segments(tail: str, segments: list[str]) -> None:
    assert tail_segments(tail) == segments


def test_match_is_stateless() -> None:
    route = RoutePattern("/users/(:id)")
    assert route.match("/users/1") == {"id": "1"}
    assert route.match("/users/2") == {"id": "2"}  # no state leaks between calls


def test_match_results_are_remembered_boundedly() -> None:
    """Matches are memoized per path (a dict lookup instead of a regex), with the same
    answers as a fresh pattern, and the memo never outgrows its bound however many
    distinct paths arrive."""
    from plezi.web import patterns as routing

    route = RoutePattern("/users/(:id)/(:name)")
    fresh = RoutePattern("/users/(:id)/(:name)")
    for _ in range(2):
        assert route.match("/users/1/caf%C3%A9") == {"id": "1", "name": "café"}
        assert route.match("/users/1") == {"id": "1"}
        assert route.match("/other/1") is None
    for n in range(3 * routing._MEMO_SIZE):
        path = f"/users/{n}/x" if n % 2 else f"/nope/{n}"
        assert route.match(path) == fresh.match(path)
        assert len(route._memo) <= routing._MEMO_SIZE
