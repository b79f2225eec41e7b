"""Typed handler parameters: binding by name, conversion by ``parse_param``, restrictions.

Each handler parameter is bound by its name, from (first found wins) the path variables, the
query string, then the body (``application/x-www-form-urlencoded``, ``multipart/form-data`` with
file uploads, or a JSON object), and converted by its annotation:

=============================  ================================================================
``str`` (or no annotation)     the text as sent
``int``                        strict: ``[+-]?[0-9]+`` (``12abc``, `` 12``, ``1_0`` are errors)
``float``                      a finite decimal number (``nan``/``inf`` refused)
``bool``                       ``true/1/yes/on`` or empty, ``false/0/no/off``; JSON true/false
``bytes``                      the text as UTF-8, or an uploaded file's content
``datetime.date``              ISO 8601 ``YYYY-MM-DD``
``datetime.datetime``          ISO 8601 ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` (``T`` or a space),
                               then ``Z`` or ``+HH:MM`` (aware, at that offset) or nothing
                               (naive)
``datetime.time``              ``HH:MM[:SS[.ffffff]]``, then ``Z``, ``+HH:MM`` or nothing
``uuid.UUID``                  32 hex digits, grouped 8-4-4-4-12 by hyphens or not
``decimal.Decimal``            a finite decimal number, at most 100 characters (no ``NaN``, no
                               ``Infinity``, an exponent of at most 4 digits); a JSON number
                               goes through a float, a JSON string keeps every digit
``Literal["a", "b"]``          one of the choices (compared as text)
an ``Enum``                    a member by value, then by name (``IntEnum``, ``StrEnum`` too)
``UploadedFile``               a ``multipart/form-data`` file part
``list[T]``                    every value of a repeated parameter (``?id=1&id=2``), or a JSON
                               array; a bare ``list`` is ``list[str]``
``dict``                       a JSON object, as it is
``T | None`` / a default       optional: ``None`` or the default when absent
an attrs class                 built from a JSON object: the value under the parameter's name,
                               or else the whole JSON body
``Annotated[T, Range(1, 9)]``  ``T``, then the restrictions (``Range``, ``Length``,
                               ``Pattern``, or your own with a ``restrict`` method)
=============================  ================================================================

Two parameters are not read from the request's data: one annotated
:class:`~clos_web.http.Request` (or named ``request`` without annotation) receives the request,
and one annotated :class:`~clos_web.sessions.Session` receives the client's session (created on
demand and stored only if the answer is not an error; ``Session | None`` only loads an existing
one).

Text is Unicode text: a JSON body must be UTF-8 and a string in it holding a lone UTF-16
surrogate (``"\\ud800"``) is refused with a 400; queries, forms and paths are decoded as
strict UTF-8, so they cannot carry one.

**Conversion is a generic function**: ``parse_param(kind, raw, bound)`` dispatches on the
declared type (``type[int]``...) and on the raw value (``str`` from a query or form, ``int``,
``list``, ``dict``... from JSON, :class:`UploadedFile`). Add a type by adding a method, at any
time, even while serving::

    @parse_param.dispatch
    def parse_param_table_str(kind: type[Table], raw: str, bound):
        return tables[parse_param(int, raw, bound)]

**Checked at declaration**: a parameter whose type no ``parse_param`` method converts to (from
text, a JSON value or an :class:`UploadedFile`) is refused when the handler is declared, with a
``TypeError`` naming the handler, the parameter and the type: declare a new type's method
before the handlers that use it (at the REPL too). An ``async def`` handler is refused the same
way: handlers are plain functions (``blocking=True`` for blocking work).

**Ordering rule**: parameters are bound one by one in the order of the handler's signature.
``bound`` is the dict of the parameters bound so far (name to value), so a type may depend on an
earlier parameter (``card: CardOn[Table]`` finds the table in ``bound``); put the parameter it
depends on first. Raise ``ValueError("reason")`` for bad input: the client gets a 400 naming the
parameter and the reason (JSON for clients that accept JSON, text otherwise). Raise an
:class:`~clos_web.http.HTTPError` for another status (404 for an unknown table).

Binding is compiled once per handler at decoration time into a list of binder closures; per
request it costs a few dict lookups and one ``parse_param`` call per parameter.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import json
import math
import re
import reprlib
import types
import typing
import uuid
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin

import attrs

from ..clos import generic
from ..http import BadRequest, Request, Response, json_bytes, parse_params
from ..http import error_response, send_response
from ..loop import Connection
from .responses import with_headers
from .sessions import Session

# --------------------------------------------------------------------------------------------
# Data


@attrs.define(slots=True, eq=False)
class UploadedFile:
    """A file part of a ``multipart/form-data`` body.

    >>> UploadedFile("notes.txt", "text/plain", b"hi").size
    2
    """

    filename: str = attrs.field(repr=reprlib.repr)
    content_type: str = attrs.field(repr=reprlib.repr)
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")

    @property
    def size(self) -> int:
        return len(self.data)


@attrs.define(slots=True, frozen=True)
class Choice:
    """The declared type ``Literal[...]``, as parse_param sees it: one of ``values``.

    >>> Choice(("red", "green")).values
    ('red', 'green')
    """

    values: tuple


@attrs.define(slots=True, frozen=True)
class Range:
    """Restriction: ``min <= value <= max`` (either may be None). ``Annotated[int, Range(1, 128)]``.
    """

    min: Any = None
    max: Any = None


@attrs.define(slots=True, frozen=True)
class Length:
    """Restriction on ``len(value)`` (str, bytes, list): ``Annotated[str, Length(1, 64)]``."""

    min: int = 0
    max: int | None = None


@attrs.define(slots=True, frozen=True)
class Pattern:
    """Restriction: the text fully matches ``regex``: ``Annotated[str, Pattern("[a-z]+")]``.

    The regex runs on client input: keep it unambiguous (no two quantifiers that can share
    the same characters, as ``(a+)+`` or ``[0-9]+[0-9]*``), or put a ``Length`` first, which
    is checked before it: ``Annotated[str, Length(1, 64), Pattern(...)]``.
    """

    regex: str
    _compiled: Any = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "_compiled", re.compile(self.regex))


class ParamError(BadRequest):
    """400 for a parameter that is missing, malformed or out of its restrictions.

    >>> str(ParamError("a", "not an integer"))
    "400 parameter 'a': not an integer"
    """

    def __init__(self, param: str, why: str):
        self.param = param
        self.why = why
        super().__init__(400, f"parameter {param!r}: {why}")


# --------------------------------------------------------------------------------------------
# Generic functions


@generic
def parse_param(kind, raw, bound):
    """Convert ``raw`` (a ``str`` from the query or a form, a JSON value, an
    :class:`UploadedFile`) to the declared type ``kind``; ``bound`` holds the parameters bound
    before this one. Raise ``ValueError(reason)`` for bad input (a 400 naming the parameter).

    >>> parse_param(int, "42", {})
    42
    """


@generic
def restrict(restriction, value):
    """Check ``value`` against a restriction (``Range``, ``Length``, ``Pattern``...); raise
    ``ValueError(reason)`` when it fails.

    >>> restrict(Range(1, 9), 5)
    """


_SIGNS = ("+", "-")
# A decimal number: sign, digits with an optional fraction (or a fraction alone), exponent.
# Linear: there is one way to match a text (the digit runs are separated by '.' or 'e', never
# split between two quantifiers), and every piece is possessive, so a failed match never
# backtracks into a run. (``[0-9]+\.?[0-9]*`` split a run of digits two ways: quadratic.)
_FLOAT = re.compile(r"[-+]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][-+]?+[0-9]{1,4}+)?+",
                    re.ASCII)
_MAX_NUMBER = 1000  # characters: a longer number is refused before any matching
_TRUE = frozenset(("", "1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


def _show(raw) -> str:
    """A short description of a raw value for a 400's reason; bounded work whatever its size
    (a JSON array or object is named, never printed)."""
    if isinstance(raw, (str, bytes)):
        text = repr(raw[:40])
    elif isinstance(raw, dict):
        return "a JSON object"
    elif isinstance(raw, list):
        return "a JSON array"
    elif isinstance(raw, UploadedFile):
        return "an uploaded file"
    elif isinstance(raw, int) and raw.bit_length() > 128:
        return "an integer of 39 digits or more"
    else:
        text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


@parse_param.dispatch
def parse_param_object_object(kind: object, raw: object, bound):
    name = getattr(kind, "__name__", None) or repr(kind)
    raise ValueError(f"expected {name}, got {_show(raw)}")


@parse_param.dispatch
def parse_param_str_str(kind: type[str], raw: str, bound):
    return raw


@parse_param.dispatch
def parse_param_int_str(kind: type[int], raw: str, bound):
    if raw.isascii() and raw.isdigit() and len(raw) <= 100:  # the common case first
        return int(raw)
    digits = raw[1:] if raw[:1] in _SIGNS else raw
    if len(digits) > 100 or not (digits.isdigit() and digits.isascii()):
        raise ValueError(f"not an integer: {_show(raw)}")
    return int(raw)


@parse_param.dispatch
def parse_param_int_int(kind: type[int], raw: int, bound):
    return raw


@parse_param.dispatch
def parse_param_int_bool(kind: type[int], raw: bool, bound):
    raise ValueError(f"not an integer: {_show(raw)}")


@parse_param.dispatch
def parse_param_float_str(kind: type[float], raw: str, bound):
    if len(raw) > _MAX_NUMBER or _FLOAT.fullmatch(raw) is None:
        raise ValueError(f"not a number: {_show(raw)}")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {_show(raw)}")
    return value


@parse_param.dispatch
def parse_param_float_number(kind: type[float], raw: int | float, bound):
    if isinstance(raw, bool):
        raise ValueError(f"not a number: {_show(raw)}")
    try:
        value = float(raw)  # a JSON integer of 309 digits or more overflows
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {_show(raw)}")
    return value


@parse_param.dispatch
def parse_param_bool_str(kind: type[bool], raw: str, bound):
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean: {_show(raw)}")


@parse_param.dispatch
def parse_param_bool_bool(kind: type[bool], raw: bool, bound):
    return raw


@parse_param.dispatch
def parse_param_bool_number(kind: type[bool], raw: int | float, bound):
    # (a JSON number is not a boolean; without it the int method would return 1 for a bool)
    raise ValueError(f"not a boolean: {_show(raw)}")


@parse_param.dispatch
def parse_param_bytes_str(kind: type[bytes], raw: str, bound):
    return raw.encode("utf-8")


@parse_param.dispatch
def parse_param_bytes_uploaded_file(kind: type[bytes], raw: UploadedFile, bound):
    return raw.data


@parse_param.dispatch
def parse_param_upload(kind: type[UploadedFile], raw: UploadedFile, bound):
    return raw


@parse_param.dispatch
def parse_param_choice_object(kind: Choice, raw: object, bound):
    for value in kind.values:
        if value == raw and type(value) is type(raw):
            return value
    if isinstance(raw, str):
        for value in kind.values:
            if str(value) == raw:
                return value
    raise ValueError(f"not one of {', '.join(map(str, kind.values))}: {_show(raw)}")


@parse_param.dispatch
def parse_param_enum_object(kind: type[enum.Enum], raw: object, bound):
    # By value (text from a query or form is compared with the value's text; a JSON value
    # with a value of its own class: JSON true is not the member whose value is 1), then by
    # name.
    if isinstance(raw, str):
        for member in kind:
            if str(member.value) == raw:
                return member
        for member in kind:
            if member.name == raw:
                return member
    else:
        for member in kind:
            if type(member.value) is type(raw) and member.value == raw:
                return member
    raise ValueError(f"not one of {', '.join(str(m.value) for m in kind)}: {_show(raw)}")


@parse_param.dispatch
def parse_param_mixed_enum(kind: type[enum.IntEnum] | type[enum.StrEnum] | type[enum.IntFlag],
                           raw: object, bound):
    # These enums are ints or strs too, and they come before int and str in their classes'
    # precedence: without this method int's or str's would convert (and return no member).
    return parse_param_enum_object(kind, raw, bound)


@parse_param.dispatch
def parse_param_enum_dict(kind: type[enum.Enum], raw: dict, bound):
    # (without it an Enum from a JSON object is ambiguous with the attrs method below)
    raise ValueError(f"not one of {', '.join(str(m.value) for m in kind)}: {_show(raw)}")


# ISO 8601 as RFC 3339 profiles it. Each text is at most 32 characters, checked before the
# match, so every pattern below runs in constant time.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_CLOCK = r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
_TIME = re.compile(_CLOCK, re.ASCII)
_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]" + _CLOCK, re.ASCII)
_MAX_DATETIME = 32
# A UUID: 32 hex digits, either all together or grouped 8-4-4-4-12 by hyphens.
_UUID = re.compile(r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1"
                   r"[0-9a-fA-F]{12}", re.ASCII)
_MAX_DECIMAL = 100  # characters of a Decimal's text (and digits of a JSON integer)
_DECIMAL_BOUND = 10 ** _MAX_DECIMAL


def _iso(kind, raw: str, pattern, what: str):
    if len(raw) > _MAX_DATETIME or pattern.fullmatch(raw) is None:
        raise ValueError(f"not {what}: {_show(raw)}")
    try:
        return kind.fromisoformat(raw.upper())  # (3.11's fromisoformat wants "T" and "Z")
    except ValueError:  # February 30th, 25:00, an offset of 24 hours
        raise ValueError(f"not {what}: {_show(raw)}") from None


@parse_param.dispatch
def parse_param_date_str(kind: type[datetime.date], raw: str, bound):
    return _iso(kind, raw, _DATE, "a date (YYYY-MM-DD)")


@parse_param.dispatch
def parse_param_datetime_str(kind: type[datetime.datetime], raw: str, bound):
    # An offset or Z gives an aware datetime at that offset (not converted); none, a naive one.
    return _iso(kind, raw, _DATETIME, "a date and time (YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM])")


@parse_param.dispatch
def parse_param_time_str(kind: type[datetime.time], raw: str, bound):
    return _iso(kind, raw, _TIME, "a time (HH:MM[:SS[.ffffff]][Z|+HH:MM])")


@parse_param.dispatch
def parse_param_uuid_str(kind: type[uuid.UUID], raw: str, bound):
    if len(raw) > 36 or _UUID.fullmatch(raw) is None:
        raise ValueError(f"not a UUID: {_show(raw)}")
    return kind(raw)


@parse_param.dispatch
def parse_param_decimal_str(kind: type[decimal.Decimal], raw: str, bound):
    # The float grammar (no NaN, no Infinity, an exponent of at most 4 digits), 100 characters.
    if len(raw) > _MAX_DECIMAL or _FLOAT.fullmatch(raw) is None:
        raise ValueError(f"not a decimal number: {_show(raw)}")
    return kind(raw)


@parse_param.dispatch
def parse_param_decimal_number(kind: type[decimal.Decimal], raw: int | float, bound):
    # A JSON integer is exact; a JSON number with a fraction or an exponent was read as a float:
    # its shortest text (0.1 is "0.1"). Send a string to keep more than 15 digits.
    if isinstance(raw, bool):
        raise ValueError(f"not a decimal number: {_show(raw)}")
    if isinstance(raw, int):
        if not -_DECIMAL_BOUND < raw < _DECIMAL_BOUND:
            raise ValueError(f"not a decimal number of {_MAX_DECIMAL} digits or fewer: "
                             f"{_show(raw)}")
        return kind(raw)
    if not math.isfinite(raw):
        raise ValueError(f"not a finite number: {_show(raw)}")
    return kind(repr(raw))


@parse_param.dispatch
def parse_param_dict_dict(kind: type[dict], raw: dict, bound):
    return raw  # a JSON object, as it is


@parse_param.dispatch
def parse_param_attrs_dict(kind: type, raw: dict, bound):
    # A class from a JSON object: attrs classes, field by field through parse_param.
    if not attrs.has(kind):
        raise ValueError(f"expected {kind.__name__}, got a JSON object")
    hints = typing.get_type_hints(kind, include_extras=True)
    values = {}
    for field in attrs.fields(kind):
        if not field.init:
            continue
        key = field.alias or field.name
        if key not in raw:
            if field.default is attrs.NOTHING:
                raise ValueError(f"{kind.__name__}.{field.name} missing")
            continue
        spec = _spec(hints.get(field.name, object))
        try:
            values[key] = spec.convert(raw[key], bound)
        except ValueError as exc:
            raise ValueError(f"{kind.__name__}.{field.name}: {exc}") from None
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad {kind.__name__}: {exc}") from None


@restrict.dispatch
def restrict_range(restriction: Range, value):
    if restriction.min is not None and value < restriction.min:
        raise ValueError(f"{_show(value)} is below {restriction.min}")
    if restriction.max is not None and value > restriction.max:
        raise ValueError(f"{_show(value)} is above {restriction.max}")


@restrict.dispatch
def restrict_length(restriction: Length, value):
    n = len(value)
    if n < restriction.min:
        raise ValueError(f"length {n} is below {restriction.min}")
    if restriction.max is not None and n > restriction.max:
        raise ValueError(f"length {n} is above {restriction.max}")


@restrict.dispatch
def restrict_pattern(restriction: Pattern, value):
    if restriction._compiled.fullmatch(value) is None:
        raise ValueError(f"{_show(value)} does not match {restriction.regex}")


# --------------------------------------------------------------------------------------------
# The request's data, parsed lazily once per request


_NO_QUERY: dict = {}


class _Inputs:
    """What binders read: path values, query, body (parsed on first use), session."""

    __slots__ = ("request", "values", "app", "query", "_body", "session", "store")

    def __init__(self, request, values, app, query):
        self.request = request
        self.values = values
        self.app = app
        self.query = query
        self._body = None
        self.session = None
        self.store = None

    def body(self):
        """``("form", {name: [values]})`` / ``("json", value)`` / ``(None, None)``."""
        if self._body is None:
            self._body = _parse_body(self.request)
        return self._body


def parse_query(query: str) -> dict:
    """``{name: [values]}`` from a query string; a fast path for plain ``a=1&b=2``.

    >>> parse_query("a=1&b=2&a=3")
    {'a': ['1', '3'], 'b': ['2']}
    """
    if not query:
        return {}
    if "%" in query or "+" in query or query.count("&") > 100:
        return parse_params(query)
    out = {}
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        values = out.get(name)
        if values is None:
            out[name] = [value]
        else:
            values.append(value)
    return out


def _media_type(request: Request) -> tuple[str, str]:
    ctype = request.headers.get("content-type", "")
    media, _, params = ctype.partition(";")
    return media.strip().lower(), params


def _parse_body(request: Request):
    if not request.body:
        return (None, None)
    media, params = _media_type(request)
    if media == "application/x-www-form-urlencoded":
        return ("form", parse_params(request.body))
    if media == "multipart/form-data":
        return ("form", parse_multipart(request.body, params))
    if media == "application/json" or media.endswith("+json"):
        return ("json", _parse_json(request.body))
    return (None, None)


# A JSON string escape of a UTF-16 surrogate (\uD800-\uDFFF). Linear: a literal, two classes.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse_json(body: bytes):
    """A JSON body's value; 400 unless it is UTF-8 (RFC 8259 8.1; a BOM is ignored) and every
    string in it (keys included) is Unicode text: a lone surrogate such as ``"\\ud800"`` can
    be neither encoded nor stored, so it never reaches a parameter.

    >>> _parse_json(b'["\\\\ud83d\\\\ude00"]') == ["\\U0001f600"]  # a pair is one character
    True
    """
    try:
        text = body.decode("utf-8")  # strict: refuses UTF-8-encoded surrogates too
    except UnicodeDecodeError as exc:
        raise BadRequest(reason=f"bad JSON body: not UTF-8 ({exc.reason})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(reason=f"bad JSON body: {exc}") from None
    if _SURROGATE_ESCAPE.search(text) is not None and _has_lone_surrogate(value):
        raise BadRequest(reason="bad JSON body: a string holds a lone UTF-16 surrogate")
    return value


def _has_lone_surrogate(value) -> bool:
    """Whether a JSON value holds a str (key or value, at any depth) that is not text."""
    stack = [value]
    while stack:  # one visit per value: linear; no recursion, whatever the depth
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif kind is list:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item)
            stack.extend(item.values())
    return False


# ``; name=value`` or ``; name="quoted value"`` in Content-Type / Content-Disposition.
# Linear: the pieces are separated by characters the neighbouring classes exclude (';', '=',
# '"', a name's characters vs whitespace), so a text matches one way only, and every quantifier
# is possessive, so a failed attempt is given up without backtracking into a run.
_PARAM = re.compile(r';\s*+([A-Za-z0-9_*-]++)\s*+=\s*+(?:"((?:[^"\\]++|\\.)*+)"|([^;]*+))',
                    re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def _unquote_pair(match) -> str:
    return match[1]  # (a function: faster than the template r"\1" per match)


def _header_params(text: str) -> dict:
    """``{name: value}`` of a header's parameters (names lower-cased, quotes removed).

    >>> _header_params('; name="a \\\\"b\\\\""; filename=x.txt')
    {'name': 'a "b"', 'filename': 'x.txt'}
    """
    out = {}
    for m in _PARAM.finditer(";" + text if not text.startswith(";") else text):
        quoted = m.group(2)
        if quoted is None:
            value = m.group(3).strip()
        else:
            value = _QUOTED_PAIR.sub(_unquote_pair, quoted) if "\\" in quoted else quoted
        out[m.group(1).lower()] = value
    return out


def parse_multipart(body: bytes, content_type_params: str) -> dict:
    """``{name: [str | UploadedFile]}`` from a ``multipart/form-data`` body (at most 1000
    parts). ``content_type_params`` is what follows ``multipart/form-data`` in Content-Type.

    >>> body = b'--B\\r\\nContent-Disposition: form-data; name="a"\\r\\n\\r\\n1\\r\\n--B--\\r\\n'
    >>> parse_multipart(body, "; boundary=B")
    {'a': ['1']}
    """
    boundary = _header_params(content_type_params).get("boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequest(reason="multipart body without a boundary")
    delim = b"--" + boundary.encode("latin-1")
    pieces = body.split(b"\r\n" + delim, 1001)  # more than 1001 pieces: too many parts
    first = pieces[0]
    if not first.startswith(delim):
        raise BadRequest(reason="bad multipart body")
    pieces[0] = first[len(delim):]
    if len(pieces) > 1001:
        raise BadRequest(reason="too many multipart parts")
    out = {}
    for piece in pieces:
        if piece.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"\r\n"):
            raise BadRequest(reason="bad multipart part")
        headers = {}
        for line in head[2:].split(b"\r\n"):
            name, _, value = line.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            continue
        params = _header_params(disposition[len("form-data"):])
        name = params.get("name")
        if name is None:
            continue
        if "filename" in params:
            value = UploadedFile(params["filename"], headers.get("content-type",
                                 "application/octet-stream"), data)
        else:
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(reason=f"form field {name!r} is not UTF-8") from None
        out.setdefault(name, []).append(value)
    return out


# --------------------------------------------------------------------------------------------
# Compiling a handler's parameters into binders


@attrs.define(slots=True, eq=False)
class _Spec:
    """A parameter's declared type, taken apart once."""

    kind: Any
    restrictions: tuple = ()
    optional: bool = False
    is_list: bool = False
    item: Any = None  # the _Spec of list items

    def convert(self, raw, bound):
        if raw is None and self.optional:
            return None
        if self.is_list:
            if not isinstance(raw, list):
                raw = [raw]
            value = [self.item.convert(r, bound) for r in raw]
        else:
            value = parse_param(self.kind, raw, bound)
        for r in self.restrictions:
            restrict(r, value)
        return value


