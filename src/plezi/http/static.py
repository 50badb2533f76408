"""Files: ``send_file`` in controllers, and the public folder (``--public``, Iodine's ``-www``).

:func:`file_response` answers with one file: its type from its name, an ``ETag`` and a
``Last-Modified`` from its size and time, and, when it is given the request, ``304 Not Modified``
for ``If-None-Match`` / ``If-Modified-Since`` and one byte range (``206``, ``416``).

:class:`PublicFolder` maps request paths onto a folder's regular files. :func:`install_public`
puts it in front of an application's routes as an ordinary route whose pattern matches only the
paths that name a file, so every other request reaches the routes as if it were not there, and an
application without a public folder pays nothing at all. The rules it enforces (no way out of the
folder, no dotfiles, only regular files) are in ``docs/security.md``.

A file (or range) larger than :data:`STREAM_ABOVE` is not read into memory: the response is a
:class:`FileResponse`, which becomes a :class:`FileReply` (status, headers, and the open file), and
the server sends the file's bytes as the client reads them (``plezi.server.http``).
"""

from __future__ import annotations

import logging
import mimetypes
import os
import re
import stat
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote_to_bytes

from ..errors import ConfigError
from ..throttle import LogThrottle
from .response import Reply, Response

if TYPE_CHECKING:
    from .request import Request

__all__ = [
    "STREAM_ABOVE",
    "FileReply",
    "FileResponse",
    "PublicFolder",
    "accepts_gzip",
    "etag_listed",
    "file_response",
    "guess_type",
    "install_public",
]

log = logging.getLogger("plezi")

#: The route parameter through which :class:`plezi.web.public.PublicPattern` tells its controller
#: what it found: a file's real path, or a folder's real path and a ``/`` (redirect to the path plus
#: ``/``). A route parameter always replaces a query or form field of the same name, so a client
#: cannot set it.
FOUND_KEY: Final = "_pl_public"
INDEX: Final = "index.html"
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_RANGE: Final = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.ASCII)
_LOGGED_CHARS: Final = 200
#: What :func:`_range` returns for a range past the end of the file (416).
_UNSATISFIABLE: Final = (1, 0)
#: Bodies (a whole file or a range) larger than this are streamed from the open file as the
#: client reads them; smaller ones are read at once (one write, no bookkeeping).
STREAM_ABOVE: Final = 64 * 1024


def guess_type(path: str) -> str:
    """The ``Content-Type`` for a file name (``application/octet-stream`` when unknown)."""
    ctype, encoding = mimetypes.guess_type(path)
    if ctype is None or encoding is not None:
        return "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        return f"{ctype}; charset=utf-8"
    return ctype


def file_response(
    path: str,
    *,
    content_type: str | None = None,
    request: Request | None = None,
    encoding: str | None = None,
    follow_symlinks: bool = True,
) -> Response | None:
    """A response with the file at ``path``, or ``None`` when it is not a regular file.

    Given the ``request`` (GET or HEAD), it may be ``304 Not Modified`` or, for a ``Range``, a
    ``206`` with those bytes or a ``416``. ``encoding`` (``"gzip"``) says the file holds the
    compressed bytes of a resource whose type ``content_type`` gives. A file (or range) of up to
    :data:`STREAM_ABOVE` bytes is read into memory; a larger one gives a :class:`FileResponse`
    that keeps the file open and is sent as the client reads it.
    """
    flags = _OPEN_FLAGS if follow_symlinks else _OPEN_FLAGS | _NOFOLLOW
    try:
        fd = os.open(path, flags)  # PERF/safety: O_NONBLOCK so a FIFO cannot block the loop
    except (OSError, ValueError):
        return None
    response: Response | None = None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        response = _respond(fd, st, content_type or guess_type(path), request, encoding)
        return response
    except OSError:
        return None
    finally:
        if not isinstance(response, FileResponse):
            os.close(fd)  # (a FileResponse owns it now)


def _respond(
    fd: int, st: os.stat_result, ctype: str, request: Request | None, encoding: str | None
) -> Response:
    response = Response()
    headers = response.headers
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}{"-gz" if encoding else ""}"'
    headers["ETag"] = etag
    headers["Last-Modified"] = formatdate(st.st_mtime, usegmt=True)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        headers["Vary"] = "Accept-Encoding"
    method = request.method if request is not None else ""
    if request is not None and (method == "GET" or method == "HEAD"):
        if _not_modified(request.headers, etag, st.st_mtime):
            response.status = 304
            return response
        headers["Accept-Ranges"] = "bytes"
        span = _range(request.headers, etag, headers["Last-Modified"], st.st_size)
        if span is not None and method == "GET":
            return _partial(response, fd, st.st_size, span, ctype)
    headers["Content-Type"] = ctype
    return _with_body(response, fd, 0, st.st_size)


