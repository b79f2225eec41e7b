"""The ``http`` layer: a sans-I/O HTTP/1.1 parser and the response wire format.

Bytes in, :class:`Request` objects out; no sockets here. The grammar below is RFC 9112 / RFC 9110
written as named regex pieces, each under the ABNF it encodes, so a reviewer can check it line by
line. Bad input raises an :class:`HTTPError` subclass carrying the status it implies.

The parser is incremental: feed a :class:`Buffer` whatever arrived (``buf.data += chunk``) and call
``parse(buf)``; it returns a complete :class:`Request` or ``None`` (need more bytes). It remembers
how far it has already searched for the end of the head, so byte-at-a-time input costs O(n).
"""

from __future__ import annotations

import json
import re
import time
from email.utils import formatdate
from typing import Callable
from urllib.parse import parse_qs

import attrs

from ._generic import dispatcher

# --------------------------------------------------------------------------------------------
# Errors


class HTTPError(Exception):
    """An HTTP error: a status code and a short reason phrase sent to the client.

    Raise it from a handler to answer with that status (``raise HTTPError(403, "not your
    card")``); the parser raises its subclasses for bad input.
    """

    status = 500
    reason = "Internal Server Error"

    def __init__(self, status: int | None = None, reason: str | None = None, headers=()):
        if status is not None:
            self.status = status
        self.reason = reason if reason is not None else STATUS_PHRASES.get(self.status, "Error")
        self.headers = list(headers)
        super().__init__(self.status, self.reason)

    def __str__(self):
        return f"{self.status} {self.reason}"


class BadRequest(HTTPError):
    """400: the request is malformed (bad framing, bad syntax, bad parameter)."""

    status = 400


class NotFound(HTTPError):
    """404: no route for this path."""

    status = 404


class MethodNotAllowed(HTTPError):
    """405: the path exists for other methods (``headers`` carries ``Allow``)."""

    status = 405


class RequestTimeout(HTTPError):
    """408: the request did not arrive within its deadline."""

    status = 408


class PayloadTooLarge(HTTPError):
    """413: the body is over the limit (decided from Content-Length before reading it)."""

    status = 413


class URITooLong(HTTPError):
    """414: the request line is over the limit."""

    status = 414


class HeaderFieldsTooLarge(HTTPError):
    """431: the header fields are over the limit."""

    status = 431


class NotImplementedCoding(HTTPError):
    """501: a transfer coding we do not implement."""

    status = 501


class VersionNotSupported(HTTPError):
    """505: an HTTP version other than 1.0 or 1.1."""

    status = 505


STATUS_PHRASES = {
    100: "Continue", 101: "Switching Protocols",
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request", 422: "Unprocessable Content", 429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

# --------------------------------------------------------------------------------------------
# Grammar (RFC 9110 section 5, RFC 9112 sections 3 and 5)
#
# Linear time: neighbouring pieces are separated by characters that the classes on either side
# exclude (a token stops at ':' or SP, a field value's words at SP/HTAB, a line at CR), so a
# text matches in one way only, and every quantifier is possessive (``*+``, ``++``, ``?+``): a
# failed match gives up without backtracking into a run, and no backtracking state is kept per
# repetition (with plain ``*`` that state grew with the head and the match slowed 30-fold from
# 100 KB to 1 MB of fields; it is 10-fold now).

#  OWS            = *( SP / HTAB )
OWS = r"[ \t]*+"
#  tchar          = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
#                   / "`" / "|" / "~" / DIGIT / ALPHA
#  token          = 1*tchar
token = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
#  field-name     = token
field_name = token
#  field-vchar    = VCHAR / obs-text          ; VCHAR = %x21-7E, obs-text = %x80-FF
field_vchar = r"[\x21-\x7e\x80-\xff]"
#  field-content  = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
field_content = rf"{field_vchar}++(?:[ \t]++{field_vchar}++)*+"
#  field-value    = *field-content
field_value = rf"(?:{field_content})?+"
#  field-line     = field-name ":" OWS field-value OWS     (each ended by CRLF)
field_line = rf"{field_name}:{OWS}{field_value}{OWS}\r\n"
#  method         = token
method = token
#  request-target = origin-form / absolute-form / authority-form / asterisk-form
#                   (all of them visible characters only)
request_target = r"[\x21-\x7e]++"
#  HTTP-version   = HTTP-name "/" DIGIT "." DIGIT
http_version = r"HTTP/[0-9]\.[0-9]"
#  request-line   = method SP request-target SP HTTP-version
request_line = rf"({method}) ({request_target}) ({http_version})"
#  chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#  chunk-size     = 1*HEXDIG        (we cap it at 16 digits)
#  chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  (ignored)
chunk_header = r"([0-9A-Fa-f]{1,16}+)[ \t]*+(?:;[\x09\x20-\x7e\x80-\xff]*+)?+"

_REQUEST_LINE = re.compile(request_line)
#  request head = request-line CRLF *( field-line CRLF )   (the final CRLF is cut off before)
_HEAD = re.compile(rf"{request_line}\r\n((?:{field_line})*+)")
_FIELD_LINE = re.compile(field_line)
_TOKEN = re.compile(token)
_CHUNK_HEADER = re.compile(chunk_header)
_DIGITS = re.compile(r"[0-9]{1,18}")
_FIELD_VALUE = re.compile(rf"{field_value}")
_METHOD_PREFIX = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]{0,64}")

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


