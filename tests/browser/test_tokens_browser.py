"""The browser client's ``{token}`` option in headless Chromium: the token reaches
``pre_connect`` as ``self.token`` through ``Sec-WebSocket-Protocol`` and the browser accepts the
server's ``plezi`` answer; a refused token never connects."""

from __future__ import annotations

import json
from collections.abc import Callable

import plezi
from browser.conftest import Pages
from browser.test_client_browser import CLASSIC, WAIT, open_client, page_html
from helpers import Running, wait_for

TOKENS = plezi.tokens(secret="the browser test's secret, 32 bytes")


def token_app() -> plezi.App:
    class Page:
        def index(self) -> str:
            return page_html(CLASSIC)

    class Secure:
        auto_dispatch = True

        def pre_connect(self) -> bool:
            self.user = TOKENS.verify(self.token)
            return self.user is not None

        def on_open(self) -> None:
            self.write(json.dumps({"event": "welcome", "user": self.user}))

    app = plezi.App()
    app.route("/client.js", "client")
    app.route("/page", Page)
    app.route("/secure", Secure)
    return app


def test_browser_client_sends_its_token(serve: Callable[..., Running], pages: Pages) -> None:
    running = serve(token_app())
    page = open_client(
        pages, running.url + "/page", "/secure", token=TOKENS.sign({"name": "ann é"})
    )
    # (the welcome arrives before a handler could be set: the helpers log it as unknown)
    welcome = "client.log.find((e) => e.unknown && e.unknown.event === 'welcome')"
    page.wait_for_function(f"() => {welcome} !== undefined", timeout=WAIT)
    assert page.evaluate(f"{welcome}.unknown.user") == {"name": "ann é"}


def test_browser_client_with_a_refused_token_does_not_connect(
    serve: Callable[..., Running], pages: Pages
) -> None:
    running = serve(token_app())
    page = pages.open(running.url + "/page")
    page.wait_for_function("() => window.clientReady === true", timeout=WAIT)
    expired = TOKENS.sign("ann", ttl=-1)
    page.evaluate("(token) => start('/secure', {token, reconnect: false})", expired)
    wait_for(lambda: running.call(lambda: running.server.stats.refused["pre_connect"]) >= 1)
    page.wait_for_function("() => client.log.some((e) => e.event === 'close')", timeout=WAIT)
    assert page.evaluate("client.connected") is False
