"""The incremental, sans-I/O HTTP/1.1 request parser.

Bytes in, :class:`Request` objects out; no sockets here. Bad input raises an
:class:`~clos_web.http.errors.HTTPError` subclass carrying the status it implies.

The parser is incremental: feed a :class:`Buffer` whatever arrived (``buf.data += chunk``) and call
``parse(buf)``; it returns a complete :class:`Request` or ``None`` (need more bytes). It remembers
how far it has already searched for the end of the head, so byte-at-a-time input costs O(n).
"""

from __future__ import annotations

import re
from typing import Any, Callable
from urllib.parse import parse_qs

import attrs

from ..clos import generic
from .errors import (
    BadRequest, HTTPError, HeaderFieldsTooLarge, NotImplementedCoding, PayloadTooLarge,
    URITooLong, VersionNotSupported,
)
from .grammar import (
    _CHUNK_HEADER, _DIGITS, _FIELD_LINE, _HEAD, _METHOD_PREFIX, _REQUEST_LINE, _TOKEN,
    request_target,
)

# --------------------------------------------------------------------------------------------
# Data


@attrs.define(slots=True)
class Limits:
    """Per-server limits. Sizes in bytes, times in seconds."""

    max_request_line: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    max_body: int = 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 60.0
    output_cap: int = 1024 * 1024
    max_connections: int | None = None  # None: just below the process's descriptor limit
    linger_timeout: float = 2.0
    # connections at once from one client address (None: no cap). Off by default: many users
    # may share an address (NAT, a proxy); turn it on where each client has its own.
    max_connections_per_client: int | None = None
    # a stream (SSE) that delivers no event for this long is ended cleanly; its client
    # reconnects and resumes (None: streams have no idle deadline)
    stream_idle_timeout: float | None = None


@attrs.define(slots=True, eq=True, repr=False)
class Request:
    """One parsed HTTP request.

    ``headers`` maps lower-case field names to values (repeated fields joined with ``", "``);
    ``raw_headers`` keeps every field line as received, in order. ``path`` and ``query`` are the
    target's parts, still percent-encoded. ``body`` is bytes.
    """

    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: dict = attrs.field(factory=dict)
    raw_headers: list = attrs.field(factory=list)
    body: bytes = b""
    keep_alive: bool = True
    path: str = "/"
    query: str = ""
    expect_continue: bool = False
    content_length: int | None = None
    chunked: bool = False
    route: Any = None  # the route that answers it, once the app has found it (metrics, logs)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of field ``name`` (case-insensitive), or ``default``."""
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        """Short whatever the request holds: the method and target clipped, sizes for the
        rest.

        >>> Request("POST", "/echo", headers={"host": "t"}, body=b"x" * 100_000)
        <Request POST /echo HTTP/1.1, 1 header field, 100000 body bytes>
        """
        n = len(self.headers)
        return (f"<Request {_clip(self.method, 20)} {_clip(self.target, 100)} "
                f"{_clip(self.version, 20)}, {n} header field{'s' * (n != 1)}, "
                f"{len(self.body)} body bytes>")


