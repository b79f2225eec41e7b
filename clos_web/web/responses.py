"""What handlers return, beyond the loop's own ``write`` methods.

The loop writes a :class:`~clos_web.http.Response`, ``str`` (text/html), ``bytes``, a ``dict`` or
``list`` (JSON) and ``None`` (204). This module adds attrs instances (JSON), the generic function
:func:`as_response` (a result as a Response, so middleware can add headers), :func:`with_headers`
and :func:`redirect`.
"""

from __future__ import annotations

import enum

import attrs

from ..clos import generic
from ..http import Response, date_line, header_block, json_bytes, response_head
from ..http import send_response, write
from ..loop import Connection


def _jsonable(obj):
    if attrs.has(type(obj)):
        return attrs.asdict(obj, value_serializer=_serialize)
    return obj


def _serialize(inst, field, value):
    if isinstance(value, enum.Enum):
        return value.value
    return value


@generic
def as_response(result):
    """A handler's result as a :class:`Response` (``str`` is text/html, ``bytes``
    application/octet-stream, dict/list/attrs instances JSON, ``None`` 204).

    Add a method for a new result class so middleware can decorate it.

    >>> as_response({"a": 1}).body
    b'{"a":1}'
    """


@as_response.dispatch
def as_response_response(result: Response):
    return result


@as_response.dispatch
def as_response_str(result: str):
    return Response(result, content_type="text/html")


@as_response.dispatch
def as_response_bytes(result: bytes):
    return Response(result, content_type="application/octet-stream")


@as_response.dispatch
def as_response_dict_list(result: dict | list):
    return Response(json_bytes(result), content_type="application/json")


@as_response.dispatch
def as_response_none(result: None):
    return Response(b"", status=204)


@as_response.dispatch
def as_response_object(result: object):
    if attrs.has(type(result)):
        return Response(json_bytes(_jsonable(result)), content_type="application/json")
    raise TypeError(f"a handler returned {type(result).__name__}: add a write method for it")


@write.dispatch
def write_object(obj: object, conn: Connection):
    # The fallback: attrs instances are sent as JSON; anything else is a programming error.
    send_response(as_response(obj), conn)


@generic
def with_headers(result, headers):
    """``result`` with extra header fields (a list of ``(name, value)``), without changing the
    original (a shared pre-built Response stays as it was).

    >>> with_headers("hi", [("X-A", "1")]).headers
    (('X-A', '1'),)
    """


@with_headers.dispatch
def with_headers_object(result: object, headers):
    r = as_response(result)
    return Response(r.body, r.status, r.headers + tuple(headers), r.content_type)


class PlainText(str):
    """A ``str`` sent as ``text/plain; charset=utf-8`` (a plain ``str`` is text/html).

    Cheaper than building a :class:`Response`; also an example of a response kind added by a
    ``write`` method.

    >>> PlainText("42").upper()
    '42'
    """

    __slots__ = ()


# PlainText's head up to its length, made by the one head writer once a second (a new Date):
# response_head for a 200 with this Content-Type (checked once, here), less its final CRLF.
_TEXT_TYPE = header_block([("Content-Type", "text/plain; charset=utf-8")])
_text_head = [b"", b""]  # [the Date line it was made with, the head up to "Content-Length: "]


@write.dispatch
def write_plain_text(obj: PlainText, conn: Connection):
    body = obj.encode("utf-8")
    date = date_line()
    if _text_head[0] is not date:  # a new second (were it the same Date, only slower)
        _text_head[:] = date, response_head(200, _TEXT_TYPE)[:-2] + b"Content-Length: "
    http = conn.protocol
    end = http.end_of_head(200)
    conn.server.enqueue(conn, b"%s%d\r\n%s%s" % (_text_head[1], len(body), end,
                                                   b"" if http.head_only else body))


@as_response.dispatch
def as_response_plain_text(result: PlainText):
    return Response(str(result), content_type="text/plain")


def redirect(location: str, status: int = 303) -> Response:
    """A redirect response (303 See Other by default; 301, 302, 307, 308 also make sense).

    >>> redirect("/lobby").headers
    (('Location', '/lobby'),)
    """
    return Response(b"", status=status, headers=[("Location", location)])


__all__ = ["as_response", "with_headers", "redirect", "PlainText"]
