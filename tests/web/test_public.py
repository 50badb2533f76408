"""The public folder (``--public``, Iodine's ``-www``) on a real server, over real sockets.

Files are served before the routes (GET and HEAD only), with ``index.html`` for folders, ETags,
304, ranges and precompressed ``.gz`` siblings; every other request reaches the routes as if the
folder were not there. Nothing outside the folder is ever read: not through ``..`` in any
spelling, encoded separators, backslashes, NUL, dotfiles or symbolic links.
"""

from __future__ import annotations

import gzip
import logging
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rawhttp import RawHTTP, RawResponse
from wsclient import Echo, connect

import plezi
from helpers import ROOT, UNIT, Running, Script, run_script
from plezi.errors import ConfigError
from plezi.http.static import install_public
from plezi.launch.flags import config_from_args
from plezi.web.public import PublicPattern

SECRET = b"outside-secret-7d1e"
CSS = b"body { color: teal }\n"
EXAMPLES = ROOT / "examples"


class Pages:
    """The routes behind the folder: they tell which requests reached them."""

    def index(self) -> str:
        return "route index"

    def show(self) -> str:
        return f"route show {self.params['id']}"  # type: ignore[attr-defined]

    def create(self) -> str:
        return "route create"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``tmp_path/public`` with pages, assets and traps; ``tmp_path/outside.txt`` is a secret."""
    (tmp_path / "outside.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "index.html").write_bytes(SECRET)
    (tmp_path / "outside" / "page.txt").write_bytes(SECRET)
    public = tmp_path / "public"
    (public / "sub" / "deeper").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "style.css").write_bytes(CSS)
    (public / "app.js").write_text("console.log(1)")
    (public / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (public / "digits.txt").write_text("0123456789")
    (public / "hello.txt").write_text("hello from a file")
    (public / "sub" / "index.html").write_text("sub index")
    (public / "sub" / "deeper" / "note.txt").write_text("deep note")
    (public / "noindex").mkdir()
    (public / ".env").write_bytes(SECRET)
    (public / ".git").mkdir()
    (public / ".git" / "config").write_bytes(SECRET)
    (public / "link-out.txt").symlink_to(tmp_path / "outside.txt")
    (public / "dir-out").symlink_to(tmp_path / "outside")
    (public / "link-in.css").symlink_to("style.css")
    (public / "sub-link").symlink_to("sub")
    return public


@pytest.fixture
def site(serve: Callable[..., Running], folder: Path) -> Running:
    """``folder`` in front of :class:`Pages` at ``/``."""
    app = plezi.App()
    app.route("/", Pages)
    install_public(app, folder)
    return serve(app)


@pytest.fixture
def bare(serve: Callable[..., Running], folder: Path) -> Running:
    """``folder`` and no routes: whatever the folder does not serve is a 404."""
    app = plezi.App()
    install_public(app, folder)
    return serve(app)


def get(running: Running, target: str, **headers: str) -> RawResponse:
    """One request with the target exactly as given (httpx would resolve ``..`` itself)."""
    method = headers.pop("method", "GET")
    with RawHTTP(running.port) as conn:
        return conn.request(method, target, headers)


def logged(caplog: pytest.LogCaptureFixture, *parts: str) -> bool:
    return any(
        rec.name == "plezi" and all(part in rec.getMessage() for part in parts)
        for rec in caplog.records
    )


# -- serving ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "ctype", "body"),
    [
        ("/style.css", "text/css; charset=utf-8", CSS),
        ("/hello.txt", "text/plain; charset=utf-8", b"hello from a file"),
        ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(100)),
        ("/sub/deeper/note.txt", "text/plain; charset=utf-8", b"deep note"),
        ("/link-in.css", "text/css; charset=utf-8", CSS),  # a link that stays inside
        ("/sub-link/deeper/note.txt", "text/plain; charset=utf-8", b"deep note"),
        ("/style.css?id=3&x=y", "text/css; charset=utf-8", CSS),  # the query is not the path
        ("/sub//deeper/./note.txt", "text/plain; charset=utf-8", b"deep note"),
    ],
)
def test_files_are_served_with_their_type(
    site: Running, target: str, ctype: str, body: bytes
) -> None:
    r = get(site, target)
    assert r.status == 200
    assert r.header("content-type") == ctype
    assert r.body == body
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("accept-ranges") == "bytes"


def test_javascript_has_a_javascript_type(site: Running) -> None:
    r = get(site, "/app.js")
    assert r.status == 200
    assert (r.header("content-type") or "").split(";")[0].endswith("javascript")


def test_index_html_for_the_root_and_for_folders(site: Running) -> None:
    assert get(site, "/").body == b"<h1>home</h1>"
    assert get(site, "/sub/").body == b"sub index"
    r = get(site, "/sub?a=1")
    assert r.status == 301
    assert r.header("location") == "/sub/?a=1"  # so the page's relative links resolve
    # A folder without an index is not served: the routes answer.
    assert get(site, "/noindex/").body == b"route show noindex"
    assert get(site, "/noindex").body == b"route show noindex"


def test_a_client_cannot_choose_the_file_or_the_redirect(site: Running) -> None:
    """The folder's route tells its controller what it found through a route parameter; a query
    or form field of the same name never gets through (no open redirect, no other file)."""
    for name in ("_pl_public", "_pl_public_dir", "_pl_public_file"):
        for query in (f"{name}=http://evil.example/", f"{name}[x]=/etc/passwd"):
            r = get(site, f"/style.css?{query}")
            assert (r.status, r.body) == (200, CSS)
        r = get(site, f"/sub?{name}=/etc/passwd")
        assert (r.status, r.header("location")) == (301, f"/sub/?{name}=/etc/passwd")
    with RawHTTP(site.port) as conn:
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert conn.request("GET", "/hello.txt", form, b"_pl_public=/etc/passwd").status == 200
        assert conn.request("GET", "/missing?_pl_public=/etc/passwd").body == (
            b"route show missing"
        )


def test_head_sends_the_headers_and_no_body(site: Running) -> None:
    with RawHTTP(site.port) as conn:
        r = conn.request("HEAD", "/style.css")
        assert r.status == 200
        assert r.header("content-length") == str(len(CSS))
        assert r.header("content-type") == "text/css; charset=utf-8"
        # The same connection goes on: no body bytes were left on it.
        again = conn.request("GET", "/hello.txt")
        assert again.body == b"hello from a file"


def test_etag_and_last_modified_give_304(site: Running) -> None:
    first = get(site, "/style.css")
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag and modified
    r = get(site, "/style.css", **{"If-None-Match": etag})
    assert (r.status, r.body) == (304, b"")
    assert r.header("etag") == etag
    assert get(site, "/style.css", **{"If-None-Match": f'"nope", W/{etag}'}).status == 304
    assert get(site, "/style.css", **{"If-Modified-Since": modified}).status == 304
    assert get(site, "/style.css", **{"If-None-Match": '"stale"'}).status == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    both = {"If-None-Match": '"stale"', "If-Modified-Since": modified}
    assert get(site, "/style.css", **both).status == 200
    assert get(site, "/style.css", **{"If-Modified-Since": "not a date"}).status == 200


def test_a_changed_file_gets_a_new_etag(site: Running, folder: Path) -> None:
    etag = get(site, "/hello.txt").header("etag")
    (folder / "hello.txt").write_text("hello again, longer")
    r = get(site, "/hello.txt", **{"If-None-Match": etag or ""})
    assert (r.status, r.body) == (200, b"hello again, longer")


@pytest.mark.parametrize(
    ("spec", "status", "body", "content_range"),
    [
        ("bytes=2-4", 206, b"234", "bytes 2-4/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-3", 206, b"789", "bytes 7-9/10"),
        ("bytes=8-100", 206, b"89", "bytes 8-9/10"),
        ("bytes=10-", 416, b"", "bytes */10"),
        ("bytes=-0", 416, b"", "bytes */10"),
        ("bytes=5-2", 200, b"0123456789", None),  # invalid: ignored
        ("bytes=0-1,4-5", 200, b"0123456789", None),  # several ranges: the whole file
        ("items=0-1", 200, b"0123456789", None),
    ],
)
def test_ranges(
    site: Running, spec: str, status: int, body: bytes, content_range: str | None
) -> None:
    r = get(site, "/digits.txt", Range=spec)
    assert (r.status, r.body) == (status, body)
    assert r.header("content-range") == content_range


def test_if_range(site: Running) -> None:
    etag = get(site, "/digits.txt").header("etag") or ""
    assert get(site, "/digits.txt", Range="bytes=0-1", **{"If-Range": etag}).body == b"01"
    stale = get(site, "/digits.txt", Range="bytes=0-1", **{"If-Range": '"old"'})
    assert (stale.status, stale.body) == (200, b"0123456789")


def test_precompressed_gz_when_the_client_accepts_gzip(site: Running, folder: Path) -> None:
    packed = gzip.compress(b"console.log(1)")
    (folder / "app.js.gz").write_bytes(packed)
    r = get(site, "/app.js", **{"Accept-Encoding": "br, gzip"})
    assert r.body == packed
    assert r.header("content-encoding") == "gzip"
    assert r.header("vary") == "Accept-Encoding"
    assert "javascript" in (r.header("content-type") or "")
    plain = get(site, "/app.js")
    assert (plain.body, plain.header("content-encoding")) == (b"console.log(1)", None)
    refused = get(site, "/app.js", **{"Accept-Encoding": "gzip;q=0, identity"})
    assert refused.body == b"console.log(1)"
    assert plain.header("etag") != r.header("etag")
    # A .gz that is a link is never followed (it could lead anywhere).
    (folder / "hello.txt.gz").symlink_to(folder.parent / "outside.txt")
    linked = get(site, "/hello.txt", **{"Accept-Encoding": "gzip"})
    assert (linked.body, linked.header("content-encoding")) == (b"hello from a file", None)


# -- the routes behind it ----------------------------------------------------------------------


def test_a_route_is_shadowed_only_where_a_file_exists(site: Running, folder: Path) -> None:
    assert get(site, "/hello.txt").body == b"hello from a file"
    assert get(site, "/missing.txt").body == b"route show missing.txt"
    (folder / "missing.txt").write_text("now it exists")
    assert get(site, "/missing.txt").body == b"now it exists"  # no stale cache either way
    (folder / "missing.txt").unlink()
    assert get(site, "/missing.txt").body == b"route show missing.txt"


def test_a_missing_file_is_the_apps_404(bare: Running) -> None:
    r = get(bare, "/missing.txt")
    assert (r.status, r.body) == (404, b"Not Found\n")


def test_other_methods_go_to_the_routes(site: Running, bare: Running) -> None:
    with RawHTTP(site.port) as conn:
        assert conn.request("POST", "/hello.txt", body=b"x=1").body == b"route create"
        # `_method=GET` turns a POST into a GET for the routes, never into a file download.
        override = conn.request(
            "POST",
            "/hello.txt",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"_method=GET",
        )
        assert override.body == b"route show hello.txt"
    # A file answers GET and HEAD only: 405 with ``allow`` (404 stays for what is no file).
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = get(bare, "/hello.txt", method=method)
        assert (r.status, r.header("allow")) == (405, "GET, HEAD"), method
    assert get(bare, "/missing.txt", method="POST").status == 404


def test_a_websocket_upgrade_to_a_file_path_still_upgrades(
    serve: Callable[..., Running], folder: Path
) -> None:
    app = plezi.App()
    app.route("/", Echo)
    install_public(app, folder)
    running = serve(app)
    assert get(running, "/").body == b"<h1>home</h1>"  # "/" is index.html for plain GETs
    with connect(running.ws_url + "/") as ws:
        ws.send("through the folder")
        assert ws.recv(timeout=5 * UNIT) == "through the folder"
    with connect(running.ws_url + "/hello.txt") as ws:  # Echo takes /(:id) as well
        ws.send("a file path")
        assert ws.recv(timeout=5 * UNIT) == "a file path"


def test_a_websocket_upgrade_to_a_file_without_a_websocket_route(bare: Running) -> None:
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert get(bare, "/hello.txt", **upgrade).status == 400  # never the file, never a 200
    assert get(bare, "/missing.txt", **upgrade).status == 404


# -- nothing outside the folder ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/../outside.txt", 400),
        ("/sub/../../outside.txt", 400),
        ("/%2e%2e/outside.txt", 400),
        ("/%2E%2E/%2e%2e/outside.txt", 400),
        ("/sub/%2e%2e/%2e%2e/outside.txt", 400),
        ("/..%2foutside.txt", 404),
        ("/sub/..%2F..%2Foutside.txt", 404),
        ("/..\\outside.txt", 404),
        ("/..%5coutside.txt", 404),
        ("/sub%5c..%5c..%5coutside.txt", 404),
        ("/%252e%252e/outside.txt", 404),
        ("/%252e%252e%252foutside.txt", 404),
        ("/hello.txt%00", 404),
        ("/hello.txt%00.png", 404),
        ("//outside.txt", 404),
        (f"/{ROOT}/README.md", 404),
        ("/link-out.txt", 404),
        ("/dir-out/page.txt", 404),
        ("/dir-out/", 404),
        ("/dir-out", 404),
    ],
)
def test_nothing_outside_the_folder_is_served(bare: Running, target: str, status: int) -> None:
    r = get(bare, target)
    assert r.status == status
    assert SECRET not in r.body


def test_refusals_are_logged(bare: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plezi")
    get(bare, "/..%2foutside.txt")
    get(bare, "/..%5coutside.txt")
    get(bare, "/hello.txt%00")
    get(bare, "/link-out.txt")
    assert logged(caplog, "public folder", "'/..%2Foutside.txt'")
    assert logged(caplog, "public folder", "'/..%5Coutside.txt'")
    assert logged(caplog, "public folder", "'/hello.txt%00'")
    assert logged(caplog, "public folder", "'/link-out.txt'", "out of the folder")


@pytest.mark.parametrize(
    "target", ["/.env", "/.git/config", "/%2eenv", "/.git/", "/sub/.hidden", "/.env.gz"]
)
def test_dotfiles_are_never_served(bare: Running, folder: Path, target: str) -> None:
    (folder / "sub" / ".hidden").write_bytes(SECRET)
    r = get(bare, target)
    assert r.status == 404
    assert SECRET not in r.body


def test_only_regular_files(bare: Running, folder: Path) -> None:
    os.mkfifo(folder / "pipe.txt")  # opening a FIFO for reading would block the server
    assert get(bare, "/pipe.txt").status == 404
    assert get(bare, "/hello.txt").status == 200


# -- configuration -----------------------------------------------------------------------------


def test_without_a_public_folder_no_route_is_added(folder: Path) -> None:
    app = plezi.App()
    app.route("/", Pages)
    routes = list(app.routes)
    assert install_public(app, None) is None
    assert app.routes == routes
    install_public(app, folder)
    install_public(app, folder)  # replaces, never stacks
    assert len(app.routes) == 2 and isinstance(app.routes[0].pattern, PublicPattern)
    install_public(app, None)
    assert app.routes == routes


@pytest.mark.parametrize("flag", ["--public", "-www", "-public"])
def test_the_flag_and_its_iodine_spellings(folder: Path, flag: str) -> None:
    assert config_from_args([flag, str(folder)]).public == str(folder)
    assert config_from_args([], public=folder).public == str(folder)
    assert config_from_args(["--port", "4000"]).public is None
    # Iodine's single-dash spellings leave plezi's short flags alone.
    both = config_from_args(["-w", "2", "-p", "4000", flag, str(folder)])
    assert (both.workers, both.port, both.public) == (2, 4000, str(folder))
    assert config_from_args(["-w3"]).workers == 3


def test_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_args(["--public", str(tmp_path / "nope")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        config_from_args(["--public", str(tmp_path / "file")])


def test_the_command_line_flag(script: Callable[..., Script], folder: Path) -> None:
    s = script(EXAMPLES / "websocket_sample.py", "--public", str(folder))
    client = httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT)
    with client:
        assert client.get("/hello.txt").text == "hello from a file"
        assert client.get("/42").text == "showing object with id: 42..."
        assert client.get("/").text == "<h1>home</h1>"
        assert client.get("/.env").text == "showing object with id: .env..."
    code, err = s.stop()
    assert code == 0, err
    assert f"serving the files in {folder}" in err


def test_a_script_with_no_route_serves_its_public_folder(
    script: Callable[..., Script], tmp_path: Path, folder: Path
) -> None:
    """Autostart needs something to serve: a route, or a public folder on the command line."""
    path = tmp_path / "site.py"
    path.write_text("import plezi\n")
    s = script(path, "--public", str(folder))
    with httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT) as client:
        assert client.get("/hello.txt").text == "hello from a file"
        assert client.get("/missing").status_code == 404
    code, err = s.stop()
    assert code == 0, err


def test_worker_processes_serve_the_folder(script: Callable[..., Script], folder: Path) -> None:
    s = script(EXAMPLES / "websocket_sample.py", "--workers", "2", "--public", str(folder))
    with httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT) as client:
        for _ in range(4):  # whichever worker accepts
            assert client.get("/hello.txt", headers={"Connection": "close"}).status_code == 200
    code, err = s.stop()
    assert code == 0, err


def test_run_with_public(script: Callable[..., Script], tmp_path: Path, folder: Path) -> None:
    path = tmp_path / "runner.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import plezi

            class Page:
                def show(self):
                    return "page " + self.params["id"]

            plezi.route("/", Page)
            plezi.run(public={str(folder)!r})
            """
        )
    )
    s = script(path)
    with httpx.Client(base_url=s.url, trust_env=False, timeout=5 * UNIT) as client:
        assert client.get("/style.css").content == CSS
        assert client.get("/sub/").text == "sub index"
        assert client.get("/missing").text == "page missing"
    code, err = s.stop()
    assert code == 0, err


@pytest.mark.parametrize("how", ["flag", "run"])
def test_a_missing_folder_stops_the_start(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "no-such-folder"
    source = "import plezi\nclass Page:\n    def index(self):\n        return 'page'\n"
    source += "plezi.route('/', Page)\n"
    if how == "run":
        source += f"plezi.run(public={str(missing)!r})\n"
    args = ["--public", str(missing)] if how == "flag" else []
    done = run_script(tmp_path, source, "--port", "0", *args)
    assert done.returncode == 2, done.stderr
    assert f"plezi: public folder {str(missing)!r} does not exist" in done.stderr
    assert "listening" not in done.stderr
    assert "Traceback" not in done.stderr
