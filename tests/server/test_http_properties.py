"""Property tests of the HTTP request path: random requests, random splits, hostile input.

Two drivers for the same properties:

* the real :class:`~plezi.server.http.HttpProtocol` of a real :class:`~plezi.server.server.Server`,
  fed through ``data_received`` exactly at the generated split points (no event loop is needed
  for sync controllers), with a recording transport: fast, and the splits are exact;
* a real server on a socket (port 0, in a thread), sent the same streams in pieces with
  ``TCP_NODELAY`` (the kernel may merge pieces, never reorder them).

Properties: pipelined well-formed requests get exactly the answers a model predicts, whatever
the split; any split of any input (mutated requests, garbage) gives the same bytes back as the
unsplit input; hostile input never raises out of the protocol, never gets a 500, never a reply
after the connection was closed, and every refusal closes the connection; the head and body
limits hold exactly where they are documented to.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rawhttp import RawHTTP

import plezi
from helpers import UNIT, Running, start_server
from plezi.config import Limits, ServerConfig
from plezi.server.http import HttpProtocol
from plezi.server.server import Server

# -- the application and its model -----------------------------------------------------------


class Echo:
    """Answers every RESTful action with what it received."""

    def _echo(self, action: str) -> dict[str, Any]:
        request = self.request  # type: ignore[attr-defined]
        params = self.params  # type: ignore[attr-defined]
        return {
            "a": action,
            "m": request.method,
            "id": params.get("id"),
            "q": {k: v for k, v in params.items() if k.startswith("q")},
            "h": {k: v for k, v in request.headers.items() if k.startswith("x-p-")},
            "n": len(request.body),
            "sha": hashlib.sha256(request.body).hexdigest(),
        }

    def index(self) -> dict[str, Any]:
        return self._echo("index")

    def show(self) -> dict[str, Any]:
        return self._echo("show")

    def create(self) -> dict[str, Any]:
        return self._echo("create")

    def update(self) -> dict[str, Any]:
        return self._echo("update")

    def delete(self) -> dict[str, Any]:
        return self._echo("delete")


def make_app() -> plezi.App:
    app = plezi.App()
    app.route("/echo", Echo)
    return app


@dataclass
class Req:
    """One generated request and what the model says about it."""

    method: str
    id: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    chunks: list[int] | None  # None: Content-Length framing
    extensions: bool = False
    close: bool = False

    @property
    def action(self) -> str:
        if self.method in ("GET", "HEAD"):
            return "index" if self.id is None else "show"
        if self.method == "POST" or (self.method in ("PUT", "PATCH") and self.id is None):
            return "create"
        return "update" if self.method in ("PUT", "PATCH") else "delete"

    def target(self) -> str:
        path = "/echo" if self.id is None else f"/echo/{self.id}"
        if self.query:
            path += "?" + "&".join(f"{k}={v}" for k, v in self.query.items())
        return path

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target()} HTTP/1.1", "Host: test.example:8080"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.close:
            lines.append("Connection: close")
        if self.chunks is None:
            if self.body or self.method in ("POST", "PUT", "PATCH"):
                lines.append(f"Content-Length: {len(self.body)}")
            return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + self.body
        lines.append("Transfer-Encoding: chunked")
        out = ["\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"]
        pos = 0
        for size in [*self.chunks, len(self.body)]:
            piece = self.body[pos : pos + size]
            if not piece:
                continue
            ext = b";name=value" if self.extensions else b""
            out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
            pos += len(piece)
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def expected(self) -> dict[str, Any]:
        return {
            "a": self.action,
            "m": self.method,
            "id": self.id,
            "q": self.query,
            "h": {k.lower(): v for k, v in self.headers.items()},
            "n": len(self.body),
            "sha": hashlib.sha256(self.body).hexdigest(),
        }


TOKEN = string.ascii_lowercase + string.digits
#: Header value characters: visible ASCII, inner spaces and tabs, and obs-text (RFC 9110 5.5).
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.characters(
    min_codepoint=0x80, max_codepoint=0xFF
)


@st.composite
def header_values(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.text(VALUE_CHARS, min_size=1, max_size=12), min_size=1, max_size=3))
    return draw(st.sampled_from([" ", "\t", "  "])).join(words)


@st.composite
def requests(draw: st.DrawFn, *, close: bool = False) -> Req:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]))
    id_ = draw(st.none() | st.text(TOKEN, min_size=1, max_size=6).map(lambda s: "i" + s))
    query = draw(
        st.dictionaries(
            st.text(TOKEN, min_size=1, max_size=5).map("q".__add__),
            st.text(TOKEN, max_size=8),
            max_size=3,
        )
    )
    names = draw(st.lists(st.text(TOKEN + "-", min_size=1, max_size=8), max_size=4, unique=True))
    headers = {f"X-P-{name}": draw(header_values()) for name in names}
    has_body = method not in ("GET", "HEAD") and draw(st.booleans())
    body = (
        draw(st.binary(max_size=600) | st.binary(min_size=1000, max_size=3000)) if has_body else b""
    )
    chunked = has_body and draw(st.booleans())
    chunks = draw(st.lists(st.integers(1, 300), max_size=8)) if chunked else None
    extensions = chunked and draw(st.booleans())
    return Req(method, id_, query, headers, body, chunks, extensions, close)


@st.composite
def pipelines(draw: st.DrawFn) -> list[Req]:
    reqs = draw(st.lists(requests(), min_size=1, max_size=4))
    if draw(st.booleans()):
        reqs.append(draw(requests(close=True)))
    return reqs


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=10).map(sorted)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- parsing what the server sent (independently of plezi) -----------------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*")


def parse_responses(data: bytes, methods: Iterator[str] | None) -> tuple[list[Resp], bytes]:
    """Split ``data`` into responses; returns them and any trailing bytes that are not one.

    ``methods`` are those of the requests answered, for the bodiless replies to HEAD; ``None``
    when unknown: a reply followed by nothing or by another status line then counts as one.
    """
    out: list[Resp] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        assert m, f"malformed status line {lines[0]!r}"
        resp = Resp(int(m.group(1)))
        for line in lines[1:]:
            name, colon, value = line.decode("latin-1").partition(":")
            assert colon and name == name.strip(), f"malformed response header {line!r}"
            assert name.lower() not in resp.headers, f"duplicate response header {name!r}"
            resp.headers[name.lower()] = value.strip()
        if resp.status == 100:
            out.append(resp)
            data = rest
            continue
        length = int(resp.headers["content-length"])
        if methods is None:
            if not rest or rest.startswith(b"HTTP/1.1 "):
                length = 0
        elif next(methods, "GET") == "HEAD":
            length = 0
        if len(rest) < length:
            break
        resp.body, data = rest[:length], rest[length:]
        out.append(resp)
    return out, data


_DATE = re.compile(rb"\r\ndate: [^\r]*")


def normalize(data: bytes) -> bytes:
    """The bytes a server sent, with the ``Date`` header blanked (it changes every second)."""
    return _DATE.sub(b"\r\ndate: -", data)


# -- driving HttpProtocol directly -----------------------------------------------------------


class RecordingTransport:
    """Just what HttpProtocol uses of a transport; remembers what it was told."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.written_after_close = False
        self.paused = False

    def write(self, data: bytes) -> None:
        if self.closed:
            self.written_after_close = True
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # (this transport takes everything at once: it never calls pause_writing)