def _clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters (the last one an ellipsis when cut), for reprs."""
    return text if len(text) <= n else text[:n - 1] + "\u2026"


@attrs.define(slots=True, eq=False, repr=False)
class Buffer:
    """What one connection has received and not yet parsed, and where the parser stands.

    ``data`` holds only unparsed bytes. ``pending`` is a request whose head is parsed and whose
    body is still arriving; ``continue_needed`` tells the connection to send ``100 Continue``.
    ``body_limit`` may be set to a function ``Request -> int`` deciding the body limit per route,
    called once the head of a request with a body is parsed, before any of the body is read; it
    may raise an :class:`HTTPError` to refuse the request from its head (the error then carries
    the request as ``err.request``).
    """

    limits: Limits = attrs.field(factory=Limits)
    data: bytearray = attrs.field(factory=bytearray)
    scanned: int = 0
    pending: Request | None = None
    continue_needed: bool = False
    body_limit: Callable | None = None
    _max_body: int = 0
    # chunked state: "size", "data", "crlf", "trailer"
    _chunk_state: str = "size"
    _chunk_left: int = 0
    # the body so far: one bytearray, so a chunk costs its data and nothing more (made when a
    # chunked body begins: a connection that never sends one does not carry an empty one)
    _body: bytearray | None = None
    # framing bytes read so far (size lines, extensions, CRLFs, trailer fields), see
    # _read_chunked: bounded, so 1-byte chunks cannot make a body cost 6x its limit in CPU
    _framing: int = 0
    _trailer: int = 0  # trailer field bytes so far (bounded by max_header_bytes)
    _line_end: int = -1  # where the request line of an incomplete head ends, once found

    def __repr__(self) -> str:
        """Sizes, not contents.

        >>> buf = Buffer(); buf.data += b"GET / HT"
        >>> buf
        <Buffer 8 bytes unparsed>
        """
        pending = "" if self.pending is None else f", pending {self.pending!r}"
        body = f", {len(self._body)} body bytes read" if self._body else ""
        return f"<Buffer {len(self.data)} bytes unparsed{pending}{body}>"


# --------------------------------------------------------------------------------------------
# The generic functions


@generic
def parse(source):
    """Parse an HTTP request.

    ``parse(buf: Buffer)`` consumes one complete request from the buffer and returns it, or
    returns ``None`` when more bytes are needed. ``parse(data: bytes)`` parses one whole request.
    Both raise an :class:`HTTPError` subclass for bad input.
    """


@generic
def parse_params(query):
    """Parse a query string or urlencoded body into ``{name: [values...]}``.

    ``parse_params(None)`` is ``{}``.
    """


@parse_params.dispatch
def parse_params_none(query: None):
    return {}


@parse_params.dispatch
def parse_params_str(query: str):
    try:
        return parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=1000,
                        errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(reason=f"bad query string: {exc}") from None


@parse_params.dispatch
def parse_params_bytes(query: bytes):
    try:
        return parse_params(query.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(reason="query is not UTF-8") from None


@parse.dispatch
def parse_bytes(source: bytes):
    buf = Buffer(limits=Limits(max_body=max(len(source), 1)))
    buf.data += source
    request = parse_buffer(buf)
    if request is None:
        raise BadRequest(reason="incomplete request")
    return request


@parse.dispatch
def parse_bytearray(source: bytearray):
    return parse(bytes(source))


@parse.dispatch
def parse_buffer(buf: Buffer):
    """The parser proper: what the connection calls for each request."""
    request = buf.pending
    if request is None:
        request = _parse_head(buf)
        if request is None:
            return None
        if request.chunked or request.content_length:
            buf.pending = request
            if request.expect_continue:
                buf.continue_needed = True
        else:
            return request
    if request.chunked:
        done = _read_chunked(buf, request)
    else:
        n = request.content_length
        data = buf.data
        if len(data) < n:
            return None
        request.body = bytes(data[:n])
        del data[:n]
        done = True
    if not done:
        return None
    buf.pending = None
    buf.continue_needed = False
    return request


def _parse_head(buf: Buffer):
    data = buf.data
    limits = buf.limits
    end = data.find(b"\r\n\r\n", buf.scanned)
    if end < 0:
        _check_incomplete_head(buf)
        return None
    buf.scanned = 0
    buf._line_end = -1
    if data.startswith(b"\r\n"):
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
        i = 0
        while data.startswith(b"\r\n", i):
            i += 2
        del data[:i]
        return _parse_head(buf) if data else None
    head = data[: end + 2].decode("latin-1")
    if end + 4 == len(data):
        data.clear()
    else:
        del data[: end + 4]
    m = _HEAD.fullmatch(head)
    if m is None:
        _head_problem(head, limits)  # raises the precise error
    method, target, version, fields = m.groups()
    if len(head) - len(fields) > limits.max_request_line + 2:
        raise URITooLong(reason="request line too long")
    if len(fields) > limits.max_header_bytes:
        raise HeaderFieldsTooLarge(reason="header fields too large")
    if version != "HTTP/1.1" and version != "HTTP/1.0":
        raise VersionNotSupported(reason=f"{version} is not supported")
    headers = {}
    raw = []
    special = None
    repeated = None  # name -> its values, joined once at the end (not once per line: O(n^2))
    if fields:
        for line in fields[:-2].split("\r\n"):
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            lname = name.lower()
            raw.append((name, value))
            if lname in headers:
                if lname == "host":
                    raise BadRequest(reason="repeated Host")
                if repeated is None:
                    repeated = {}
                values = repeated.get(lname)
                if values is None:
                    repeated[lname] = [headers[lname], value]
                else:
                    values.append(value)
            else:
                headers[lname] = value
            if lname in _FRAMING:
                if special is None:
                    special = []
                special.append((lname, value))
        if repeated is not None:
            for lname, values in repeated.items():
                headers[lname] = ("; " if lname == "cookie" else ", ").join(values)
    if "host" not in headers and version == "HTTP/1.1":
        raise BadRequest(reason="missing Host")
    q = target.find("?")
    if q >= 0:
        request = Request(method, target, version, headers, raw, b"", True, target[:q],
                          target[q + 1:])
    else:
        request = Request(method, target, version, headers, raw, b"", True, target)
    if target[0] != "/":
        _absolute_target(request)
    connection = headers.get("connection")
    if connection is not None:
        if version == "HTTP/1.1":
            request.keep_alive = not _has_token(connection, "close")
        else:
            request.keep_alive = _has_token(connection, "keep-alive") \
                and not _has_token(connection, "close")
    elif version == "HTTP/1.0":
        request.keep_alive = False
    if special is not None:
        _framing(buf, request, special)
    return request


# Header fields that decide how the body is framed (RFC 9112 section 6).
_FRAMING = frozenset(("content-length", "transfer-encoding", "expect"))


def _framing(buf: Buffer, request: Request, fields: list) -> None:
    """Decide the body's framing from Content-Length / Transfer-Encoding, and Expect."""
    lengths = [v for n, v in fields if n == "content-length"]
    codings = [v for n, v in fields if n == "transfer-encoding"]
    if codings:
        if lengths:
            raise BadRequest(reason="Content-Length with Transfer-Encoding")
        if request.version == "HTTP/1.0":
            raise BadRequest(reason="Transfer-Encoding in HTTP/1.0")
        te = ",".join(codings)
        names = [c.strip(" \t").lower() for c in te.split(",")]
        if names != ["chunked"]:
            if any(c != "chunked" for c in names if c):
                raise NotImplementedCoding(reason=f"transfer coding not implemented: {te}")
            raise BadRequest(reason=f"bad Transfer-Encoding: {te}")
        request.chunked = True
        buf._chunk_state = "size"
        buf._body = bytearray()
        buf._framing = 0
        buf._trailer = 0
    elif lengths:
        values = {v.strip(" \t") for item in lengths for v in item.split(",")}
        if len(values) != 1:
            raise BadRequest(reason="conflicting Content-Length")
        (value,) = values
        if not _DIGITS.fullmatch(value):
            if value.isdigit() and value.isascii():
                raise PayloadTooLarge(reason="body too large")
            raise BadRequest(reason="invalid Content-Length")
        request.content_length = int(value)
    if not (request.chunked or request.content_length):
        return
    expect = request.headers.get("expect")
    if expect is not None and request.version == "HTTP/1.1" and expect.lower() == "100-continue":
        request.expect_continue = True
    if buf.body_limit is None:
        limit = buf.limits.max_body
    else:
        try:
            limit = buf.body_limit(request)
        except HTTPError as err:
            err.request = request  # refused from its head alone: the answer may depend on it
            raise
    buf._max_body = limit
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(reason=f"body over {limit} bytes")


