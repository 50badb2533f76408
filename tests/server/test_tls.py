"""TLS on the native server over real sockets: HTTPS (curl and Python's ``ssl``), WebSocket over
``wss://`` (the ``websockets`` client), an event stream, ALPN, the handshake timeout against
clients that stall in it (slowloris), and the start errors of bad certificate files.

The certificate is made by ``--tls-self-signed``'s own code (the ``tls_files`` fixture); the
clients trust exactly that certificate, never "any certificate".
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rawhttp import RawHTTP
from wsclient import Echo, connect

import plezi
from helpers import UNIT, Running, run_script
from plezi.launch.devcert import make_certificate
from sseclient import EventStream

#: The first bytes of a TLS ClientHello (record header, handshake header, version): a client that
#: starts a handshake and never finishes it.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def client_context(cert: str) -> ssl.SSLContext:
    """A client context that trusts ``cert`` and nothing else."""
    return ssl.create_default_context(cafile=cert)


class Home:
    def index(self) -> str:
        return f"hello over {self.request.scheme}"  # type: ignore[attr-defined]


class Feed:
    def index(self) -> str:
        return "plain"

    def on_sse(self) -> None:
        self.write("first event")  # type: ignore[attr-defined]


def tls_app() -> plezi.App:
    app = plezi.App()
    app.route("/", Home)
    app.route("/ws", Echo)
    app.route("/feed", Feed)
    return app


@pytest.fixture
def tls_server(serve: Callable[..., Running], tls_files: tuple[str, str]) -> Callable[..., Running]:
    cert, key = tls_files
    return lambda **limits: serve(tls_app(), tls_cert=cert, tls_key=key, **limits)


def test_https_with_curl(tls_server: Callable[..., Running], tls_files: tuple[str, str]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = tls_server()
    out = subprocess.run(
        ["curl", "-sS", "--cacert", tls_files[0], "-w", "\n%{http_version}", server.url + "/"],
        capture_output=True,
        text=True,
        timeout=10 * UNIT,
        check=True,
    )
    assert out.stdout.splitlines() == ["hello over https", "1.1"]


def test_alpn_is_http11_and_plain_http_is_not_answered(
    tls_server: Callable[..., Running], tls_files: tuple[str, str]
) -> None:
    server = tls_server()
    ctx = client_context(tls_files[0])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5 * UNIT)
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # A plain HTTP request to the TLS port gets no HTTP answer (the TLS layer refuses it).
    with RawHTTP(server.port) as plain:
        plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"HTTP/1.1" not in plain.rest_until_closed(10 * UNIT)


def test_httpx_keep_alive_over_tls(
    tls_server: Callable[..., Running], tls_files: tuple[str, str]
) -> None:
    server = tls_server()
    with httpx.Client(verify=client_context(tls_files[0]), trust_env=False) as client:
        for _ in range(3):
            reply = client.get(server.url + "/", timeout=5 * UNIT)
            assert reply.text == "hello over https"
    assert server.call(lambda: len(server.server.connections)) <= 1


def test_websocket_over_wss(tls_server: Callable[..., Running], tls_files: tuple[str, str]) -> None:
    server = tls_server()
    with connect(server.ws_url + "/ws", ssl=client_context(tls_files[0])) as ws:
        ws.send("over TLS")
        assert ws.recv(timeout=5 * UNIT) == "over TLS"
        big = bytes(range(256)) * 2000  # several TLS records each way
        ws.send(big)
        assert ws.recv(timeout=5 * UNIT) == big


def test_wss_refused_by_a_client_that_does_not_trust_the_certificate(
    tls_server: Callable[..., Running], tmp_path: Path
) -> None:
    server = tls_server()
    other, _key = make_certificate(str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server.ws_url + "/ws", ssl=client_context(other))


def test_event_stream_over_tls(
    tls_server: Callable[..., Running], tls_files: tuple[str, str]
) -> None:
    server = tls_server()
    stream = EventStream(server.port, "/feed", tls=client_context(tls_files[0]))
    try:
        assert stream.first().data == "first event"
    finally:
        stream.close()


def test_handshake_timeout_cuts_stalled_clients_and_others_are_served(
    tls_server: Callable[..., Running], tls_files: tuple[str, str]
) -> None:
    """Slowloris on TLS: one client opens TCP and says nothing, another sends half a
    ClientHello. Both are cut once the handshake timeout (``header_timeout``) passes, never
    before, and a real client is served meanwhile."""
    timeout = 1.5 * UNIT
    server = tls_server(header_timeout=timeout)
    started = time.monotonic()
    silent, partial = RawHTTP(server.port), RawHTTP(server.port)
    try:
        partial.send(PARTIAL_HELLO)
        with httpx.Client(verify=client_context(tls_files[0]), trust_env=False) as client:
            assert client.get(server.url + "/", timeout=5 * UNIT).text == "hello over https"
        for stalled in (silent, partial):
            assert stalled.closed_within(timeout + 10 * UNIT), "a stalled handshake stayed open"
        assert time.monotonic() - started >= timeout * 0.9
        assert silent.buf == b""
    finally:
        silent.close()
        partial.close()


def test_many_stalled_handshakes_do_not_stop_the_server(
    tls_server: Callable[..., Running], tls_files: tuple[str, str]
) -> None:
    timeout = 1.0 * UNIT
    server = tls_server(header_timeout=timeout)
    stalled = [RawHTTP(server.port) for _ in range(50)]
    try:
        for conn in stalled[::2]:
            conn.send(PARTIAL_HELLO)
        replies: list[str] = []

        def fetch() -> None:
            with httpx.Client(verify=client_context(tls_files[0]), trust_env=False) as client:
                replies.append(client.get(server.url + "/", timeout=5 * UNIT).text)

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15 * UNIT)
        assert replies == ["hello over https"] * 4
        for conn in stalled:
            assert conn.closed_within(timeout + 10 * UNIT)
    finally:
        for conn in stalled:
            conn.close()


# -- start errors: a clear message naming the file, exit status 1 ---------------------------------

APP = "import plezi\nplezi.route('/', type('Home', (), {'index': lambda self: 'hi'}))\n"


def start_error(tmp_path: Path, *flags: str) -> tuple[int, str]:
    done = run_script(tmp_path, APP, "--port", "0", "--bind", "127.0.0.1", *flags)
    return done.returncode, done.stderr


def test_missing_certificate_file_is_a_start_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    code, err = start_error(tmp_path, "--tls-cert", missing, "--tls-key", missing)
    assert code == 1
    assert f"TLS certificate {missing}: no such file" in err
    assert "Traceback" not in err


def test_missing_key_file_is_a_start_error(tmp_path: Path, tls_files: tuple[str, str]) -> None:
    missing = str(tmp_path / "key.pem")
    code, err = start_error(tmp_path, "--tls-cert", tls_files[0], "--tls-key", missing)
    assert code == 1
    assert f"TLS key {missing}: no such file" in err


def test_key_of_another_certificate_is_a_start_error(
    tmp_path: Path, tls_files: tuple[str, str]
) -> None:
    (tmp_path / "other").mkdir()
    _cert, other_key = make_certificate(str(tmp_path / "other"))
    code, err = start_error(tmp_path, "--tls-cert", tls_files[0], "--tls-key", other_key)
    assert code == 1
    assert f"TLS key {other_key} does not match the certificate {tls_files[0]}" in err


def test_files_that_are_not_pem_are_start_errors(
    tmp_path: Path, tls_files: tuple[str, str]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    code, err = start_error(tmp_path, "--tls-cert", str(junk), "--tls-key", tls_files[1])
    assert code == 1
    assert f"TLS certificate {junk}: not a PEM certificate" in err
    code, err = start_error(tmp_path, "--tls-cert", tls_files[0], "--tls-key", str(junk))
    assert code == 1
    assert f"TLS key {junk}: not a PEM private key" in err


def test_encrypted_key_is_a_start_error_not_a_prompt(
    tmp_path: Path, tls_files: tuple[str, str]
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(tls_files[1]).read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    code, err = start_error(tmp_path, "--tls-cert", tls_files[0], "--tls-key", str(locked))
    assert code == 1
    assert f"TLS key {locked}: the key is encrypted" in err


def test_key_without_certificate_is_a_flag_error(tmp_path: Path) -> None:
    code, err = start_error(tmp_path, "--tls-key", "key.pem")
    assert code == 2
    assert "--tls-key needs --tls-cert" in err


def test_key_in_the_certificate_file(
    serve: Callable[..., Running], tls_files: tuple[str, str], tmp_path: Path
) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(Path(tls_files[0]).read_bytes() + Path(tls_files[1]).read_bytes())
    server = serve(tls_app(), tls_cert=str(both))
    reply = httpx.get(
        server.url + "/", verify=client_context(tls_files[0]), trust_env=False, timeout=5 * UNIT
    )
    assert reply.text == "hello over https"


def test_certificate_alone_without_its_key_is_a_start_error(
    tmp_path: Path, tls_files: tuple[str, str]
) -> None:
    code, err = start_error(tmp_path, "--tls-cert", tls_files[0])
    assert code == 1
    assert f"TLS certificate {tls_files[0]}: no certificate and private key in it" in err
