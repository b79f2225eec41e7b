"""Hardening of request data: bad input is a 4xx, never a 500, never poisoned state.

- Lone UTF-16 surrogates never reach a parameter: refused (400) in JSON bodies, impossible by
  the other routes in (query, form, multipart, path), as proved here.
- Any JSON value or string given to any stock annotation is bound or refused with a 400.
- A signed-session cookie that is not ASCII is "no session", not a 500.
- A request that fails stores no session; a flood of anonymous requests evicts no one's session:
  at the cap new sessions are refused with 503 and ``Retry-After``.
- The trailing-slash redirect never leaves the origin and keeps the query.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Annotated, Literal
from urllib.parse import quote_from_bytes

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clos_web import (
    App, HTTPError, Length, MemorySessions, Pattern, Range, Response, Session,
    SignedCookieSessions, UploadedFile,
)
from clos_web.http import parse

from conftest import Reader, connect, request


def GET(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def POST(path: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def lone_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def strings_in(value):
    """Every str in a value (keys and values, at any depth)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif attrs.has(type(v)):
            stack.extend(attrs.astuple(v, recurse=False))


# --------------------------------------------------------------------------------------------
# Lone surrogates


class Suit(enum.Enum):
    HEARTS = "hearts"
    SPADES = "spades"


@attrs.define
class Line:
    text: str
    tags: list[str] = attrs.Factory(list)


def _chat_app(seen: list):
    app = App()

    @app.post("/say")
    def say(text: str):
        seen.append(text)
        return "ok"

    @app.post("/tags")
    def tags(tags: list[str]):
        seen.append(tags)
        return "ok"

    @app.post("/line")
    def line(line: Line):
        seen.append(line)
        return "ok"

    @app.get("/show")
    def show():
        return {"lines": seen}  # a later page render: must never fail

    return app


@pytest.mark.parametrize("path, body", [
    ("/say", b'{"text": "\\ud800"}'),
    ("/say", b'{"text": "ok \\udfff end"}'),
    ("/say", b'{"text": "a", "\\ud800": 1}'),                  # a key, not even bound
    ("/say", b'{"text": "\xed\xa0\x80"}'),                     # raw UTF-8-encoded surrogate
    ("/say", b'{"text": "a", "x": [{"y": ["\\udc00"]}]}'),     # deep inside another value
    ("/tags", b'{"tags": ["a", "\\ud83d"]}'),
    ("/line", b'{"text": "\\ud800"}'),                         # the whole body: attrs fields
    ("/line", b'{"line": {"text": "a", "tags": ["\\ude00"]}}'),
])
def test_a_lone_surrogate_in_a_json_body_is_a_400_and_later_pages_still_render(serve, path,
                                                                              body):
    seen = []
    server = serve(_chat_app(seen))
    status, _, reason = request(server, POST(path, body))
    assert status == 400 and (b"surrogate" in reason or b"not UTF-8" in reason)
    assert seen == []
    status, _, page = request(server, GET("/show"))
    assert status == 200 and json.loads(page) == {"lines": []}


def test_surrogate_pairs_are_characters_and_are_kept(serve):
    seen = []
    server = serve(_chat_app(seen))
    status, _, _ = request(server, POST("/say", b'{"text": "\\ud83d\\ude00 \xf0\x9f\x98\x80"}'))
    assert status == 200 and seen == ["\U0001F600 \U0001F600"]
    assert request(server, GET("/show"))[0] == 200


@pytest.mark.parametrize("make", [
    lambda q: GET(f"/echo?v={q}"),
    lambda q: POST("/echo", f"v={q}".encode(), "application/x-www-form-urlencoded"),
    lambda q: GET(f"/path/{q}"),
], ids=["query", "form", "path"])
def test_an_encoded_surrogate_in_query_form_or_path_is_a_400(serve, make):
    app = _echo_app()
    server = serve(app)
    status, _, body = request(server, make("%ED%A0%80"))
    assert status == 400, body


