"""``/metrics`` under ASGI (uvicorn): the same figures as on the native server, for the
WebSockets plezi runs there (the ASGI server owns the HTTP connections: none are counted)."""

from __future__ import annotations

from typing import Any

from wsclient import Echo, connect

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp
from promclient import scrape, value


def test_metrics_under_uvicorn(uvicorn_serve: Any) -> None:
    app = plezi.App()
    app.route("/echo", Echo)
    app.route("/metrics", "metrics")
    server = uvicorn_serve(ASGIApp(app))
    with connect(server.ws_url + "/echo") as ws:
        for text in ("a", "b"):
            ws.send(text)
            assert ws.recv(timeout=5 * UNIT) == text
        samples = scrape(server.url)
    assert value(samples, "plezi_connections", kind="websocket") == 1
    assert value(samples, "plezi_messages_received_total", kind="websocket") == 2
    assert value(samples, "plezi_messages_sent_total", kind="websocket") == 2
    assert value(samples, "plezi_request_duration_seconds_count", route="/echo") == 1