def _check_incomplete_head(buf: Buffer) -> None:
    """No blank line yet: refuse early what can never become a valid head; remember progress."""
    data = buf.data
    limits = buf.limits
    if data.startswith(b"\r\n"):  # empty lines before the request line are ignored
        i = 0
        while data.startswith(b"\r\n", i):
            i += 2
        del data[:i]
        buf.scanned = 0
        buf._line_end = -1
    n = len(data)
    # The first bytes show what cannot be HTTP (a TLS ClientHello starts 0x16 0x03): refuse it
    # now, as nginx does, not when the header deadline passes. A request starts with a method
    # (a token) and a space; only the first 64 bytes are looked at.
    m = _METHOD_PREFIX.match(data)
    end = m.end()
    if end < n and (end == 0 or data[end] != 0x20) and data != b"\r":  # (half an empty line)
        raise BadRequest(reason="not an HTTP request")
    line_end = buf._line_end  # found once, then remembered: a slow header costs O(n)
    if line_end < 0:
        line_end = buf._line_end = data.find(b"\r\n", max(0, buf.scanned - 1),
                                             limits.max_request_line + 2)
    if line_end < 0:
        if n > limits.max_request_line + 2:
            raise URITooLong(reason="request line too long")
    elif n - line_end > limits.max_header_bytes:
        raise HeaderFieldsTooLarge(reason="header fields too large")
    if data.find(b"\n\n", max(0, buf.scanned - 1)) >= 0 or data.startswith(b"\n"):
        raise BadRequest(reason="bare LF line ending")
    buf.scanned = max(0, n - 3)