def _spec(annotation) -> _Spec:
    restrictions = ()
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        restrictions = tuple(extra)
    optional = False
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"a parameter has one type (or T | None), not {annotation}")
        inner = _spec(args[0])
        inner.optional = inner.optional or optional
        inner.restrictions = inner.restrictions + restrictions
        return inner
    if origin is list or annotation is list:  # a bare ``list`` is ``list[str]``
        (item,) = get_args(annotation) or (str,)
        return _Spec(list, restrictions, optional, True, _spec(item))
    if origin is Literal:
        return _Spec(Choice(get_args(annotation)), restrictions, optional)
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        annotation = str
    return _Spec(annotation, restrictions, optional)


def _hints(fn: Callable) -> dict:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        return {}


_MISSING = inspect.Parameter.empty


def _bind_request(inp, bound):
    return inp.request


def _session_binder(create: bool):
    def bind_session(inp, bound):
        store = inp.app.sessions
        session = store.load(inp.request)
        if session is None and create:
            session = store.create()  # not stored yet: see _compile_general (503 when full)
        if session is not None:
            inp.session = session
            inp.store = store
        return session

    return bind_session


_PLAIN_TEXT_METHODS = frozenset((parse_param_str_str, parse_param_int_str, parse_param_float_str))

# One raw value of each class a request can bring: text (query, form, path), each JSON value,
# a file part. A declared type is supported when a parse_param method applies to one of them.
_SAMPLE_RAWS = ("", 0, 0.0, True, None, [], {}, UploadedFile("", "text/plain", b""))