def _partial(response: Response, fd: int, size: int, span: tuple[int, int], ctype: str) -> Response:
    """206 with the bytes of ``span``, or 416 when it starts past the end."""
    start, end = span
    if start > end:
        response.status = 416
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    response.status = 206
    response.headers["Content-Type"] = ctype
    response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return _with_body(response, fd, start, end + 1 - start)


def _with_body(response: Response, fd: int, offset: int, size: int) -> Response:
    """``response`` with ``size`` bytes of ``fd`` from ``offset`` as its body: read now when
    they are few, else a :class:`FileResponse` that takes ``fd`` over."""
    if size <= STREAM_ABOVE:
        response.body = _read(fd, offset, size)
        return response
    streamed = FileResponse(response.status)
    streamed.headers = response.headers
    streamed.file = (fd, offset, size)
    return streamed


def _read(fd: int, offset: int, size: int) -> bytes:
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 24), offset)
        if not chunk:
            break  # the file shrank meanwhile: send what there is
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class FileReply(Reply):
    """A :class:`Reply` whose body, ``size`` bytes from ``offset``, is still in the open file
    ``fd`` (its own ``body`` is empty): the server writes the head, then the file in chunks as
    the client reads (``plezi.server.http``). It owns ``fd``: :meth:`close` (also on garbage
    collection)."""

    __slots__ = ("fd", "offset", "size")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], fd: int, offset: int, size: int
    ) -> None:
        super().__init__(status, headers)
        self.fd, self.offset, self.size = fd, offset, size

    def read(self, limit: int) -> bytes:
        """The next at most ``limit`` bytes of the body; ``b""`` at its end, or when the file
        has shrunk meanwhile (then :attr:`size` is still above 0: the response cannot be
        completed)."""
        if self.size <= 0 or self.fd < 0:
            return b""
        chunk = os.pread(self.fd, min(limit, self.size), self.offset)
        self.offset += len(chunk)
        self.size -= len(chunk)
        return chunk

    def whole(self) -> Reply:
        """The same reply with the whole body in memory (for servers that do not stream it);
        closes the file."""
        try:
            return Reply(self.status, self.headers, _read(self.fd, self.offset, self.size))
        finally:
            self.close()

    def close(self) -> None:
        """Close the file (once)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class FileResponse(Response):
    """A :class:`Response` whose body is a part of an open file (see :class:`FileReply`); it
    owns the file until its reply is made."""

    __slots__ = ("file",)

    def __init__(self, status: int = 200) -> None:
        super().__init__(status)
        #: ``(fd, offset, size)`` of the body, or ``None`` once handed over.
        self.file: tuple[int, int, int] | None = None

    def reply(self) -> Reply:
        """A :class:`FileReply` that takes the file over (a plain reply when the controller
        set a body of its own after all)."""
        file, self.file = self.file, None
        if file is not None and self.body:
            os.close(file[0])
            file = None
        if file is None:
            return super().reply()
        fd, offset, size = file
        try:
            headers = self.header_pairs()
        except ValueError:
            os.close(fd)
            raise
        return FileReply(self.status, headers, fd, offset, size)

    def __del__(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            os.close(file[0])


def etag_listed(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _not_modified(headers: Mapping[str, str], etag: str, mtime: float) -> bool:
    """RFC 9110 section 13.2.2: ``If-None-Match`` first; ``If-Modified-Since`` only without it."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        return etag_listed(if_none_match, etag)
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return int(mtime) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # not a date: ignored, as RFC 9110 says