def _absolute_target(request: Request) -> None:
    target = request.target
    if target == "*":
        if request.method != "OPTIONS":
            raise BadRequest(reason="asterisk-form only with OPTIONS")
        request.path = "*"
        return
    lower = target[:8].lower()
    if lower.startswith("http://") or lower.startswith("https://"):
        rest = target[target.index("//") + 2:]
        slash = rest.find("/")
        query = rest.find("?")
        if slash < 0 or 0 <= query < slash:  # no path: "http://host" or "http://host?q"
            path_query = "/" + (rest[query:] if query >= 0 else "")
        else:
            path_query = rest[slash:]
        q = path_query.find("?")
        request.path = path_query if q < 0 else path_query[:q]
        request.query = "" if q < 0 else path_query[q + 1:]
        return
    if request.method == "CONNECT":
        request.path = target
        return
    raise BadRequest(reason="bad request target")


def _has_token(value: str, tok: str) -> bool:
    return any(t.strip(" \t").lower() == tok for t in value.split(","))


def _head_problem(head: str, limits: Limits):
    """Raise the precise error for a head that did not match the grammar."""
    line_end = head.find("\r\n")
    if line_end > limits.max_request_line:
        raise URITooLong(reason="request line too long")
    if len(head) - line_end - 2 > limits.max_header_bytes:
        raise HeaderFieldsTooLarge(reason="header fields too large")
    m = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if m is None:
        raise BadRequest(reason=_request_line_problem(head[:line_end]))
    if m.group(3) not in ("HTTP/1.1", "HTTP/1.0"):
        raise VersionNotSupported(reason=f"{m.group(3)} is not supported")
    raise BadRequest(reason=_field_problem(head[line_end + 2:]))


def _request_line_problem(line: str) -> str:
    parts = line.split(" ")
    if len(parts) != 3:
        return "malformed request line"
    if not _TOKEN.fullmatch(parts[0]):
        return "bad method"
    if not re.fullmatch(request_target, parts[1]):
        return "bad request target"
    return "bad HTTP version"


