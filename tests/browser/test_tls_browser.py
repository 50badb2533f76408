"""Headless Chromium over TLS: a page served over ``https://`` opens its WebSocket over
``wss://`` with the browser client, emits and gets an ack.

The browser trusts exactly the test's certificate: Chromium's
``--ignore-certificate-errors-spki-list`` pins its public key (the SHA-256 of its
SubjectPublicKeyInfo); the same browser without the pin refuses the page.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from browser.conftest import CHROMIUM, CHROMIUM_ARGS, Pages
from browser.test_client_browser import WAIT, lobby_app, open_client
from helpers import UNIT, Running


def spki_hash(cert_file: str) -> str:
    """Base64 of the SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's format)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def trusting_browser(browser: Any, tls_files: tuple[str, str]) -> Iterator[Any]:
    """A second Chromium (same Playwright) that trusts the test certificate's key."""
    pinned = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_hash(tls_files[0])}"],
        timeout=30_000 * UNIT,
    )
    try:
        yield pinned
    finally:
        pinned.close()


@pytest.fixture
def tls_lobby(serve: Callable[..., Running], tls_files: tuple[str, str]) -> Running:
    cert, key = tls_files
    return serve(lobby_app(), tls_cert=cert, tls_key=key)


def test_page_over_https_talks_over_wss(trusting_browser: Any, tls_lobby: Running) -> None:
    pages = Pages(trusting_browser)
    try:
        page = open_client(pages, tls_lobby.url + "/lobby")
        assert page.evaluate("location.protocol") == "https:"
        assert page.evaluate("client.url") == tls_lobby.ws_url + "/lobby"
        assert tls_lobby.ws_url.startswith("wss://")
        page.evaluate("() => { window.echoes = []; client.echo = (m) => echoes.push(m.text) }")
        result = page.evaluate("attempt({event: 'echo', text: 'secure'}, {timeout: 5000})")
        assert result["ack"]["event"] == "_ack_", result
        page.wait_for_function("() => echoes.length === 1", timeout=WAIT)
        assert page.evaluate("echoes") == ["secure"]
        assert page.evaluate("client.log") == [{"event": "open"}]
    finally:
        pages.context.close()
    assert not pages.errors, pages.errors


def test_browser_without_the_pin_refuses_the_certificate(browser: Any, tls_lobby: Running) -> None:
    from playwright.sync_api import Error

    pages = Pages(browser)
    try:
        with pytest.raises(Error, match="ERR_CERT"):
            pages.open(tls_lobby.url + "/lobby")
    finally:
        pages.context.close()
