"""405 Method Not Allowed, with ``allow``, when the path matched a route but no route answers the
request's verb there; 404 when nothing matched, or when a route that answers the verb declined.
Over real sockets, the exact bytes read by the test suite's own parser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rawhttp import RawHTTP

import plezi
from helpers import Running


class ReadOnly:
    def index(self) -> str:
        return "list"

    def show(self) -> str:
        return f"item {self.params['id']}"  # type: ignore[attr-defined]


class Writes:
    def create(self) -> str:
        return "created"

    def update(self) -> str:
        return "updated"


class Declines:
    def index(self) -> None:
        return None  # "not mine": the next route may answer, else 404

    def create(self) -> str:
        return "declines posted"


class Posts:
    def create(self) -> str:
        return "posted here"


@pytest.fixture
def running(serve: Callable[..., Running]) -> Running:
    app = plezi.App()
    app.route("/items", ReadOnly)
    app.route("/both", ReadOnly)
    app.route("/both", Writes)  # a later route answers what the first does not
    app.route("/writes", Writes)
    app.route("/maybe", Declines)
    app.route("/later", Declines)
    app.route("/later", Posts)
    return serve(app)


def test_a_verb_the_controller_does_not_answer_is_405_with_allow(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        for method, target in (("POST", "/items"), ("DELETE", "/items/5"), ("PUT", "/items/5")):
            r = conn.request(method, target, body=b"x=1")
            assert (r.status, r.header("allow"), r.body) == (
                405,
                "GET, HEAD",
                b"Method Not Allowed\n",
            ), (method, target)
        # the connection stays usable (a 405 is an ordinary reply)
        assert conn.request("GET", "/items/5").body == b"item 5"


def test_a_head_405_has_no_body(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        r = conn.request("HEAD", "/writes")
        assert (r.status, r.header("allow")) == (405, "POST, PUT, PATCH")
        assert r.header("content-length") == str(len(b"Method Not Allowed\n"))
        # nothing was sent after the head: the next reply starts right there
        assert conn.request("GET", "/items").body == b"list"


def test_allow_lists_what_every_matching_route_answers(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        assert conn.request("POST", "/both").body == b"created"  # the later route answers
        r = conn.request("DELETE", "/both/1")
        assert (r.status, r.header("allow")) == (405, "GET, HEAD, POST, PUT, PATCH")


def test_nothing_matched_is_still_404_without_allow(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        r = conn.request("POST", "/nowhere")
        assert (r.status, r.header("allow"), r.body) == (404, None, b"Not Found\n")


def test_a_route_that_answers_the_verb_and_declines_is_404(running: Running) -> None:
    with RawHTTP(running.port) as conn:
        r = conn.request("GET", "/maybe")  # index returned None
        assert (r.status, r.header("allow")) == (404, None)
        assert conn.request("POST", "/later").body == b"declines posted"


def test_method_override_is_judged_as_the_verb_it_names(running: Running) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with RawHTTP(running.port) as conn:
        r = conn.request("POST", "/items/5", form, b"_method=DELETE")
        assert (r.status, r.header("allow")) == (405, "GET, HEAD")
        assert conn.request("POST", "/items/5", form, b"_method=GET").body == b"item 5"