def _echo_app():
    app = App()

    @app.get("/echo")
    def echo_get(v: str):
        return {"v": v}

    @app.post("/echo")
    def echo_post(v: str):
        return {"v": v}

    @app.get("/path/{v}")
    def echo_path(v: str):
        return {"v": v}

    @app.post("/upload")
    def upload(v: str, f: UploadedFile):
        return {"v": v, "name": f.filename}

    return app


def test_multipart_fields_and_file_names_carry_no_surrogate():
    app = _echo_app()
    body = (b'--B\r\nContent-Disposition: form-data; name="v"\r\n\r\n\xed\xa0\x80\r\n'
            b'--B\r\nContent-Disposition: form-data; name="f"; filename="\xed\xa0\x80"\r\n\r\n'
            b'x\r\n--B--\r\n')
    with pytest.raises(HTTPError) as err:
        app.handle(parse(POST("/upload", body, "multipart/form-data; boundary=B")))
    assert err.value.status == 400
    body = body.replace(b"\r\n\xed\xa0\x80\r\n", b"\r\nok\r\n")  # the field fixed, the name not
    result = app.handle(parse(POST("/upload", body, "multipart/form-data; boundary=B")))
    assert result["v"] == "ok" and not lone_surrogate(result["name"])


_BYTES = st.lists(st.binary(max_size=4) | st.sampled_from(
    [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x9f\x98\x80", b"\xc3\xa9", b"\\ud800"]),
    max_size=4).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_BYTES, where=st.sampled_from(["query", "form", "path", "json",
                                                          "multipart"]))
def test_no_route_in_binds_a_lone_surrogate(raw, where):
    """Whatever bytes a client sends, by any route in, a bound ``str`` holds no lone
    surrogate: it is refused with a 400 or decoded strictly."""
    app = _echo_app()
    quoted = quote_from_bytes(raw, safe="")
    if where == "query":
        data = GET(f"/echo?v={quoted}")
    elif where == "form":
        data = POST("/echo", b"v=" + quoted.encode(), "application/x-www-form-urlencoded")
    elif where == "path":
        data = GET(f"/path/{quoted or 'x'}")
    elif where == "json":
        data = POST("/echo", b'{"v": "' + raw.replace(b'"', b"") + b'"}')
    else:
        data = POST("/echo", b'--B\r\nContent-Disposition: form-data; name="v"\r\n\r\n' + raw
                    + b"\r\n--B--\r\n", "multipart/form-data; boundary=B")
    try:
        result = app.handle(parse(data))
    except HTTPError as err:
        assert err.status == 400
    else:
        assert not lone_surrogate(result["v"])


# --------------------------------------------------------------------------------------------
# Any JSON value, any stock annotation: a 2xx or a 400


@attrs.define
class Point:
    x: int
    y: float = 0.0
    suit: Suit = Suit.HEARTS


ANNOTATIONS = {
    "str": str, "int": int, "float": float, "bool": bool, "bytes": bytes,
    "literal": Literal["a", 1, True], "enum": Suit, "file": UploadedFile,
    "list_int": list[int], "list_str": list[str], "list_point": list[Point],
    "point": Point, "optional_int": int | None,
    "range": Annotated[int, Range(1, 9)], "frange": Annotated[float, Range(-1.5, 2.5)],
    "length": Annotated[str, Length(1, 5)], "pattern": Annotated[str, Pattern("[a-z]+")],
    "list_length": Annotated[list[int], Length(0, 3)],
}


def _handler(annotation):
    def handler(v):
        for text in strings_in(v):
            text.encode("utf-8")  # never a lone surrogate
        return "ok"

    handler.__annotations__ = {"v": annotation}
    return handler


def _typed_app():
    app = App()
    for name, annotation in ANNOTATIONS.items():
        app.post(f"/{name}")(_handler(annotation))
        app.get(f"/{name}")(_handler(annotation))
    return app


_TYPED = _typed_app()

_TEXT = st.text(st.characters(blacklist_categories=()), max_size=8)  # surrogates included
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10**500, 10**500)
    | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT | st.sampled_from(
        ["x", "y", "suit", "v"]), inner, max_size=4),
    max_leaves=12)


