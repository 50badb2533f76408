"""The browser client (JavaScript), and the routes that serve it.

``plezi-client.mjs`` is the source: an ES module. ``client.js`` is its classic-script build (the
same code in a function that defines the global ``PleziClient``), made by :func:`build_classic`
without any bundler; ``python -m plezi.web.client`` rewrites it, and a test checks that it is
current.

``plezi.route("/client.js", "client")`` serves the classic build at ``/client.js`` and the module
at ``/client.mjs`` (for a path that does not end in ``.js``: the path plus ``.mjs``), as
``text/javascript`` with an ``ETag``; a matching ``If-None-Match`` gets ``304 Not Modified``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, ClassVar, Final

from ...errors import RouteError
from ...http.static import etag_listed
from ..controller import Controller

if TYPE_CHECKING:
    from ..routes import ControllerRoute

__all__ = ["MODULE_FILE", "SCRIPT_FILE", "Asset", "build_classic", "client_routes", "load_asset"]

#: The ES module (the source) and its classic-script build, in this package.
MODULE_FILE: Final = "plezi-client.mjs"
SCRIPT_FILE: Final = "client.js"

_CONTENT_TYPE: Final = "text/javascript; charset=utf-8"
_DECLARATION: Final = r"(?:async )?(?:class|function\*?|const|let) "
_EXPORTED: Final = re.compile(rf"^export {_DECLARATION}(\w+)", re.M)
_EXPORT_KEYWORD: Final = re.compile(rf"^export (?={_DECLARATION})", re.M)
_EXPORT_DEFAULT: Final = re.compile(r"^export default \w+;\n", re.M)
_MODULE_SYNTAX: Final = re.compile(r"^\s*(?:export|import)\b", re.M)

_HEADER: Final = (
    "// PleziClient, classic-script build: defines the global `PleziClient`.\n"
    f"// Generated from {MODULE_FILE} by `python -m plezi.web.client`; "
    "edit that file, not this one.\n"
)


def build_classic(module_source: str) -> str:
    """The classic-script build of the ES module ``module_source``.

    The module may only use ``export`` in front of top-level declarations and one ``export
    default Name;`` line, and no ``import``. The build runs the same code inside a function,
    sets ``PleziClient`` on the global object, and hangs the module's other exports on it
    (``PleziClient.reconnectDelay`` ...).
    """
    body = _EXPORT_DEFAULT.sub("", module_source)
    names = _EXPORTED.findall(body)
    body = _EXPORT_KEYWORD.sub("", body)
    stray = _MODULE_SYNTAX.search(body)
    if stray is not None or "PleziClient" not in names:
        where = stray.group(0).strip() if stray else "no exported PleziClient"
        raise ValueError(f"{MODULE_FILE} cannot be built as a classic script: {where}")
    statics = "".join(f"PleziClient.{name} = {name};\n" for name in names if name != "PleziClient")
    return (
        f"{_HEADER}(function (root) {{\n"
        f'"use strict";\n\n{body}\n{statics}root.PleziClient = PleziClient;\n'
        '})(typeof globalThis !== "undefined" ? globalThis : self);\n'
    )


@dataclass(frozen=True, slots=True)
class Asset:
    """A file served as it is, with its strong ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Asset:
        return cls(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def matches(self, if_none_match: str) -> bool:
        """Whether an ``If-None-Match`` header names this asset (weak comparison, RFC 9110)."""
        return etag_listed(if_none_match, self.etag)


@functools.cache
def load_asset(name: str) -> Asset:
    """One of this package's JavaScript files, read once."""
    return Asset.of(resources.files(__name__).joinpath(name).read_bytes())


class ClientScript(Controller):
    """Serves one asset (a subclass per route sets ``_asset``)."""

    _asset: ClassVar[Asset]

    def index(self) -> bool:
        """GET/HEAD: the script, or 304 when the client's copy is current."""
        asset = self._asset
        response = self.response
        headers = response.headers
        headers["Content-Type"] = _CONTENT_TYPE
        headers["ETag"] = asset.etag
        # Always revalidate (cheap, thanks to the ETag): the file changes with plezi's version.
        headers["Cache-Control"] = "no-cache"
        headers["X-Content-Type-Options"] = "nosniff"
        if asset.matches(self.request.headers.get("if-none-match", "")):
            response.status = 304
        else:
            response.body = asset.body
        return True


def _script_class(file: str) -> type[ClientScript]:
    return type("ClientScript", (ClientScript,), {"_asset": load_asset(file)})


def module_path(path: str) -> str:
    """Where the ES module is served when the classic build is at ``path``."""
    if path.endswith(".js"):
        return path[:-3] + ".mjs"
    stripped = path.rstrip("/")
    if not stripped:
        raise RouteError(f"route {path!r}: the client needs a file-like path, e.g. /client.js")
    return stripped + ".mjs"


def client_routes(path: str) -> list[ControllerRoute]:
    """The routes of ``plezi.route(path, "client")``: the classic build, then the module."""
    from ..routes import ControllerRoute

    return [
        ControllerRoute(path, _script_class(SCRIPT_FILE)),
        ControllerRoute(module_path(path), _script_class(MODULE_FILE)),
    ]
