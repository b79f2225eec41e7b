"""The response wire format: :class:`Response` and the one head writer.

Every response kind's head is written by :func:`response_head` from header fields that
:func:`header_block` checked, so no kind can skip the check (no response splitting).
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import attrs

from .errors import STATUS_PHRASES
from .grammar import _FIELD_VALUE, _TOKEN

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
    if not value:  # None, or no fields: nothing to check
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
    object.__setattr__(instance, "_closes", False)
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

    body: bytes = attrs.field(default=b"", converter=_body,
                              repr=lambda body: f"<{len(body)} bytes>")
    status: int = 200
    headers: tuple = attrs.field(default=(), converter=_headers,
                                 repr=lambda fields: f"<{len(fields)} fields>")
    content_type: str | None = attrs.field(default=None, converter=_content_type)
    _wire: bytes | None = attrs.field(default=None, init=False, repr=False)
    _closes: bool = attrs.field(default=False, init=False, repr=False)  # Connection: close


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

    >>> response_head(204, keep_alive=False)[-21:]
    b'Connection: close\\r\\n\\r\\n'
    >>> response_head(100)
    b'HTTP/1.1 100 Continue\\r\\n\\r\\n'
    """
    if status < 200:  # an interim response: its status line and its own fields alone
        return status_line(status) + block + b"\r\n"
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


class FixedHead:
    """The head of answers whose fields never change, made by the one head writer
    (``response_head(status, block, chunked=chunked)``) less its final CRLF, ``tail`` after
    it: :meth:`current` makes it again only when the ``Date`` line changes (once a second),
    so an answer costs a call and a comparison. The caller ends the head with
    ``HTTPConnection.end_of_head`` (the ``Connection`` field where one is due, then CRLF).
    PlainText's answers and SSE streams' heads use one each.

    >>> head = FixedHead(200, header_block([("Content-Type", "text/plain")]),
    ...                  tail=b"Content-Length: ")
    >>> made = head.current()
    >>> made.startswith(b"HTTP/1.1 200 OK\\r\\nDate: "), made.endswith(b"Content-Length: ")
    (True, True)
    """

    __slots__ = ("status", "block", "chunked", "tail", "_made")

    def __init__(self, status: int, block: bytes = b"", *, chunked: bool = False,
                 tail: bytes = b""):
        self.status, self.block, self.chunked, self.tail = status, block, chunked, tail
        self._made = (None, b"")  # (the Date line it was made with, the head)

    def current(self) -> bytes:
        """The head for this second."""
        date = date_line()
        made = self._made
        if made[0] is not date:  # a new second (were it the same Date, only slower)
            made = self._made = (date, response_head(self.status, self.block,
                                                     chunked=self.chunked)[:-2] + self.tail)
        return made[1]


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
    block, closes = connection_field(block)
    wire = block + _framing_field(response.status, len(response.body), False)
    object.__setattr__(response, "_wire", wire)
    object.__setattr__(response, "_closes", closes)
    return wire


def connection_field(block: bytes) -> tuple[bytes, bool]:
    """Header fields less their ``Connection`` lines (the head writer writes that field), and
    whether those lines said ``close`` (then the connection closes after this answer)."""
    if b"onnection:" not in block and b"ONNECTION:" not in block:
        return block, False
    kept, closes = [], False
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            closes = closes or any(t.strip().lower() == b"close" for t in value.split(b","))
        else:
            kept.append(line)
    return b"\r\n".join(kept), closes


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
                     head_end(keep_alive and not response._closes, http10)))
    if head_only or not _has_body(status):
        return head
    return head + response.body


def json_bytes(value) -> bytes:
    """Compact UTF-8 JSON, as handlers' dict/list results are sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


__all__ = [
    "Response", "header_block", "response_head", "encode_response", "status_line", "date_line",
    "head_end", "json_bytes", "connection_field", "FixedHead",
]
