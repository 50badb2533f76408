"""What the application answers with is data: :class:`Response` becomes a :class:`Reply`
(checked header pairs), and the shared error replies."""

from __future__ import annotations

import pytest

from plezi.http.response import Accept, Reply, Response, Upgrade, error_reply, unavailable


def test_a_response_becomes_checked_lower_case_pairs() -> None:
    response = Response(201)
    response.headers["X-Foo"] = "1"
    response.headers["Content-Length"] = "99"  # the server computes it
    response.headers["Connection"] = "keep-alive"  # and this
    response.cookies.append("a=b; Path=/")
    response.set_body("hi")
    reply = response.reply()
    assert type(reply) is Reply
    assert (reply.status, reply.body) == (201, b"hi")
    assert reply.headers == [
        ("x-foo", "1"),
        ("set-cookie", "a=b; Path=/"),
        ("content-type", "text/html; charset=utf-8"),
    ]


def test_no_default_type_without_a_body_or_with_one_set() -> None:
    assert Response(204).reply().headers == []
    response = Response()
    response.headers["Content-Type"] = "text/csv"
    response.body = b"a,b"
    assert response.reply().headers == [("content-type", "text/csv")]


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-a", "1\r\nx-b: 2"), ("x-a", "1\n"), ("x-a", "\0"), ("x a", "1"), ("x:a", "1"), ("", "1")],
)
def test_one_header_rule_for_every_reply(name: str, value: str) -> None:
    response = Response()
    response.headers[name] = value
    with pytest.raises(ValueError, match="invalid response header"):
        response.reply()
    cookie = Response()
    cookie.cookies.append(value if name == "x-a" else "a=b\r\n")
    with pytest.raises(ValueError, match="invalid response header"):
        cookie.reply()


def test_error_replies() -> None:
    reply = error_reply(405, "Method Not Allowed", [("allow", "GET")])
    assert (reply.status, reply.body) == (405, b"Method Not Allowed\n")
    assert list(reply.headers) == [("content-type", "text/plain; charset=utf-8"), ("allow", "GET")]
    down = unavailable()
    assert (down.status, down.body) == (503, b"Service Unavailable\n")


def test_upgrade_is_the_earlier_name_of_accept() -> None:
    assert Upgrade is Accept
    assert Accept(None, None, "", sse=True).kind == "sse"
    assert Accept(None, None, "k").kind == "websocket"