def _converts(kind) -> bool:
    """Whether some ``parse_param`` method converts a request's value to ``kind``: a primary
    method applies to it with one of the sample raws. The fallback, which only refuses, does
    not count, nor does the method for attrs classes unless ``kind`` is one."""
    try:
        parse_param.resolve(kind, "", {})  # registers methods whose annotations had to wait
    except Exception:  # noqa: BLE001 -- only a side effect is wanted here
        pass
    for raw in _SAMPLE_RAWS:
        for method in parse_param.applicable_methods(kind, raw, {}):
            fn = method.function
            if method.qualifier != "primary" or fn is parse_param_object_object:
                continue
            if fn is parse_param_attrs_dict and not attrs.has(kind):
                continue
            return True
    return False


def _check_converts(spec: _Spec, handler: str, name: str, annotation) -> None:
    """Refuse, at decoration, a parameter whose type no parse_param method converts to (it
    would answer every request with a 400), or an Enum that a stock method of str, int or
    float would convert to a plain value."""
    while spec.is_list:
        spec = spec.item
    kind = spec.kind
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        primaries = [m.function for m in parse_param.applicable_methods(kind, "", {})
                     if m.qualifier == "primary"]
        if primaries and primaries[0] in _PLAIN_TEXT_METHODS:
            base = next(b for b in kind.__mro__ if b in (str, int, float))
            raise TypeError(
                f"{handler}: parameter {name!r} is annotated {kind.__qualname__}, an Enum that "
                f"is also a {base.__name__} listed before Enum in its bases, so parse_param's "
                f"{base.__name__} method would convert to a plain {base.__name__}, not a member. "
                f"Derive it from enum.StrEnum or enum.IntEnum (or Enum alone), or add a "
                f"parse_param method for type[{kind.__qualname__}].")
    if _converts(kind):
        return
    shown = getattr(kind, "__qualname__", None) or repr(kind)
    full = f"{getattr(kind, '__module__', '?')}.{shown}"
    lower = re.sub(r"\W+", "_", shown).lower()
    raise TypeError(
        f"{handler}: parameter {name!r} is annotated {annotation!r}, and no parse_param method "
        f"converts a request's value to {shown} ({full}) from text (a query, a form, the path), "
        f"a JSON value or an uploaded file. Add one before declaring the handler:\n\n"
        f"    @parse_param.dispatch\n"
        f"    def parse_param_{lower}_str(kind: type[{shown}], raw: str, bound):\n"
        f"        return {shown}(raw)  # raise ValueError('reason') for a 400\n")


