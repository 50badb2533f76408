"""The public folder's route (``--public``, Iodine's ``-www``): files before the routes.

The files themselves (finding them safely, conditional and range answers, streaming) are
:mod:`plezi.http.static`'s; this module makes them a route of the application.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar, Protocol

from ..http.paths import normalize_path
from ..http.static import (
    FOUND_KEY,
    PublicFolder,
    accepts_gzip,
    file_response,
    guess_type,
)
from .controller import Controller
from .patterns import RoutePattern
from .routes import ControllerRoute


class _Routes(Protocol):
    """An application, as far as the public folder needs it: its ordered routes (a
    :class:`~.app.App`, which calls this module: hence a protocol, not an import)."""

    routes: list[ControllerRoute]


__all__ = ["PublicFiles", "PublicPattern", "install_public", "public_route"]


class PublicPattern(RoutePattern):
    """A route pattern that matches exactly the paths naming something in a public folder."""

    __slots__ = ("folder",)

    def __init__(self, folder: PublicFolder) -> None:
        super().__init__("/*")
        self.folder = folder

    def __repr__(self) -> str:
        return f"PublicPattern({self.folder.root!r})"

    def match(self, path: str) -> Mapping[str, str] | None:
        """See :meth:`PublicFolder.lookup` (never memoized: files come and go)."""
        return self.folder.lookup(path)


class PublicFiles(Controller):
    """Answers GET and HEAD with the file :class:`PublicPattern` found; everything else (other
    verbs, a file that vanished meanwhile) falls through to the next route."""

    _pl_folder: ClassVar[PublicFolder]

    def index(self) -> bool | None:
        """The file (200, 206, 304, 416), or the redirect of ``/dir`` to ``/dir/``."""
        request = self.request
        if request.method != "GET" and request.method != "HEAD":
            return None  # a POST with ``_method=GET`` is still a POST here
        real: str = self.params[FOUND_KEY]
        if real.endswith(os.sep):  # a folder asked for without its slash
            target = (normalize_path(request.path) or "/").rstrip("/") + "/"
            query = request.query_string
            return self.redirect_to(f"{target}?{query}" if query else target, status=301)
        folder = self._pl_folder
        response = None
        if not real.endswith(".gz") and accepts_gzip(request.headers.get("accept-encoding", "")):
            gz = folder.precompressed(real)
            if gz is not None:
                response = file_response(
                    gz,
                    content_type=guess_type(real),
                    request=request,
                    encoding="gzip",
                    follow_symlinks=False,
                )
        if response is None:
            response = file_response(real, request=request, follow_symlinks=False)
        if response is None:
            return None
        response.headers["X-Content-Type-Options"] = "nosniff"
        self._pl_response = response
        return True

    def show(self) -> bool | None:
        """The same as :meth:`index`: a query string's ``id`` must not turn the file away."""
        return self.index()


def public_route(directory: str | os.PathLike[str]) -> ControllerRoute:
    """A route that serves ``directory``'s files (:class:`ConfigError` when it is not a folder)."""
    folder = PublicFolder(directory)
    files = type("PublicFiles", (PublicFiles,), {"_pl_folder": folder})
    return ControllerRoute("/*", files, pattern=PublicPattern(folder))


def install_public(
    app: _Routes, directory: str | os.PathLike[str] | None
) -> ControllerRoute | None:
    """Serve ``directory`` before ``app``'s routes (replacing an earlier public folder);
    ``None`` removes it. Iodine serves static files before the application, and so does this."""
    app.routes[:] = [r for r in app.routes if not isinstance(r.pattern, PublicPattern)]
    if directory is None:
        return None
    route = public_route(directory)
    app.routes.insert(0, route)
    return route