class ErrorLog(logging.Handler):
    """Collects ERROR records of the ``plezi`` logger (a 500 or a crash would log one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("plezi")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


SMALL = Limits(max_header_size=1024, max_body_size=2048)


def drive(data: bytes, cuts: list[int], limits: Limits = SMALL) -> RecordingTransport:
    """Feed ``data`` to a fresh HttpProtocol in the pieces ``cuts`` makes."""
    server = Server(APP, ServerConfig(port=0, bind="127.0.0.1", limits=limits))
    proto = HttpProtocol(server)
    transport = RecordingTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for piece in pieces(data, cuts):
        if transport.closed:
            break  # a real transport stops reading once closed
        proto.data_received(piece)
    assert not transport.written_after_close
    return transport


APP = make_app()
OK_STATUSES = {100, 200, 404}
REFUSALS = {400, 408, 413, 414, 431, 501, 505}


def check_answers(reqs: list[Req], out: bytes) -> None:
    """The answers are the model's, in order, and nothing else."""
    responses, rest = parse_responses(out, iter(r.method for r in reqs))
    assert rest == b""
    assert len(responses) == len(reqs)
    for req, resp in zip(reqs, responses, strict=True):
        assert resp.status == 200, (req, resp)
        if req.method == "HEAD":
            assert resp.body == b""
        else:
            assert orjson.loads(resp.body) == req.expected()
        assert (resp.headers.get("connection") == "close") == req.close


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.data())
def test_pipelined_requests_split_anywhere_get_the_model_answers(
    errors: ErrorLog, reqs: list[Req], data: st.DataObject
) -> None:
    stream = b"".join(r.encode() for r in reqs)
    limits = Limits(max_header_size=8192, max_body_size=4096)
    whole = drive(stream, [], limits)
    check_answers(reqs, bytes(whole.out))
    split = drive(stream, data.draw(cuts_for(stream)), limits)
    assert normalize(split.out) == normalize(whole.out)
    assert split.closed == whole.closed == reqs[-1].close
    assert not errors.records


# -- hostile input ---------------------------------------------------------------------------

