"""A new subscriber's path from its request to its stream: the shortcuts taken on it (path-only
parameter binding, the SSE head made once a second, the join) give what the general way gives,
and every generic function on the way is still called."""

from __future__ import annotations

import enum

from hypothesis import given, settings, strategies as st

from clos_web import App, HTTPError, ParamError, Request, parse_param
from clos_web.clos import call_next_method
from clos_web.http import parse


class Odd(int):
    """A type of this file's own, converted by its own parse_param method."""


@parse_param.dispatch
def parse_param_odd(kind: type[Odd], raw: str, bound):
    n = parse_param(int, raw, bound)
    if not n % 2:
        raise ValueError(f"{n} is even")
    return Odd(n)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def _path_app():
    app = App()

    @app.get("/one/{n}")
    def one(n: int):
        return ["one", n]

    @app.get("/odd/{n}")
    def odd(n: Odd):
        return ["odd", n]

    @app.get("/two/{a}/{b}")
    def two(a: Odd, b: Colour):
        return ["two", a, b]

    @app.get("/req/{name}")
    def with_request(request, name: str):
        return ["req", request.path, name]

    @app.get("/kw/{x}/{y}")
    def keyword(x: str, *, y: int | None):
        return ["kw", x, y]

    @app.get("/dep/{a}/{b}")
    def dependent(a: int, b: Odd):
        return ["dep", a, b]

    return app


def _outcome(call):
    try:
        return ("ok", call())
    except ParamError as err:
        return ("param", err.param, err.why)
    except HTTPError as err:
        return ("http", err.status, err.reason)


_SEGMENTS = st.sampled_from(["", "0", "1", "-3", "+5", "07", "1.5", "red", "blue", "RED", "x",
                             "é", " ", "9" * 101, "٣"])
_PATTERNS = {"/one/{n}": 1, "/odd/{n}": 1, "/two/{a}/{b}": 2, "/req/{name}": 1, "/kw/{x}/{y}": 2,
             "/dep/{a}/{b}": 2}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), pattern=st.sampled_from(sorted(_PATTERNS)),
       query=st.sampled_from(["", "z=1", "%ff", "n=2&n=3"]))
def test_the_path_plan_agrees_with_the_general_binding(data, pattern, query):
    """compile_handler's path-only plan (parse_param's effective method resolved once) gives
    what the general binder gives, value or 400, for any path values; a query string always
    goes the general way (a malformed one is a 400 there)."""
    values = tuple(data.draw(_SEGMENTS) for _ in range(_PATTERNS[pattern]))
    route = next(r for r in _path_app().router.routes() if r.path == pattern)
    path = "/" + pattern.split("/")[1] + "".join("/" + v for v in values)
    request = Request("GET", path + ("?" + query if query else ""), path=path, query=query)
    fast = _outcome(lambda: route.invoke(request, None, values))
    assert fast == _outcome(lambda: route.invoke.general(request, None, values))


def test_the_path_plan_serves_path_only_handlers_through_the_app():
    app = _path_app()
    for route in app.router.routes():
        assert route.invoke.general  # the path-only plan serves each of them
    get = lambda target: app.handle(parse(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()))
    assert get("/one/-4") == ["one", -4]
    assert get("/two/3/blue") == ["two", 3, Colour.BLUE]
    assert get("/req/a%20b") == ["req", "/req/a%20b", "a b"]
    assert get("/kw/a/2") == ["kw", "a", 2]
    assert get("/one/4?x=1") == ["one", 4]  # (the general way)
    try:
        get("/two/4/red")
    except ParamError as err:
        assert (err.param, err.why) == ("a", "4 is even")
    else:
        raise AssertionError("an even a passed")


def test_the_path_plan_sees_a_method_added_after_the_handler_was_declared():
    app = _path_app()
    get = lambda target: app.handle(parse(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()))
    assert get("/two/3/red") == ["two", 3, Colour.RED] and get("/odd/3") == ["odd", 3]
    seen = []

    @parse_param.around
    def parse_param_odd_seen(kind: type[Odd], raw: str, bound):
        seen.append(raw)
        return call_next_method()

    try:
        assert get("/two/5/red") == ["two", 5, Colour.RED]
        assert get("/odd/9") == ["odd", 9]
        assert seen == ["5", "9"]
    finally:
        parse_param.remove_method(parse_param_odd_seen)
    assert get("/two/7/red") == ["two", 7, Colour.RED] and get("/odd/1") == ["odd", 1]
    assert seen == ["5", "9"]