@attrs.define(slots=True, eq=True)
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

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of field ``name`` (case-insensitive), or ``default``."""
        return self.headers.get(name.lower(), default)


@attrs.define(slots=True, eq=False)
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
    # the body so far: one bytearray, so a chunk costs its data and nothing more
    _body: bytearray = attrs.field(factory=bytearray)
    # framing bytes read so far (size lines, extensions, CRLFs, trailer fields), see
    # _read_chunked: bounded, so 1-byte chunks cannot make a body cost 6x its limit in CPU
    _framing: int = 0
    _trailer: int = 0  # trailer field bytes so far (bounded by max_header_bytes)
    _line_end: int = -1  # where the request line of an incomplete head ends, once found


# --------------------------------------------------------------------------------------------
# The generic functions


@dispatcher.abstract
def parse(source):
    """Parse an HTTP request.

    ``parse(buf: Buffer)`` consumes one complete request from the buffer and returns it, or
    returns ``None`` when more bytes are needed. ``parse(data: bytes)`` parses one whole request.
    Both raise an :class:`HTTPError` subclass for bad input.
    """


@dispatcher.abstract
def parse_params(query):
    """Parse a query string or urlencoded body into ``{name: [values...]}``.

    ``parse_params(None)`` is ``{}``.
    """


@parse_params.dispatch
def parse_params(query: None):
    return {}


@parse_params.dispatch
def parse_params(query: str):
    try:
        return parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=1000,
                        errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(reason=f"bad query string: {exc}") from None


@parse_params.dispatch
def parse_params(query: bytes):
    try:
        return parse_params(query.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(reason="query is not UTF-8") from None


@parse.dispatch
def parse(source: bytes):
    buf = Buffer(limits=Limits(max_body=max(len(source), 1)))
    buf.data += source
    request = _parse_buffer(buf)
    if request is None:
        raise BadRequest(reason="incomplete request")
    return request


@parse.dispatch
def parse(source: bytearray):
    return parse(bytes(source))


@parse.dispatch
def parse(source: Buffer):
    return _parse_buffer(source)


def _parse_buffer(buf: Buffer) -> Request | None:
    """The parser proper: plain function, called once per request by the connection."""
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


# --------------------------------------------------------------------------------------------
# Responses


def _check_header(item) -> tuple:
    name, value = item
    name = str(name)
    value = str(value)
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if not _FIELD_VALUE.fullmatch(value):
        raise ValueError(f"invalid header value for {name}: {value!r} (CR, LF and controls"
                         " are refused: response splitting)")
    return (name, value)


def _headers(value) -> tuple:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    return tuple(_check_header(item) for item in items)


def header_block(headers) -> bytes:
    """``Name: value\\r\\n`` lines for ``(name, value)`` pairs, each name and value checked.

    The one place header fields become bytes: every response kind's head is made of a
    block from here and :func:`response_head`, so no kind can skip the check. A CR, LF or other
    control character in a value (a middleware copying user input into a header) raises
    ``ValueError`` instead of splitting the response.

    >>> header_block([("X-A", "1")])
    b'X-A: 1\\r\\n'
    """
    if not headers:
        return b""
    return b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in _headers(headers))


def _body(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


# Content-Type values seen, checked once each: value -> (value with charset, its header line).
# Bounded: past 256 entries (a handler passing user input as a type) it starts over.
_CONTENT_TYPES: dict = {}


def _content_type_line(value: str) -> tuple:
    known = _CONTENT_TYPES.get(value)
    if known is None:
        full = value
        if full.startswith("text/") and "charset" not in full:
            full += "; charset=utf-8"
        known = (full, header_block((("Content-Type", full),)))
        if len(_CONTENT_TYPES) >= 256:
            _CONTENT_TYPES.clear()
        _CONTENT_TYPES[value] = _CONTENT_TYPES[full] = known
    return known


def _content_type(value):
    if value is None:
        return None
    return _content_type_line(value)[0]


def _forget_wire(instance, attribute, value):
    object.__setattr__(instance, "_wire", None)
    return value


@attrs.define(slots=True, eq=False, on_setattr=[attrs.setters.convert, _forget_wire])
class Response:
    """A response: body bytes, status, header fields and content type.

    ``Response("hi", content_type="text/plain")`` sends ``text/plain; charset=utf-8`` and the
    UTF-8 bytes. Header names and values are checked: a CR or LF in a value raises
    ``ValueError`` (no response splitting). ``headers`` is a tuple of ``(name, value)``; a dict
    or list is accepted and converted. The encoded header block is cached, so a response built
    once and returned many times costs one join per request.
    """

    body: bytes = attrs.field(default=b"", converter=_body)
    status: int = 200
    headers: tuple = attrs.field(default=(), converter=_headers)
    content_type: str | None = attrs.field(default=None, converter=_content_type)
    _wire: bytes | None = attrs.field(default=None, init=False, repr=False)


_STATUS_LINES: dict = {}


def status_line(status: int) -> bytes:
    """``b"HTTP/1.1 200 OK\\r\\n"``, cached per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if status.__class__ is not int or not 100 <= status <= 999:
            raise ValueError(f"bad status {status!r}")
        line = f"HTTP/1.1 {status} {STATUS_PHRASES.get(status, 'Unknown')}\r\n".encode()
        _STATUS_LINES[status] = line  # bounded: at most 900 statuses
    return line