def _range(
    headers: Mapping[str, str], etag: str, last_modified: str, size: int
) -> tuple[int, int] | None:
    """The one byte range asked for, ``(start, end)`` inclusive; ``start > end`` when it cannot
    be satisfied; ``None`` to send the whole file (no ``Range``, several ranges, a stale
    ``If-Range``, or a header that is not understood: RFC 9110 lets a server ignore it)."""
    value = headers.get("range")
    if value is None:
        return None
    if_range = headers.get("if-range")
    if if_range is not None and if_range.strip() not in (etag, last_modified):
        return None
    m = _RANGE.fullmatch(value.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if not first:  # the last `last` bytes
        wanted = int(last)
        return (max(0, size - wanted), size - 1) if wanted and size else _UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        return _UNSATISFIABLE
    return start, min(int(last), size - 1) if last else size - 1


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header admits gzip (``gzip``, ``x-gzip`` or ``*``, q > 0)."""
    for part in accept_encoding.split(","):
        name, _, rest = part.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = rest.strip().lower()
        if not q.startswith("q="):
            return True
        try:
            return float(q[2:]) > 0
        except ValueError:
            return False
    return False


def _shown(path: str) -> str:
    """A request path for a log line: ``repr`` and cut short."""
    return repr(path[:_LOGGED_CHARS])


class PublicFolder:
    """The regular files below one folder, found by request path.

    * the folder is resolved once (``realpath``); a file is served only when its own real path
      is inside it, so a symbolic link may point within the folder, never out of it;
    * no segment may start with ``.`` (``.env``, ``.git/``), and none may hold, once decoded, a
      ``/`` (``%2F``), a backslash or a NUL: such requests go to the routes, with a log line;
    * ``/`` and ``/dir/`` name ``index.html`` in that folder; ``/dir`` (a folder with an index)
      redirects to ``/dir/``, so the page's relative links resolve as they should.
    """

    __slots__ = ("_out_log", "_prefix", "root")

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        given = os.fspath(directory)
        real = os.path.realpath(given)
        if not os.path.isdir(real):
            what = "does not exist" if not os.path.exists(real) else "is not a directory"
            raise ConfigError(f"public folder {given!r} {what}")
        #: The folder's real path.
        self.root = real
        self._prefix = real if real.endswith(os.sep) else real + os.sep
        #: "leads out of the folder" warnings: a client can ask for such a path in a loop.
        self._out_log = LogThrottle()

    def __repr__(self) -> str:
        return f"PublicFolder({self.root!r})"

    def lookup(self, path: str) -> Mapping[str, str] | None:
        """What a path (as :func:`plezi.http.paths.normalize_path` returns it) names here:
        ``{FOUND_KEY: real path}`` for a file, ``{FOUND_KEY: real path + "/"}`` for a folder
        with an index asked for without the slash, or ``None``.

        PERF: runs for every request when a public folder is set; a path that names nothing
        costs one system call (``access``). Canonical paths need no decoding (no ``%``).
        """
        if "%" in path:
            relative = self._decode(path)
            if relative is None:
                return None
        elif "/." in path:
            return None  # a dotfile, or a dot folder (dot segments were resolved before)
        else:
            relative = path
        if relative.endswith("/"):
            relative += INDEX
        candidate = self.root + relative if self.root != os.sep else relative
        try:
            # PERF: most requests name no file; `access` says so without raising (a caught
            # FileNotFoundError costs more than the system call itself).
            if not os.access(candidate, os.F_OK):
                return None
            mode = os.stat(candidate).st_mode
            if stat.S_ISDIR(mode):
                if not stat.S_ISREG(os.stat(os.path.join(candidate, INDEX)).st_mode):
                    return None
                real = self._real(candidate, path)
                return None if real is None else MappingProxyType({FOUND_KEY: real + os.sep})
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(mode):
            return None
        real = self._real(candidate, path)
        return None if real is None else MappingProxyType({FOUND_KEY: real})

    def _real(self, candidate: str, path: str) -> str | None:
        """``candidate``'s real path when it lies in the folder; else ``None`` and a log line.

        PERF: the folder itself is real and ``candidate`` has no dot segments, so it is real
        unless one of its own segments is a link: one ``lstat`` per segment (``realpath`` costs
        one per segment of the whole path, and more Python); links take the long way.
        """
        end = len(self.root)
        try:
            while end >= 0:
                end = candidate.find(os.sep, end + 1)
                if stat.S_ISLNK(os.lstat(candidate if end < 0 else candidate[:end]).st_mode):
                    break
            else:
                return candidate
        except OSError:
            return None
        real = os.path.realpath(candidate)
        if not real.startswith(self._prefix):
            self._out_log.log(
                log,
                logging.WARNING,
                "public folder: %s leads out of the folder; not served",
                _shown(path),
            )
            return None
        return real

    def _decode(self, path: str) -> str | None:
        """The path with each segment percent-decoded, or ``None`` (and a log line) when a
        decoded segment could reach another folder or is not a file name."""
        parts: list[str] = []
        for raw in path.split("/"):
            data = unquote_to_bytes(raw)
            if b"/" in data or b"\\" in data or b"\0" in data:
                log.info("public folder: refused %s (separator or NUL in a segment)", _shown(path))
                return None
            if data.startswith(b"."):
                return None
            parts.append(os.fsdecode(data))
        return "/".join(parts)

    def precompressed(self, real: str) -> str | None:
        """``real + ".gz"`` when it is a regular file (a link is not followed), else ``None``."""
        gz = real + ".gz"
        try:
            return gz if stat.S_ISREG(os.lstat(gz).st_mode) else None
        except OSError:
            return None


def install_public(app: Any, directory: str | os.PathLike[str] | None) -> Any:
    """Serve ``directory`` before ``app``'s routes (``None`` removes it): the name programs
    use, kept; the route itself is :meth:`plezi.App.serve_public`'s (the web layer's)."""
    return app.serve_public(directory)
