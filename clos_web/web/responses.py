"""What handlers return, beyond the loop's own ``write`` methods.

The loop writes a :class:`~clos_web.http.Response`, ``str`` (text/html), ``bytes`` and ``None``
(204). This module adds dict, list and attrs instances (JSON, through :func:`to_json`), the
generic function :func:`as_response` (a result as a Response, so middleware can add headers),
:func:`with_headers` and :func:`redirect`.

**One JSON encoding.** A handler's JSON result and a published event (SSE, long-poll) are
encoded by :func:`json_text`: compact, UTF-8, and every value ``json`` cannot encode itself goes
through the generic function :func:`to_json`:

=============================  ================================================================
an attrs instance              an object of its fields (``attrs.asdict``'s names)
an ``Enum`` member             its value (``Color.RED`` is ``1``)
``date``, ``datetime``,        ISO 8601 text (``"2024-02-29"``, ``"2024-02-29T13:45:00+00:00"``;
``time``                       a naive datetime stays naive)
``UUID``                       its text, ``"12345678-1234-5678-1234-567812345678"``
``Decimal``                    its text, every digit kept (``"19.90"``; a JSON number would go
                               through a float)
``set``, ``frozenset``         an array, in the set's iteration order
``bytes``                      refused: text or binary? decode them, or base64-encode them
anything else                  ``TypeError`` naming the class: add a ``to_json`` method
=============================  ================================================================

>>> json_text({"day": datetime.date(2024, 2, 29), "tags": {"new"}})
'{"day":"2024-02-29","tags":["new"]}'
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import types
import uuid

import attrs

from ..clos import generic
from ..http import Response, header_block, send_response, write
from ..http.head import FixedHead
from ..loop import Connection

# --------------------------------------------------------------------------------------------
# JSON


@generic
def to_json(value):
    """``value`` as something ``json`` encodes: the ``default`` hook of every JSON answer and
    published event (:func:`json_text`). It converts one level; ``json`` calls it again for
    whatever the result holds (an attrs instance's fields, a set's items). Add a method to
    encode a class of your own::

        @to_json.dispatch
        def to_json_money(value: Money):
            return {"amount": str(value.amount), "currency": value.currency}

    >>> to_json(datetime.date(2024, 2, 29))
    '2024-02-29'
    """


@to_json.dispatch
def to_json_plain(value: str | int | float | bool | None | dict | list | tuple):
    return value  # JSON already (json never asks: for a direct call)


@to_json.dispatch
def to_json_object(value: object):
    if attrs.has(type(value)):
        return {a.name: getattr(value, a.name) for a in attrs.fields(type(value))}
    raise TypeError(f"a {type(value).__qualname__} is not JSON: add a to_json method for "
                    f"{type(value).__module__}.{type(value).__qualname__}")


@to_json.dispatch
def to_json_enum(value: enum.Enum):
    return value.value


@to_json.dispatch
def to_json_date_time(value: datetime.date | datetime.time):
    return value.isoformat()


@to_json.dispatch
def to_json_uuid(value: uuid.UUID):
    return str(value)


@to_json.dispatch
def to_json_decimal(value: decimal.Decimal):
    return str(value)


@to_json.dispatch
def to_json_set(value: set | frozenset):
    return list(value)


@to_json.dispatch
def to_json_bytes(value: bytes | bytearray | memoryview):
    raise TypeError("bytes are not JSON: decode them (text) or base64-encode them (binary) "
                    "first, or add a to_json method for bytes")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=to_json)

# json's C encoder made once, as JSONEncoder.encode would make it on every call (that costs
# more than encoding a small dict): compact separators, non-ASCII as it is, to_json for the
# rest. Without circular-reference markers, so one encoder serves every thread; a cycle
# raises RecursionError instead of ValueError (an error either way).
try:
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_str
except ImportError:  # an interpreter without json's C accelerator
    _c_make_encoder = None
_C_ENCODE = (_c_make_encoder(None, to_json, _encode_str, None, ":", ",", False, False, True)
             if _c_make_encoder is not None else None)


def json_text(value) -> str:
    """``value`` as compact JSON text, non-ASCII characters as they are, values ``json`` does
    not know through :func:`to_json`. Raises ``TypeError`` for a value no method converts.

    >>> json_text({"a": [1, "é"]})
    '{"a":[1,"é"]}'
    """
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(value, 0))
    return _ENCODER.encode(value)


def json_body(value) -> bytes:
    """:func:`json_text` as UTF-8 bytes: the body of a JSON answer."""
    return json_text(value).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Results as responses


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
    return Response(json_body(result), content_type="application/json")


@as_response.dispatch
def as_response_none(result: None):
    return Response(b"", status=204)


@as_response.dispatch
def as_response_object(result: object):
    if attrs.has(type(result)):
        return Response(json_body(result), content_type="application/json")
    raise TypeError(f"a handler returned {type(result).__name__}: add a write method for it")


@as_response.dispatch
def as_response_coroutine(result: types.CoroutineType | types.AsyncGeneratorType):
    if isinstance(result, types.CoroutineType):
        result.close()  # never run: closed, so Python does not warn "never awaited" later
    raise TypeError(f"a handler returned {type(result).__name__} {result.__qualname__}, made by "
                    f"an async def that nothing awaits here. Make the handler a plain def; for "
                    f"blocking work declare its route with blocking=True; to push results "
                    f"later, call publish(...) from any thread.")


@write.dispatch
def write_object(obj: object, conn: Connection):
    # The fallback: attrs instances are sent as JSON; anything else is a programming error.
    send_response(as_response(obj), conn)


_JSON_TYPE = header_block([("Content-Type", "application/json")])


@write.dispatch
def write_dict_list(obj: dict | list, conn: Connection):
    # JSON through to_json. (This replaces the loop's method of the same signature, which
    # encodes plain JSON only.) The fields a Response(body, content_type="application/json")
    # would have, made directly: a small dict costs little more than its encoding.
    body = json_body(obj)
    conn.server.enqueue(conn, conn.protocol.encode_fields(
        200, _JSON_TYPE + b"Content-Length: %d\r\n" % len(body), body))


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


# PlainText's head up to its length, made by the one head writer once a second (a new Date),
# its Content-Type checked once, here
_text_head = FixedHead(200, header_block([("Content-Type", "text/plain; charset=utf-8")]),
                       tail=b"Content-Length: ")


@write.dispatch
def write_plain_text(obj: PlainText, conn: Connection):
    body = obj.encode("utf-8")
    head = _text_head.current()
    http = conn.protocol
    end = http.end_of_head(200)
    request = http.request
    length = len(body)
    if request is not None and request.method == "HEAD":
        body = b""  # the length, not the body
    conn.server.enqueue(conn, b"%s%d\r\n%s%s" % (head, length, end, body))


@as_response.dispatch
def as_response_plain_text(result: PlainText):
    return Response(str(result), content_type="text/plain")


def redirect(location: str, status: int = 303) -> Response:
    """A redirect response (303 See Other by default; 301, 302, 307, 308 also make sense).

    >>> redirect("/lobby").headers
    (('Location', '/lobby'),)
    """
    return Response(b"", status=status, headers=[("Location", location)])


__all__ = ["as_response", "with_headers", "redirect", "PlainText", "to_json", "json_text",
           "json_body"]