def _binder(handler: str, name: str, param: inspect.Parameter, annotation, var_names: tuple):
    """One closure ``bind(inputs, bound) -> value`` for one parameter of ``handler``."""
    if annotation is Request or (annotation is _MISSING and name == "request"):
        return _bind_request
    if annotation is Session:
        return _session_binder(create=True)
    if get_origin(annotation) in (Union, types.UnionType) and \
            [a for a in get_args(annotation) if a is not type(None)] == [Session]:
        return _session_binder(create=False)
    try:
        spec = _spec(annotation)
    except TypeError as exc:
        raise TypeError(f"{handler}: parameter {name!r}: {exc}") from None
    _check_converts(spec, handler, name, annotation)
    default = param.default
    convert = spec.convert

    if name in var_names:
        index = var_names.index(name)

        def bind_path(inp, bound):
            try:
                return convert(inp.values[index], bound)
            except ValueError as exc:
                raise ParamError(name, str(exc)) from None

        bind_path.path_index = index
        if not spec.is_list and not spec.restrictions:
            bind_path.path_kind = spec.kind  # compile_handler's fast path may bind it alone
        return bind_path

    wants_list = spec.is_list
    whole_body = not wants_list and isinstance(spec.kind, type) and attrs.has(spec.kind)
    has_default = default is not _MISSING
    optional = spec.optional

    kind = spec.kind
    simple = not wants_list and not spec.restrictions

    def bind(inp, bound):
        values = inp.query.get(name)
        if values is not None and simple:
            try:
                return parse_param(kind, values[0], bound)
            except ValueError as exc:
                raise ParamError(name, str(exc)) from None
        if values is None:
            if inp.request.body:
                where, data = inp.body()
                if where == "form":
                    values = data.get(name)
                elif where == "json":
                    if type(data) is dict and name in data:
                        values = data[name]
                        if not (wants_list and type(values) is list):
                            values = [values]
                    elif whole_body and type(data) is dict:
                        values = [data]
            if values is None:
                if has_default:
                    return default
                if optional:
                    return None
                raise ParamError(name, "missing")
        try:
            return convert(values if wants_list else values[0], bound)
        except ValueError as exc:
            raise ParamError(name, str(exc)) from None

    if simple and not whole_body:
        bind.query_kind = kind  # compile_handler's fast path may bind it from the query alone
    return bind


