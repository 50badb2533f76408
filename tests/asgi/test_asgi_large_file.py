"""A large file under ASGI: ``send_file`` streams it natively; an ASGI server gets it whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

import plezi
from helpers import UNIT
from plezi.asgi import ASGIApp


def test_send_file_of_a_large_file_is_answered_whole(uvicorn_serve: Any, tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024 + 3)
    (tmp_path / "big.bin").write_bytes(data)

    class Files:
        def show(self) -> bool:
            return self.send_file(str(tmp_path / self.params["id"]))  # type: ignore[attr-defined, no-any-return]

    app = plezi.App()
    app.route("/f", Files)
    server = uvicorn_serve(ASGIApp(app))
    with httpx.Client(base_url=server.url, timeout=5 * UNIT) as client:
        r = client.get("/f/big.bin")
        assert (r.status_code, r.content == data) == (200, True)
        assert r.headers["content-length"] == str(len(data))
        r = client.head("/f/big.bin")  # its length, and the file never read
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["content-length"] == str(len(data))