def _status(data: bytes) -> int:
    try:
        result = _TYPED.handle(parse(data))
    except HTTPError as err:
        return err.status
    return getattr(result, "status", 200)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(ANNOTATIONS)), value=_JSON, whole=st.booleans(),
       ascii_only=st.booleans())
def test_any_json_value_for_any_stock_annotation_is_bound_or_a_400(name, value, whole,
                                                                   ascii_only):
    doc = value if whole else {"v": value}
    text = json.dumps(doc, ensure_ascii=ascii_only)
    body = text.encode("utf-8", "surrogatepass")
    status = _status(POST(f"/{name}", body))
    assert status == 200 or status == 400, (name, text[:200], status)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(ANNOTATIONS)), raw=st.text(max_size=20))
def test_any_string_for_any_stock_annotation_is_bound_or_a_400(name, raw):
    quoted = quote_from_bytes(raw.encode("utf-8"), safe="")
    assert _status(GET(f"/{name}?v={quoted}")) in (200, 400)
    form = f"v={quoted}".encode()
    assert _status(POST(f"/{name}", form, "application/x-www-form-urlencoded")) in (200, 400)


def test_stock_annotations_over_a_socket_are_200_or_400(serve):
    server = serve(_TYPED)
    hostile = [10**400, -(10**400), 1e308, [], {}, {"x": {}}, None, True, "\ud800", [[[]]],
               "9" * 500, {"x": 10**400, "suit": {}}, [{"x": "1"}]]
    with connect(server) as sock:
        reader = Reader(sock)
        for name in ANNOTATIONS:
            for value in hostile:
                sock.sendall(POST(f"/{name}", json.dumps({"v": value}).encode()))
                status, _, body = reader.read_response()
                assert status in (200, 400), (name, value, status, body[:200])


def test_a_401_digit_integer_for_a_float_is_a_400(serve):
    server = serve(_TYPED)
    status, _, body = request(server, POST("/float", b'{"v": %s}' % (b"9" * 401)))
    assert status == 400 and b"number" in body
    assert _status(POST("/frange", b'{"v": %s}' % (b"9" * 401))) == 400
    assert math.isinf(json.loads("1e999"))  # JSON may carry inf: refused as well
    assert _status(POST("/float", b'{"v": 1e999}')) == 400


def test_an_enum_from_a_json_object_is_a_400_not_an_ambiguity():
    assert _status(POST("/enum", b'{"v": {"a": 1}}')) == 400
    assert _status(POST("/point", b'{"x": 1, "suit": {}}')) == 400
    assert _status(POST("/point", b'{"x": 1, "suit": "spades"}')) == 200


# --------------------------------------------------------------------------------------------
# Signed-cookie sessions: a non-ASCII cookie is no session


def test_a_non_ascii_signed_session_cookie_is_no_session(serve):
    app = App()
    app.sessions = SignedCookieSessions(secret=b"s" * 32)

    @app.get("/who")
    def who(session: Session | None):
        return "none" if session is None else "some"

    server = serve(app)
    for value in ("\xe9.abc", "abc.\xe9", "\xe9", "a.b.\xff\xfe"):
        data = b"GET /who HTTP/1.1\r\nHost: t\r\nCookie: session=" + value.encode("latin-1") \
            + b"\r\n\r\n"
        status, _, body = request(server, data)
        assert (status, body) == (200, b"none"), value
    store = app.sessions
    assert store.decode("\xe9" * 10 + "." + "\xe9") is None


# --------------------------------------------------------------------------------------------
# Sessions are stored only for a successful response; a flood cannot evict anyone


def _session_app(store):
    app = App()
    app.sessions = store

    @app.get("/visit")
    def visit(session: Session, n: int = 1):
        session["n"] = session.get("n", 0) + n
        return str(session["n"])

    @app.get("/deny/{status}")
    def deny(session: Session, status: int):
        session["tried"] = True
        raise HTTPError(status)

    @app.get("/refuse")
    def refuse(session: Session):
        session["tried"] = True
        return Response("no", status=403)

    return app