def compile_handler(fn: Callable, route) -> Callable:
    """Compile ``fn``'s parameters into ``invoke(request, conn, values) -> result``.

    Called once at decoration; ``route.handler`` is read at each request, so assigning a new
    function with the same parameters to the route takes effect at once. Raises
    ``TypeError`` for a handler that cannot serve: an ``async def``, ``*args``, a path
    variable without its parameter, or a parameter of a type no ``parse_param`` method
    converts to.
    """
    handler = getattr(fn, "__qualname__", None) or repr(fn)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{handler} is an async def: clos_web handlers are plain functions called on the "
            f"event loop, and nothing would await it. Write a plain def; for blocking work "
            f"(disk, a database, a remote call) declare the route with blocking=True, so it "
            f"runs on a worker thread; to push results later, call publish(...) from any "
            f"thread.")
    sig = inspect.signature(fn)
    hints = _hints(fn)
    binders = []
    for name, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{handler}: *args and **kwargs cannot be bound from a request")
        annotation = hints.get(name, param.annotation)
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307
            except Exception as exc:
                raise TypeError(f"{handler}: cannot resolve the annotation "
                                f"{annotation!r} of {name!r} ({exc}); with `from __future__ "
                                "import annotations` types must be importable from the "
                                "handler's module") from None
        binders.append((name, _binder(handler, name, param, annotation, route.var_names)))
    missing = set(route.var_names) - set(sig.parameters)
    if missing:
        raise TypeError(f"{handler} has no parameter for path variable(s) {sorted(missing)}")

    if not binders:
        return lambda request, conn, values: route.handler()
    if len(binders) == 1 and binders[0][1] is _bind_request:
        return lambda request, conn, values: route.handler(request)
    binders = tuple(binders)
    query_kinds = tuple((name, getattr(bind, "query_kind", None)) for name, bind in binders)
    if all(kind is not None for _, kind in query_kinds) and not route.var_names:
        keyword_only = any(p.kind is p.KEYWORD_ONLY for p in sig.parameters.values())
        return _compile_query_only(route, query_kinds, _compile_general(route, binders),
                                   keyword_only)
    if route.var_names and all(bind is _bind_request or getattr(bind, "path_kind", None)
                               is not None for _, bind in binders):
        positional = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in sig.parameters.values())
        return _compile_path_only(route, binders, _compile_general(route, binders),
                                  positional)
    return _compile_general(route, binders)


