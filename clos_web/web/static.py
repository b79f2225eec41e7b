"""Static files from a directory: ``app.static("/assets", "public/")``.

- Safe paths: the request path's segments are decoded one by one; ``.``, ``..``, empty segments,
  dot-files, backslashes and NULs are refused (404), an encoded slash (``%2F``) never reaches
  here (the router refuses it in a rest variable), and the file's real path (symlinks resolved)
  must lie inside the directory's real path.
- ``Content-Type`` from the file name (``mimetypes``); ``ETag`` and ``Last-Modified``, with 304
  for ``If-None-Match`` / ``If-Modified-Since``; one ``Range`` (206, or 416), ``If-Range``.
- Files up to ``inline_limit`` bytes are read into the response; larger ones are queued as a
  :class:`~clos_web.loop.FileSegment`, sent by the loop with ``os.sendfile`` without blocking.

>>> files = StaticFiles("/tmp")
>>> files.inline_limit
65536
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat

import attrs

from ..http import NotFound, Request, Response, header_block
from ..http import write
from ..loop import Connection, FileSegment
from .responses import as_response, with_headers


@attrs.define(slots=True, eq=False)
class FileResponse:
    """An open file (or part of it) to send: written by the loop with ``os.sendfile``.

    ``headers`` excludes Content-Length, which is ``count``.
    """

    file: object
    offset: int
    count: int
    status: int = 200
    headers: tuple = ()


def _head(obj, conn: Connection) -> tuple[bytes, bool]:
    """The response head for ``obj`` (status, headers, count) and HEAD-ness. The headers go
    through :func:`header_block` like every response's: one added by a middleware from user
    input cannot split the response."""
    http = conn.protocol
    return http.head(obj.status, header_block(obj.headers), length=obj.count), http.head_only


@write.dispatch
def write_file_response(obj: FileResponse, conn: Connection):
    try:
        head, head_only = _head(obj, conn)
    except BaseException:
        obj.file.close()  # a refused header: nothing is sent, the file is not leaked
        raise
    server = conn.server
    server.enqueue(conn, head)
    if head_only or obj.count == 0:
        obj.file.close()
    else:
        server.enqueue(conn, FileSegment(obj.file, obj.offset, obj.count))


@as_response.dispatch
def as_response_file_response(result: FileResponse):
    try:
        result.file.seek(result.offset)
        body = result.file.read(result.count)
    finally:
        result.file.close()
    return Response(body, result.status, result.headers)


@with_headers.dispatch
def with_headers_file_response(result: FileResponse, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _parse_date(text: str | None):
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _byte_range(header: str, size: int):
    """``(start, end_inclusive)``, ``"unsatisfiable"``, or None to ignore the header."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: answer with the whole file
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if not first.isascii() or not last.isascii() or len(first) > 18 or len(last) > 18:
        return None
    if first == "":
        if last == "":
            return None
        n = int(last)
        if n == 0 or size == 0:  # nothing to send: "bytes 0--1/0" is no Content-Range
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None
    return (start, min(end, size - 1))


@attrs.define(slots=True, eq=False)
class StaticFiles:
    """Files under ``directory``; ``respond(path, request)`` answers for a relative path.

    ``max_age`` sets ``Cache-Control: max-age``; ``index`` is served for a directory path
    ending in ``/`` (None: 404).
    """

    directory: str = attrs.field(converter=lambda d: os.path.realpath(os.fspath(d)))
    max_age: int | None = None
    index: str | None = "index.html"
    inline_limit: int = 64 * 1024

    def _resolve(self, path: str) -> str:
        segs = path.split("/")
        if segs and segs[-1] == "" and self.index:
            segs[-1] = self.index
        for seg in segs:
            if not seg or seg[0] == "." or "\\" in seg or "\0" in seg:
                raise NotFound(reason="no such file")
        real = os.path.realpath(os.path.join(self.directory, *segs))
        if not real.startswith(self.directory + os.sep):
            raise NotFound(reason="no such file")
        # the dot-file rule holds for what a symlink inside the root points at, too
        if any(part[:1] == "." for part in real[len(self.directory) + 1:].split(os.sep)):
            raise NotFound(reason="no such file")
        return real

    def respond(self, path: str, request: Request):
        """The response for ``path`` (relative, ``/``-separated, decoded): a Response or a
        :class:`FileResponse`; raises 404.

        Only regular files are served. Anything else (a FIFO, a device, a socket) is refused
        before it is opened, and the file is opened with ``O_NONBLOCK``, so that even one
        swapped in between cannot block the loop at ``open``."""
        real = self._resolve(path)
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                raise NotFound(reason="no such file")
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise NotFound(reason="no such file") from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise NotFound(reason="no such file")
            return self._answer(f, st, real, request)
        except BaseException:
            f.close()
            raise

    def _answer(self, f, st, real: str, request: Request):
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        headers = [("ETag", etag), ("Last-Modified", _http_date(st.st_mtime)),
                   ("Accept-Ranges", "bytes")]
        if self.max_age is not None:
            headers.append(("Cache-Control", f"max-age={int(self.max_age)}"))
        h = request.headers
        inm = h.get("if-none-match")
        if inm is not None:
            tags = [t.strip() for t in inm.split(",")]
            not_modified = "*" in tags or etag in tags or "W/" + etag in tags
        else:
            since = _parse_date(h.get("if-modified-since"))
            not_modified = since is not None and int(st.st_mtime) <= since
        if not_modified and request.method in ("GET", "HEAD"):
            f.close()
            return Response(b"", status=304, headers=headers)
        ctype, encoding = mimetypes.guess_type(real)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        elif ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        headers.append(("Content-Type", ctype))
        start, count, status = 0, size, 200
        rng = h.get("range")
        if rng is not None and request.method in ("GET", "HEAD"):
            if_range = h.get("if-range")
            if if_range is None or if_range.strip() == etag:
                span = _byte_range(rng, size)
                if span == "unsatisfiable":
                    f.close()
                    return Response(b"", status=416, headers=[
                        ("Content-Range", f"bytes */{size}")])
                if span is not None:
                    start, end = span
                    count, status = end - start + 1, 206
                    headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        if count <= self.inline_limit:
            if request.method == "HEAD":
                data = b""
            else:
                f.seek(start)
                data = f.read(count)
            f.close()
            return _InlineFile(data, count, status, tuple(headers))
        return FileResponse(f, start, count, status, tuple(headers))


@attrs.define(slots=True, eq=False)
class _InlineFile:
    """A small file read into memory (HEAD: the length without the bytes)."""

    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    count: int
    status: int
    headers: tuple


@write.dispatch
def write_inline_file(obj: _InlineFile, conn: Connection):
    head, head_only = _head(obj, conn)
    conn.server.enqueue(conn, head if head_only else head + obj.data)


@as_response.dispatch
def as_response___inline_file(result: _InlineFile):
    return Response(result.data, result.status, result.headers)


@with_headers.dispatch
def with_headers_inline_file(result: _InlineFile, headers):
    return attrs.evolve(result, headers=result.headers + tuple(headers))


__all__ = ["StaticFiles", "FileResponse"]