def test_a_failed_request_stores_no_session_and_sets_no_cookie(serve):
    store = MemorySessions()
    server = serve(_session_app(store))
    for path in ("/visit?n=abc", "/deny/401", "/deny/403", "/deny/404", "/refuse"):
        status, headers, _ = request(server, GET(path))
        assert status >= 400 and "set-cookie" not in headers, path
        assert len(store) == 0, path
    status, headers, body = request(server, GET("/visit"))
    assert (status, body) == (200, b"1") and "set-cookie" in headers and len(store) == 1


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_an_anonymous_flood_evicts_no_session_and_is_refused_with_503(serve):
    clock = Clock()
    store = MemorySessions(max_sessions=3, idle_timeout=60, clock=clock)
    server = serve(_session_app(store))
    users = []
    for _ in range(3):
        status, headers, _ = request(server, GET("/visit"))
        assert status == 200
        users.append(headers["set-cookie"].split(";")[0])
    for _ in range(20):  # the flood: no cookie, every request wants a session
        status, headers, body = request(server, GET("/visit"))
        assert status == 503 and int(headers["retry-after"]) >= 1 and b"session" in body
        assert "set-cookie" not in headers
    for cookie in users:  # every real user keeps their session
        status, _, body = request(server, GET("/visit", f"Cookie: {cookie}\r\n"))
        assert (status, body) == (200, b"2")
    assert len(store) == 3
    clock.now += 61  # every session idle past its timeout: room again
    status, headers, body = request(server, GET("/visit"))
    assert (status, body) == (200, b"1") and len(store) == 1


def test_retry_after_is_when_the_oldest_session_expires():
    clock = Clock()
    store = MemorySessions(max_sessions=1, idle_timeout=100, clock=clock)
    store.save(store.create())
    clock.now += 30
    with pytest.raises(HTTPError) as err:
        store.create()
    assert err.value.status == 503 and dict(err.value.headers)["Retry-After"] == "70"


# --------------------------------------------------------------------------------------------
# Redirects stay on this origin and keep the query


def _redirect_app():
    app = App()
    app.get("/dir/")(lambda: "dir")
    app.get("/{a}/{b}")(lambda a, b: a + "|" + b)  # /x is redirected to /x/ (b empty)
    return app


@pytest.mark.parametrize("target", [
    "//evil.example/",            # -> //evil.example: another host, scheme-relative
    "/\\evil.example",            # -> /\evil.example/: browsers read \ as /
    "/%2F%2Fevil.example",        # -> a decoded first segment starting with //
    "/%2fevil.example",
    "/%5Cevil.example",           # an encoded backslash
    "/%5c%5cevil",
    "http://t//evil.example/",    # absolute-form: the same path
])
def test_the_trailing_slash_redirect_never_leaves_the_origin(serve, target):
    """Such paths are answered 404: the redirect would point at a path that only a
    normalising client or proxy reads as another host, and no link of ours makes them."""
    server = serve(_redirect_app())
    status, headers, _ = request(server, GET(target))
    assert status == 404 and "location" not in headers, (status, headers.get("location"))


def test_a_redirect_to_a_safe_path_still_happens(serve):
    server = serve(_redirect_app())
    for target, location in [("/a", "/a/"), ("/a%20b", "/a%20b/"), ("/a/", None),
                             ("/%2e", "/%2e/"), ("/a\\b", "/a\\b/")]:
        status, headers, body = request(server, GET(target))
        if location is None:
            assert status == 200, target
        else:
            assert (status, headers.get("location")) == (308, location), target


def test_the_redirect_keeps_the_query(serve):
    server = serve(_redirect_app())
    status, headers, _ = request(server, GET("/dir?x=1&y=%20"))
    assert status == 308 and headers["location"] == "/dir/?x=1&y=%20"
    status, headers, _ = request(server, GET("/a?q"))
    assert status == 308 and headers["location"] == "/a/?q"
    status, headers, _ = request(server, GET("/dir?"))
    assert status == 308 and headers["location"] == "/dir/"
