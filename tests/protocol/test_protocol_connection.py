"""WebSocketSession, byte for byte: the close handshake both ways, failing with each code, data
after a close, pongs, the close timeout."""

from __future__ import annotations

import pytest

from plezi.protocol import (
    CLOSED,
    CLOSING,
    MAX_CONTROL_FRAMES,
    MAX_EMPTY_FRAGMENTS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    CloseCode,
    MessageSink,
    WebSocketSession,
    close_frame,
    encode_frame,
    pong_frame,
    text_frame,
)

MASK = bytes.fromhex("37fa213d")


def client(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked)."""
    return encode_frame(opcode, payload, fin=fin, mask=MASK, rsv=rsv)


def client_close(code: int | None = None, reason: bytes = b"") -> bytes:
    payload = b"" if code is None else code.to_bytes(2, "big") + reason
    return client(OP_CLOSE, payload)


def session(**kwargs: object) -> WebSocketSession:
    return WebSocketSession(**kwargs)  # type: ignore[arg-type]


# -- messages -------------------------------------------------------------------------------


def test_messages_in_and_nothing_to_send() -> None:
    ws = session()
    ws.receive_data(client(OP_TEXT, "héllo".encode()) + client(OP_BINARY, b"\x00\xff"))
    assert ws.events_received() == ["héllo", b"\x00\xff"]
    assert ws.events_received() == []
    assert ws.data_to_send() == b""
    assert ws.state == OPEN and ws.close_by is None


def test_ping_is_answered_with_its_payload_and_pong_is_not() -> None:
    ws = session()
    ws.receive_data(client(OP_PING, b"abc") + client(OP_PONG, b"x"))
    assert ws.data_to_send() == pong_frame(b"abc")


def test_queued_frames_leave_in_order() -> None:
    ws = session()
    ws.queue_frame(text_frame("a"))
    ws.receive_data(client(OP_PING))
    ws.queue_frame(text_frame("b"))
    assert ws.data_to_send() == text_frame("a") + pong_frame() + text_frame("b")


# -- we close first -------------------------------------------------------------------------


def test_local_close_then_the_peers_answer_completes_the_handshake() -> None:
    ws = session()
    assert ws.send_close(CloseCode.GOING_AWAY, "bye", now=5.0)
    assert ws.data_to_send() == close_frame(1001, "bye")
    assert ws.state == CLOSING and ws.close_by == "local"
    assert ws.close_sent == (1001, "bye") and ws.close_rcvd is None
    assert not ws.close_expected  # wait for the peer's answer
    # Messages the peer sent before it saw our close are still delivered.
    ws.receive_data(client(OP_TEXT, b"late") + client_close(1001))
    assert ws.events_received() == ["late"]
    assert ws.close_rcvd == (1001, "")
    assert ws.close_expected
    assert ws.close_by == "local"
    assert ws.data_to_send() == b""  # no second close frame


def test_nothing_is_sent_after_our_close() -> None:
    ws = session()
    ws.send_close()
    ws.data_to_send()
    ws.queue_frame(text_frame("after"))
    ws.receive_data(client(OP_PING, b"p"))
    assert ws.data_to_send() == b""
    assert not ws.send_close(CloseCode.NORMAL)
    assert ws.data_to_send() == b""


def test_close_with_a_code_that_may_not_be_sent_raises_and_stays_open() -> None:
    ws = session()
    with pytest.raises(ValueError):
        ws.send_close(CloseCode.NO_STATUS)
    assert ws.state == OPEN and ws.data_to_send() == b""


# -- the peer closes first ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "rcvd", "answer"),
    [
        (client_close(1000, b"done"), (1000, "done"), close_frame(1000)),
        (client_close(4321), (4321, ""), close_frame(4321)),
        (client_close(), (None, ""), b"\x88\x00"),
    ],
)
def test_peer_close_is_answered_with_its_code(
    frame: bytes, rcvd: tuple[int | None, str], answer: bytes
) -> None:
    ws = session()
    ws.receive_data(frame)
    assert ws.data_to_send() == answer
    assert ws.close_rcvd == rcvd
    assert ws.close_sent == (rcvd[0], "")
    assert ws.state == CLOSING and ws.close_by == "remote"
    assert ws.close_expected


def test_data_after_the_peers_close_is_ignored() -> None:
    ws = session()
    ws.receive_data(client_close(1000) + client(OP_TEXT, b"ignored") + client(OP_PING))
    ws.receive_data(client(OP_TEXT, b"also ignored"))
    assert ws.events_received() == []
    assert ws.data_to_send() == close_frame(1000)  # and no pong


# -- failing the connection -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encode_frame(OP_TEXT, b"unmasked"), CloseCode.PROTOCOL_ERROR),
        (client(OP_TEXT, b"x", rsv=4), CloseCode.PROTOCOL_ERROR),
        (client(3), CloseCode.PROTOCOL_ERROR),
        (client(OP_PING, fin=False), CloseCode.PROTOCOL_ERROR),
        (client(OP_CONT, b"x"), CloseCode.PROTOCOL_ERROR),
        (client(OP_CLOSE, b"\x03"), CloseCode.PROTOCOL_ERROR),
        (client_close(1005), CloseCode.PROTOCOL_ERROR),
        (client(OP_TEXT, b"\xff"), CloseCode.INVALID_DATA),
        (client_close(1000, b"\xff"), CloseCode.INVALID_DATA),
        (client(OP_TEXT, b"x" * 101), CloseCode.MESSAGE_TOO_BIG),
        (
            client(OP_TEXT, b"a", fin=False)
            + client(OP_CONT, fin=False) * (MAX_EMPTY_FRAGMENTS + 1),
            CloseCode.POLICY_VIOLATION,
        ),
        (client(OP_PING) * (MAX_CONTROL_FRAMES + 1), CloseCode.POLICY_VIOLATION),
    ],
    ids=[
        "unmasked",
        "rsv",
        "opcode",
        "fragmented-ping",
        "lone-continuation",
        "close-1-byte",
        "close-1005",
        "utf8",
        "utf8-reason",
        "too-big",
        "empty-fragments",
        "ping-flood",
    ],
)
def test_bad_input_fails_the_connection_with_its_code(data: bytes, code: int) -> None:
    ws = session(max_message_size=100)
    ws.receive_data(data)
    out = ws.data_to_send()
    # The only thing after the pongs (the flood) is our close frame with the code.
    assert out.endswith(close_frame(code))
    assert out.count(b"\x88") == 1
    assert ws.state == CLOSING and ws.close_by == "error"
    assert ws.close_sent == (code, "") and ws.close_rcvd is None
    assert ws.close_expected
    ws.receive_data(client(OP_TEXT, b"after"))
    assert ws.events_received() == [] and ws.data_to_send() == b""


SENDABLE = [code for code in CloseCode if code not in (1005, 1006, 1015)] + [3000, 4999]


@pytest.mark.parametrize("code", SENDABLE)
def test_fail_sends_each_code_and_parses_nothing_more(code: int) -> None:
    ws = session()
    ws.fail(code, "policy")
    assert ws.data_to_send() == close_frame(code)
    assert ws.close_by == "error" and ws.close_expected
    ws.fail(CloseCode.INTERNAL_ERROR, "again")  # once failed, failing again does nothing
    ws.receive_data(client(OP_TEXT, b"x") + client_close(1000))
    assert ws.data_to_send() == b"" and ws.events_received() == []
    assert ws.close_rcvd is None


def test_failing_after_our_close_sends_no_second_close_frame() -> None:
    ws = session()
    ws.send_close(CloseCode.NORMAL)
    ws.data_to_send()
    ws.receive_data(client(OP_TEXT, b"\xff"))
    assert ws.data_to_send() == b""
    assert ws.close_by == "local" and ws.state == CLOSING


# -- the close timeout ----------------------------------------------------------------------


def test_close_timeout_counts_from_when_closing_began() -> None:
    ws = session()
    assert not ws.close_expired(1000.0, 1.0)  # open: nothing to time
    ws.send_close(now=10.0)
    assert not ws.close_expired(10.5, 1.0)
    assert not ws.close_expired(11.0, 1.0)
    assert ws.close_expired(11.5, 1.0)
    ws.connection_closed()
    assert ws.state == CLOSED and not ws.close_expired(100.0, 1.0)


class Deferring(WebSocketSession):
    """A shell that answers the peer later (as the server does, after pending callbacks)."""

    __slots__ = ("codes",)

    def __init__(self) -> None:
        super().__init__()
        self.codes: list[int | None] = []

    def peer_closed(self, code: int | None) -> None:
        self.codes.append(code)

    def protocol_error(self, code: int, reason: str) -> None:
        self.codes.append(code)


def test_a_deferred_answer_is_sent_and_timed_when_given() -> None:
    ws = Deferring()
    ws.receive_data(client_close(1001) + client(OP_TEXT, b"ignored"))
    assert ws.codes == [1001] and ws.close_rcvd == (1001, "") and ws.close_by == "remote"
    assert ws.data_to_send() == b"" and ws.state == OPEN  # not answered yet
    ws.answer_close(1001, now=3.0)
    assert ws.data_to_send() == close_frame(1001)
    assert ws.state == CLOSING
    assert not ws.close_expired(3.5, 1.0)
    assert ws.close_expired(4.5, 1.0)
    ws.answer_close(1001, now=9.0)  # answered once only; the stamp stays
    assert ws.data_to_send() == b"" and ws.close_expired(4.5, 1.0)


def test_a_deferred_failure_is_sent_with_its_code() -> None:
    ws = Deferring()
    ws.receive_data(client(OP_TEXT, b"\xff"))
    assert ws.codes == [CloseCode.INVALID_DATA] and ws.close_by == "error"
    ws.answer_close(CloseCode.INVALID_DATA, now=1.0)
    assert ws.data_to_send() == close_frame(1007)


def test_connection_closed_drops_what_was_not_sent() -> None:
    ws = session()
    ws.queue_frame(text_frame("never sent"))
    ws.connection_closed()
    assert ws.data_to_send() == b""
    ws.queue_frame(text_frame("nor this"))
    assert ws.data_to_send() == b""


# -- frames this side built, as messages (the ASGI shell's pub/sub path) ------------------------


def test_unframe_returns_each_frames_opcode_and_payload() -> None:
    from plezi.protocol import binary_frame, unframe

    data = (
        text_frame("é")
        + binary_frame(b"x" * 200)
        + binary_frame(b"y" * 70000)
        + close_frame(1000, "r")
        + pong_frame()
    )
    assert unframe(data) == [
        (OP_TEXT, "é".encode()),
        (OP_BINARY, b"x" * 200),
        (OP_BINARY, b"y" * 70000),
        (OP_CLOSE, b"\x03\xe8r"),
        (OP_PONG, b""),
    ]


class Collecting(WebSocketSession):
    """A session subclass (interpreted, in either mode) that takes the messages itself."""

    __slots__ = ("got",)

    def __init__(self) -> None:
        super().__init__()
        self.got: list[str | bytes] = []

    def on_ws_message(self, data: str | bytes) -> None:
        self.got.append(data)


def test_a_subclass_overriding_on_ws_message_gets_every_message() -> None:
    """The reader hands messages to a session by a direct call (``MessageSink``); compiled, a
    Python subclass's override must still be the method called, on every path of the reader:
    the single-frame fast path, several frames in one read, and a fragmented message."""
    ws = Collecting()
    assert isinstance(ws, MessageSink)
    ws.receive_data(client(OP_TEXT, b"one"))
    ws.receive_data(client(OP_BINARY, b"two") + client(OP_TEXT, b"three"))
    ws.receive_data(client(OP_TEXT, b"fo", fin=False) + client(OP_CONT, b"ur"))
    assert ws.got == ["one", b"two", "three", "four"]
    assert ws.events_received() == []  # (the base class's delivery did not run)