INTERESTING = [
    b"\r",
    b"\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\x7f",
    b"\xff",
    b"0",
    b"f",
    b"-",
    b"/",
    b"%",
    b".",
    b"\r\n",
    b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Host: a\r\n",
    b"HTTP/1.0",
    b"\x80",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid pipeline with a few bytes replaced, inserted, deleted or repeated."""
    data = bytearray(
        b"".join(r.encode() for r in draw(st.lists(requests(), min_size=1, max_size=3)))
    )
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete", "repeat"]))
        if op == "replace" and i < len(data):
            data[i : i + 1] = draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[i:i] = data[i:j]
    return bytes(data)


hostile = st.one_of(
    mutated(),
    st.binary(max_size=300),
    st.lists(st.sampled_from(INTERESTING) | st.binary(max_size=6), max_size=40).map(b"".join),
    st.binary(max_size=200).map(lambda b: b"GET /echo HTTP/1.1\r\nHost: a\r\n" + b),
    st.binary(max_size=200).map(
        lambda b: b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b
    ),
)


def check_hostile(out: bytes, closed: bool) -> None:
    """Whatever came in: well-formed replies, never a 500, every refusal closes."""
    responses, rest = parse_responses(out, None)
    assert rest == b"", f"not a response: {rest[:200]!r}"
    for i, resp in enumerate(responses):
        assert resp.status in OK_STATUSES | REFUSALS, resp
        if resp.status in REFUSALS:
            assert resp.headers.get("connection") == "close"
            assert i == len(responses) - 1, "a reply after a refusal"
            assert closed
        assert b"Traceback" not in resp.body and b"Error:" not in resp.body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, st.data())
def test_hostile_input_split_anywhere(errors: ErrorLog, data: bytes, draw: st.DataObject) -> None:
    whole = drive(data, [])
    check_hostile(bytes(whole.out), whole.closed)
    split = drive(data, draw.draw(cuts_for(data)))
    assert normalize(split.out) == normalize(whole.out)
    assert split.closed == whole.closed
    assert not errors.records, [r.getMessage() for r in errors.records]


# -- limits, exactly where they are documented ----------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 1400), st.sampled_from(["GET", "DELETE", "OPTIONS"]), st.data())
def test_head_limit(size: int, method: str, data: st.DataObject) -> None:
    """A head of at most ``max_header_size`` bytes is never refused for its size; one longer by
    more than its method's letters past the shortest method's three always is (431), however it
    is split (every other byte of the request line and the empty line are counted too)."""
    head = f"{method} /echo HTTP/1.1\r\nHost: a\r\nX-P-pad: \r\n\r\n".encode()
    assume(size >= len(head))
    request = head.replace(b"X-P-pad: ", b"X-P-pad: " + b"v" * (size - len(head)))
    assert len(request) == size
    out = drive(request, data.draw(cuts_for(request)))
    responses, _rest = parse_responses(bytes(out.out), iter([method]))
    status = responses[0].status
    if size <= SMALL.max_header_size:
        assert status != 431
    elif size > SMALL.max_header_size + len(method) - 3:
        assert status == 431


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 4000), st.booleans(), st.lists(st.integers(1, 700), max_size=8), st.data())
def test_body_limit(size: int, chunked: bool, chunks: list[int], data: st.DataObject) -> None:
    """A body of at most ``max_body_size`` bytes is served; a larger one is refused with 413,
    with Content-Length or chunked, however it is split."""
    req = Req(
        "POST",
        None,
        {},
        {},
        bytes(range(256)) * (size // 256) + b"x" * (size % 256),
        chunks if chunked else None,
    )
    stream = req.encode()
    out = drive(stream, data.draw(cuts_for(stream)))
    responses, _rest = parse_responses(bytes(out.out), iter(["POST"]))
    if size <= SMALL.max_body_size:
        assert responses[0].status == 200
        assert orjson.loads(responses[0].body) == req.expected()
    else:
        assert responses[0].status == 413
        assert out.closed


# -- the same, through a real server on a socket ---------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    r = start_server(make_app(), max_header_size=8192, max_body_size=4096)
    yield r
    r.stop()
    assert not r.errors


def exchange(port: int, chunks: list[bytes], methods: list[str] | None) -> list[Resp]:
    """Send ``chunks`` (one ``sendall`` each), half-close, and read the answers until the
    server closes too (it does at end of input, after answering what it read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * UNIT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET, ENOTCONN: the server refused and closed
            pass  # (read its answer)
        data = b""
        while True:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                more = b""
            if not more:
                return parse_responses(data, None if methods is None else iter(methods))[0]
            data += more


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines(), st.data())
def test_real_server_pipelines_split_anywhere(
    running: Running, errors: ErrorLog, reqs: list[Req], data: st.DataObject
) -> None:
    stream = b"".join(r.encode() for r in reqs)
    chunks = pieces(stream, data.draw(cuts_for(stream)))
    responses = exchange(running.port, chunks, [r.method for r in reqs])
    assert len(responses) == len(reqs)
    for req, resp in zip(reqs, responses, strict=True):
        assert resp.status == 200
        if req.method != "HEAD":
            assert orjson.loads(resp.body) == req.expected()
    assert not errors.records


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile, st.data())
def test_real_server_survives_hostile_input(
    running: Running, errors: ErrorLog, data: bytes, draw: st.DataObject
) -> None:
    chunks = pieces(data, draw.draw(cuts_for(data)))
    responses = exchange(running.port, chunks, None)
    for resp in responses:
        assert resp.status in OK_STATUSES | REFUSALS
    # ... and it still serves a fresh client.
    with RawHTTP(running.port) as conn:
        assert conn.request("GET", "/echo").status == 200
    assert not errors.records