def _compile_query_only(route, query_kinds: tuple, general: Callable,
                        keyword_only: bool = False) -> Callable:
    """The fast path for handlers whose parameters all come from a plain query string
    (``/add?a=1&b=2``): one regex matches ``name=value&...`` in the handler's parameter order,
    and each value goes through ``parse_param`` with the parameters bound before it. A query
    the regex does not match (another order, repeats, escapes) or a request with a body goes
    the general way (``general``), with the same results.

    Every value here is a ``str``, so the effective method of ``parse_param`` for each
    parameter (what the generic's cache would find: its primary and any before, after or
    around methods) is looked up once with ``parse_param.resolve`` and kept until the generic's
    method table changes (``parse_param.generation``): dispatch hoisted out of the loop,
    never skipped."""
    names = tuple(name for name, _ in query_kinds)
    kinds = tuple(kind for _, kind in query_kinds)
    # Linear: a value's class excludes '&', which starts the next part, so the query splits
    # one way; the quantifiers are possessive, so a failed match never backtracks into one.
    fullmatch = re.compile("&".join(f"{re.escape(name)}=([^&%+]*+)" for name in names)).fullmatch
    plan = [-1, ()]  # [parse_param's generation, ((name, kind, effective method), ...)]
    # the values go in by position, in the signature's order, unless one is keyword-only
    positional = not keyword_only

    def refresh():
        plan[0] = parse_param.generation
        plan[1] = tuple((name, kind, parse_param.resolve(kind, "", {}))
                        for name, kind in zip(names, kinds))

    if positional and len(names) <= 2:
        # one or two parameters (the common handler): the same steps without the loop
        handler = route.handler
        n0, k0 = names[0], kinds[0]
        n1, k1 = (names[1], kinds[1]) if len(names) == 2 else (None, None)

        def invoke(request, conn, values):
            match = fullmatch(request.query)
            if match is None or request.body:
                return general(request, conn, values)
            if plan[0] != parse_param.generation:
                refresh()
            methods = plan[1]
            bound = {}
            try:
                v0 = bound[n0] = methods[0][2](k0, match.group(1), bound)
            except ValueError as exc:
                raise ParamError(n0, str(exc)) from None
            if n1 is None:
                return handler(v0)
            try:
                v1 = methods[1][2](k1, match.group(2), bound)
            except ValueError as exc:
                raise ParamError(n1, str(exc)) from None
            return handler(v0, v1)

        invoke.general = general
        return invoke

    def invoke(request, conn, values):
        match = fullmatch(request.query)
        if match is None or request.body:
            return general(request, conn, values)
        if plan[0] != parse_param.generation:
            refresh()
        bound = {}
        name = None
        try:
            for (name, kind, method), raw in zip(plan[1], match.groups()):
                bound[name] = method(kind, raw, bound)
        except ValueError as exc:
            raise ParamError(name, str(exc)) from None
        if positional:
            return route.handler(*bound.values())
        return route.handler(**bound)

    invoke.general = general  # for tests and the curious: the path it defers to
    return invoke