def _field_problem(block: str) -> str:
    for line in block.split("\r\n")[:-1]:
        if line[:1] in (" ", "\t"):
            return "obsolete line folding"
        if _FIELD_LINE.fullmatch(line + "\r\n"):
            continue
        name, colon, _ = line.partition(":")
        if not colon:
            return "header line without colon"
        if name.rstrip(" \t") != name:
            return "whitespace before colon"
        if not _TOKEN.fullmatch(name):
            return "bad header name"
        return "bad header value"
    return "bad header fields"


_MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions, without CRLF
# What chunk framing may add to a body beyond its data: size lines, extensions, CRLFs and
# trailer fields together. A sane client spends ~10 bytes per chunk of kilobytes; 1-byte chunks
# spend 5 per byte. Past this allowance (or past the body limit, if larger) the answer is 413.
_FRAMING_ALLOWANCE = 64 * 1024


def _read_chunked(buf: Buffer, request: Request) -> bool:
    """Decode as much of a chunked body as has arrived; True when the message is complete.

    The data goes into one bytearray (no object per chunk); the framing is counted, not kept,
    and bounded by ``max(body limit, _FRAMING_ALLOWANCE)``, so a body of 1-byte chunks costs
    its data in memory and a bounded amount of work.
    """
    data = buf.data
    limit = buf._max_body
    body = buf._body
    framing_cap = max(limit, _FRAMING_ALLOWANCE)
    while True:
        state = buf._chunk_state
        if state == "size":
            eol = data.find(b"\r\n", 0, _MAX_CHUNK_LINE + 2)
            if eol < 0:
                if len(data) > _MAX_CHUNK_LINE:
                    raise BadRequest(reason="chunk header too long")
                return False
            line = data[:eol].decode("latin-1")
            m = _CHUNK_HEADER.fullmatch(line)
            if m is None:
                raise BadRequest(reason="bad chunk header")
            size = int(m.group(1), 16)
            del data[: eol + 2]
            buf._framing += eol + 4  # the size line and the CRLF after the data
            if buf._framing > framing_cap:
                raise PayloadTooLarge(reason="chunk framing too large (chunks too small)")
            if size == 0:
                buf._chunk_state = "trailer"
                continue
            if len(body) + size > limit:
                raise PayloadTooLarge(reason=f"body over {limit} bytes")
            buf._chunk_left = size
            buf._chunk_state = "data"
        elif state == "data":
            if not data:
                return False
            take = min(buf._chunk_left, len(data))
            body += data[:take] if take < len(data) else data
            del data[:take]
            buf._chunk_left -= take
            if buf._chunk_left:
                return False
            buf._chunk_state = "crlf"
        elif state == "crlf":
            if len(data) < 2:
                return False
            if data[:2] != b"\r\n":
                raise BadRequest(reason="chunk data not followed by CRLF")
            del data[:2]
            buf._chunk_state = "size"
        else:  # trailer section: field lines until an empty line; accepted and ignored
            # (buf.scanned remembers how far a line end was searched for: byte-at-a-time
            # trailers cost O(n), not O(n^2))
            eol = data.find(b"\r\n", buf.scanned)
            if eol < 0:
                if buf._trailer + len(data) > buf.limits.max_header_bytes:
                    raise HeaderFieldsTooLarge(reason="trailer fields too large")
                buf.scanned = max(0, len(data) - 1)
                return False
            buf.scanned = 0
            if eol == 0:
                del data[:2]
                request.body = bytes(body)
                buf._body = bytearray()
                return True
            line = data[: eol + 2].decode("latin-1")
            if not _FIELD_LINE.fullmatch(line):
                raise BadRequest(reason="bad trailer field")
            buf._trailer += eol + 2
            if buf._trailer > buf.limits.max_header_bytes:
                raise HeaderFieldsTooLarge(reason="trailer fields too large")
            del data[: eol + 2]


__all__ = ["Limits", "Request", "Buffer", "parse", "parse_params"]