_date = [0, b""]


def date_line() -> bytes:
    """``b"Date: ...\\r\\n"`` (IMF-fixdate), formatted at most once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[1] = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        _date[0] = now
    return _date[1]


def _has_body(status: int) -> bool:
    return status >= 200 and status != 204 and status != 304


_SERVER = b"Server: clos_web\r\n"
_CLOSE = b"Connection: close\r\n\r\n"
_KEEP_ALIVE_10 = b"Connection: keep-alive\r\n\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"


def head_end(keep_alive: bool, http10: bool) -> bytes:
    """The end of a response head: the ``Connection`` field where one is due, then CRLF."""
    if keep_alive:
        return _KEEP_ALIVE_10 if http10 else b"\r\n"
    return _CLOSE


def response_head(status: int, block: bytes = b"", *, length: int | None = None,
                  chunked: bool = False, keep_alive: bool = True, http10: bool = False) -> bytes:
    """The one writer of response heads: status line, ``Date``, ``Server``, the header
    ``block`` (made by :func:`header_block`, which checked it), the framing field and the
    ``Connection`` field, then the blank line.

    ``length`` is sent as ``Content-Length`` where the status allows a body; ``chunked`` sends
    ``Transfer-Encoding: chunked``; neither means the body ends when the connection closes (an
    HTTP/1.0 stream). A 1xx interim response is its status line alone.

    >>> response_head(204, keep_alive=False)[-19:]
    b'Connection: close\\r\\n\\r\\n'
    >>> response_head(100)
    b'HTTP/1.1 100 Continue\\r\\n\\r\\n'
    """
    if status < 200:
        return status_line(status) + b"\r\n"
    return _head(status, block + _framing_field(status, length, chunked), keep_alive, http10)


def _framing_field(status: int, length: int | None, chunked: bool) -> bytes:
    """The framing field of a head: ``Content-Length``, ``Transfer-Encoding``, or none."""
    if not _has_body(status):
        return b""
    if chunked:
        return _CHUNKED
    if length is not None:
        return b"Content-Length: %d\r\n" % length
    return b""


def _head(status: int, fields: bytes, keep_alive: bool, http10: bool) -> bytes:
    """:func:`response_head`'s assembly, for fields (block and framing) already made by it:
    ``encode_response`` keeps a Response's fields and only adds what changes per request."""
    return b"".join((status_line(status), date_line(), _SERVER, fields,
                     head_end(keep_alive, http10)))


_NOSNIFF = header_block([("X-Content-Type-Options", "nosniff")])


def _wire(response: Response) -> bytes:
    """The header fields of ``response`` (Content-Type first, then its headers, then the
    framing), made as :func:`response_head` makes them and cached on the response.

    A text error body (status 400 and up) may echo client input, so it gets
    ``X-Content-Type-Options: nosniff``: no browser renders it as HTML.
    """
    block = header_block(response.headers)
    ctype = response.content_type
    if ctype is not None:
        block = _content_type_line(ctype)[1] + block
        if response.status >= 400 and ctype.startswith("text/") \
                and b"\nx-content-type-options:" not in b"\n" + block.lower():
            block += _NOSNIFF
    wire = block + _framing_field(response.status, len(response.body), False)
    object.__setattr__(response, "_wire", wire)
    return wire


def encode_response(response: Response, head_only: bool = False, keep_alive: bool = True,
                    http10: bool = False) -> bytes:
    """Serialise a response to bytes: its head (as :func:`response_head` writes it, the
    fields cached on the response), then the body."""
    wire = response._wire
    if wire is None:
        wire = _wire(response)
    status = response.status
    # _head's join, inlined: this is every Response's hot path (one call less per request)
    head = b"".join((status_line(status), date_line(), _SERVER, wire,
                     head_end(keep_alive, http10)))
    if head_only or not _has_body(status):
        return head
    return head + response.body


def json_bytes(value) -> bytes:
    """Compact UTF-8 JSON, as handlers' dict/list results are sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


__all__ = [
    "HTTPError", "BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout",
    "PayloadTooLarge", "URITooLong", "HeaderFieldsTooLarge", "NotImplementedCoding",
    "VersionNotSupported", "Limits", "Request", "Buffer", "Response", "parse", "parse_params",
    "encode_response", "status_line", "date_line", "json_bytes", "STATUS_PHRASES",
    "header_block", "response_head",
]