def _compile_path_only(route, binders: tuple, general: Callable, positional: bool) -> Callable:
    """The fast path for handlers whose parameters are path variables (and maybe the
    request): ``/sub/{name}``. A request with a query string goes the general way
    (``general``, which parses it: a malformed one is a 400 there), with the same results.

    Each value is a decoded path segment, a ``str``, so as in :func:`_compile_query_only`
    the effective method of ``parse_param`` for each parameter is looked up once with
    ``parse_param.resolve`` and kept until the generic's method table changes: dispatch
    hoisted out of the request, never skipped."""
    steps = tuple((name, None, None) if bind is _bind_request
                  else (name, bind.path_index, bind.path_kind) for name, bind in binders)
    plan = [-1, ()]  # [parse_param's generation, (effective method or None, ...)]

    def refresh():
        plan[0] = parse_param.generation
        plan[1] = tuple(None if kind is None else parse_param.resolve(kind, "", {})
                        for _, _, kind in steps)

    if positional and len(steps) == 1 and steps[0][2] is not None:
        # one path variable (the common stream handler): the same steps without the loop
        ((name, index, kind),) = steps

        def invoke(request, conn, values):
            if request.query:
                return general(request, conn, values)
            if plan[0] != parse_param.generation:
                refresh()
            bound = {}
            try:
                value = bound[name] = plan[1][0](kind, values[index], bound)
            except ValueError as exc:
                raise ParamError(name, str(exc)) from None
            return route.handler(value)

        invoke.general = general
        return invoke

    def invoke(request, conn, values):
        if request.query:
            return general(request, conn, values)
        if plan[0] != parse_param.generation:
            refresh()
        bound = {}
        name = None
        try:
            for (name, index, kind), method in zip(steps, plan[1]):
                bound[name] = request if method is None else method(kind, values[index], bound)
        except ValueError as exc:
            raise ParamError(name, str(exc)) from None
        if positional:
            return route.handler(*bound.values())
        return route.handler(**bound)

    invoke.general = general  # for tests and the curious: the path it defers to
    return invoke


