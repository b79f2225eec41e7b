"""A new subscriber's path from its request to its stream: the shortcuts taken on it (path-only
parameter binding, the SSE head made once a second, the join) give what the general way gives,
and every generic function on the way is still called."""

from __future__ import annotations

import enum

import pytest
from hypothesis import given, settings, strategies as st

from clos_web import (
    App, Channels, Connection, EventStream, ParamError, Request, channel, parse_param,
    respond, write,
)
from clos_web.clos import call_next_method
from clos_web.http import header_block, parse, response_head
from clos_web.push.broker import LocalBroker, broker_join

from conftest import Reader, bound_outcome, connect, wait_for


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
    assert bound_outcome(route.invoke, request, values) == bound_outcome(
        route.invoke.general, request, values)


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


# -- the stream's head and join -----------------------------------------------------------------

_SSE = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
        ("X-Accel-Buffering", "no")]


def _stream_app(registry):
    app = App()

    @app.get("/sub/{name}")
    @channel(registry)
    def sub(name: str):
        return name

    @app.get("/tagged/{name}")
    def tagged(name: str):
        return EventStream(name, registry=registry, headers=[("X-Room", name)])

    return app


def _without_date(head: bytes) -> list:
    return [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]


def _head_of(server, data: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(data)
        reader = Reader(sock)
        while b"\r\n\r\n" not in reader.data:
            assert reader._fill()
        return reader.data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"


@pytest.mark.parametrize("data, expected", [
    (b"GET /sub/a HTTP/1.1\r\nHost: t\r\n\r\n",
     dict(chunked=True)),
    (b"GET /sub/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
     dict(chunked=True, keep_alive=False)),
    (b"GET /sub/a HTTP/1.0\r\n\r\n",
     dict(keep_alive=False, http10=True)),
    (b"GET /tagged/a HTTP/1.1\r\nHost: t\r\n\r\n",
     dict(chunked=True, extra=[("X-Room", "a")])),
    (b"HEAD /sub/a HTTP/1.1\r\nHost: t\r\n\r\n",
     dict(chunked=True)),
])
def test_a_streams_head_is_what_the_one_head_writer_writes(serve, data, expected):
    """The head made once a second for streams without headers of their own is the head the
    head writer makes for this request (its Connection field too), byte for byte but the
    Date."""
    server = serve(_stream_app(Channels()))
    extra = expected.pop("extra", [])
    want = response_head(200, header_block(_SSE + extra), **expected)
    for _ in range(2):  # a second time from the cache
        assert _without_date(_head_of(server, data)) == _without_date(want)


def test_a_stream_keeps_no_copy_of_its_channels_name(serve):
    """Each subscriber's request brings its own copy of the channel's name; the stream keeps
    the channel's one instead (an idle stream costs less)."""
    registry = Channels()
    server = serve(_stream_app(registry))
    socks = [connect(server) for _ in range(3)]
    try:
        for sock in socks:
            sock.sendall(b"GET /sub/room%2D1 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert Reader(sock).read_head()[0] == 200
        wait_for(lambda: registry.subscriber_count("room-1") == 3)
        name = registry.channel("room-1").name
        streams = [c.protocol.stream for c in list(server.conns)
                   if getattr(c.protocol, "stream", None) is not None]
        assert len(streams) == 3
        assert all(s.names == ["room-1"] and s.names[0] is name for s in streams)
    finally:
        for sock in socks:
            sock.close()


def test_every_generic_on_a_new_subscribers_path_is_called(serve):
    """respond, parse_param, write (the EventStream) and broker_join each see the subscriber:
    none of the shortcuts goes around them."""
    registry = Channels()

    class Audited(App):
        pass

    app = Audited()
    app.get("/sub/{name}")(channel(registry)(lambda name: name))
    seen = []

    def around_respond(app_: Audited, request: Request, conn):
        seen.append(("respond", request.path))
        return call_next_method()

    def around_parse(kind: type[str], raw: str, bound):
        seen.append(("parse_param", raw))
        return call_next_method()

    def around_write(obj: EventStream, conn: Connection):
        seen.append(("write", tuple(obj.channels)))
        return call_next_method()

    def around_join(broker: LocalBroker, reg: object, sub, last_id, budget):
        if reg is registry:
            seen.append(("broker_join", tuple(sub.names), last_id))
        return call_next_method()

    added = [(respond, around_respond), (parse_param, around_parse), (write, around_write),
             (broker_join, around_join)]
    for gf, fn in added:
        gf.around(fn)
    try:
        server = serve(app)
        for last in (None, "x-1"):
            with connect(server) as sock:
                resume = b"" if last is None else b"Last-Event-ID: %s\r\n" % last.encode()
                sock.sendall(b"GET /sub/lobby HTTP/1.1\r\nHost: t\r\n%s\r\n" % resume)
                assert Reader(sock).read_head()[0] == 200
                wait_for(lambda: ("broker_join", ("lobby",), last) in seen)
        assert [k for k, *_ in seen] == ["respond", "parse_param", "write", "broker_join"] * 2
        assert ("write", ("lobby",)) in seen and ("parse_param", "lobby") in seen
    finally:
        for gf, fn in reversed(added):
            gf.remove_method(fn)