def _compile_general(route, binders: tuple) -> Callable:
    def invoke(request, conn, values):
        query = request.query
        inp = _Inputs(request, values, route.app, parse_query(query) if query else _NO_QUERY)
        kwargs = {}
        for name, bind in binders:
            kwargs[name] = bind(inp, kwargs)
        result = route.handler(**kwargs)
        # The session is saved (a new one stored, its cookie set) only for a successful
        # answer: a request refused with a 4xx, raised or returned, leaves no session behind.
        if inp.session is not None and getattr(result, "status", 200) < 400:
            cookie = inp.store.save(inp.session)
            if cookie is not None:
                result = with_headers(result, [("Set-Cookie", cookie)])
        return result

    return invoke


# --------------------------------------------------------------------------------------------
# 400s for parameters: JSON for JSON clients


def _wants_json(request: Request | None) -> bool:
    if request is None:
        return False
    accept = request.headers.get("accept", "")
    if "application/json" in accept:
        return True
    return "json" in request.headers.get("content-type", "") and "text/" not in accept


@error_response.dispatch
def error_response_param_error(error: ParamError, conn: Connection):
    if _wants_json(conn.protocol.request):
        body = json_bytes({"error": "bad parameter", "parameter": error.param,
                           "reason": error.why, "status": error.status})
        send_response(Response(body, status=error.status, content_type="application/json",
                               headers=error.headers), conn)
    else:
        send_response(Response(f"{error.status} {error.reason}\n", status=error.status,
                               content_type="text/plain", headers=error.headers), conn)


__all__ = ["parse_param", "restrict", "UploadedFile", "Choice", "Range", "Length", "Pattern",
           "ParamError", "parse_query", "parse_multipart", "compile_handler"]
