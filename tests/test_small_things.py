"""Small things a user trips on (issue 11, part 4), over real sockets where a request is
involved: unsupported annotations and ``async def`` handlers refused at decoration, the stock
converters for dates, times, UUIDs and decimals, one JSON encoding (``to_json``) for HTTP and
SSE, short reprs, dead code gone, the package's doctests collected."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import doctest
import enum
import importlib
import json
import pathlib
import tomllib
import uuid
from decimal import Decimal
from urllib.parse import quote
from typing import Annotated, Literal

import attrs
import pytest

from clos_web import (
    App, Buffer, Channels, MemorySessions, Range, Request, Response, Route, Session,
    UploadedFile, channel, parse_param,
)
from clos_web.http import Limits, parse
from clos_web.web import params, responses
from clos_web.web.routing import Match, Router
from clos_web.web.sessions import SignedCookieSessions

from conftest import ROOT, request, wait_for
from test_push import SSEClient


def GET(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def POST_JSON(path: str, value) -> bytes:
    body = json.dumps(value).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------------
# 1. An unsupported annotation fails at decoration


class Unknown:
    """A class no parse_param method converts to."""


@pytest.mark.parametrize("annotation", [
    Unknown, Unknown | None, list[Unknown], Annotated[Unknown, Range(1, 2)], complex, object,
], ids=["class", "optional", "list", "annotated", "complex", "object"])
def test_an_unsupported_annotation_is_refused_at_decoration_naming_all(annotation):
    app = App()

    def show_it(thing=None):
        return "never"

    show_it.__annotations__ = {"thing": annotation}  # (annotations are strings here)

    with pytest.raises(TypeError) as err:
        app.get("/show")(show_it)
    message = str(err.value)
    name = (complex if annotation is complex else object if annotation is object
            else Unknown).__name__
    for part in ("show_it", "'thing'", name, "@parse_param.dispatch", "before"):
        assert part in message, (part, message)
    assert app.router.routes() == []  # nothing half-registered


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@attrs.define
class Spot:
    x: int
    color: Color = Color.RED


class Table:
    def __init__(self, name: str):
        self.name = name


@parse_param.dispatch
def parse_param_small_things_table(kind: type[Table], raw: str, bound):
    return Table(raw)


def test_supported_annotations_still_decorate_and_serve(serve):
    app = App()

    @app.post("/all/{table}")
    def everything(table: Table, request: Request, session: Session | None, spot: Spot,
                   size: Literal["s", "m"] = "s", color: Color = Color.RED,
                   ids: list[int] = (), n: Annotated[int, Range(1, 9)] | None = None,
                   blob: dict | None = None, words: list | None = None,
                   r: Request = None):
        return {"table": table.name, "method": request.method, "session": session,
                "spot": spot, "size": size, "color": color, "ids": list(ids), "n": n,
                "blob": blob, "words": words, "same": r is request}

    server = serve(app)
    status, _, body = request(server, POST_JSON("/all/green?size=m&ids=1&ids=2&words=a", {
        "spot": {"x": 3}, "color": "GREEN", "n": 4, "blob": {"any": [1, "json"]}}))
    assert status == 200, body
    assert json.loads(body) == {
        "table": "green", "method": "POST", "session": None, "spot": {"x": 3, "color": 1},
        "size": "m", "color": 2, "ids": [1, 2], "n": 4, "blob": {"any": [1, "json"]},
        "words": ["a"], "same": True}


class Later:
    def __init__(self, text: str):
        self.text = text


def test_a_type_is_declared_after_its_method(serve):
    """At the REPL: a handler is checked when it is declared, so the parse_param method of a
    new type comes first; re-declaring the handler then works."""
    app = App()

    def later(value: Later):
        return value.text.upper()

    with pytest.raises(TypeError, match="Later"):
        app.get("/later")(later)

    @parse_param.dispatch
    def parse_param_later_str(kind: type[Later], raw: str, bound):
        return Later(raw)

    try:
        app.get("/later")(later)
        server = serve(app)
        assert request(server, GET("/later?value=hi"))[::2] == (200, b"HI")
    finally:
        parse_param.remove_method(parse_param_later_str)


# --------------------------------------------------------------------------------------------
# 2. Stock converters: dates, datetimes, times, UUIDs, decimals, enums, literals


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Tone(enum.StrEnum):
    SOFT = "soft"
    LOUD = "loud"


class OldStyle(str, enum.Enum):
    A = "a"


def test_an_enum_that_lists_str_before_enum_is_refused_with_advice():
    app = App()

    def old(value: OldStyle):
        return value

    with pytest.raises(TypeError, match="StrEnum"):
        app.get("/old")(old)


def _typed_app():
    app = App()

    @app.route("GET", "/typed")
    @app.route("POST", "/typed")
    def typed(day: dt.date | None = None, at: dt.datetime | None = None,
              clock: dt.time | None = None, id: uuid.UUID | None = None,
              price: Decimal | None = None, size: Size | None = None,
              level: Level | None = None, tone: Tone | None = None,
              flag: bool | None = None,
              face: Literal["up", "down", 3] | None = None):
        out = {}
        for name, value in (("day", day), ("at", at), ("clock", clock), ("id", id),
                            ("price", price), ("size", size), ("level", level), ("tone", tone),
                            ("flag", flag), ("face", face)):
            if value is not None:
                out[name] = [type(value).__name__, repr(value)]
        return out

    return app


GOOD = [
    ("day", "2024-02-29", dt.date(2024, 2, 29)),
    ("at", "2024-02-29T13:45", dt.datetime(2024, 2, 29, 13, 45)),
    ("at", "2024-02-29 13:45:30.25", dt.datetime(2024, 2, 29, 13, 45, 30, 250000)),
    ("at", "2024-02-29t13:45:30z", dt.datetime(2024, 2, 29, 13, 45, 30, tzinfo=dt.timezone.utc)),
    ("at", "2024-02-29T13:45:30+05:30",
     dt.datetime(2024, 2, 29, 13, 45, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))),
    ("clock", "07:30", dt.time(7, 30)),
    ("clock", "07:30:15.5Z", dt.time(7, 30, 15, 500000, tzinfo=dt.timezone.utc)),
    ("id", "12345678-1234-5678-1234-56781234567A",
     uuid.UUID("12345678-1234-5678-1234-56781234567a")),
    ("id", "12345678123456781234567812345678", uuid.UUID("12345678123456781234567812345678")),
    ("price", "19.90", Decimal("19.90")),
    ("price", "-1.5e3", Decimal("-1.5e3")),
    ("price", "0.1000000000000000000000000000000001", Decimal("0.1000000000000000000000000000000001")),
    ("size", "l", Size.LARGE), ("size", "SMALL", Size.SMALL),
    ("level", "2", Level.HIGH), ("level", "LOW", Level.LOW),
    ("tone", "loud", Tone.LOUD), ("tone", "SOFT", Tone.SOFT),
    ("flag", "yes", True), ("flag", "off", False),
    ("face", "down", "down"), ("face", "3", 3),
]


@pytest.mark.parametrize("name, raw, value", GOOD, ids=[f"{n}={r}" for n, r, _ in GOOD])
def test_stock_converters_from_a_query(serve, name, raw, value):
    server = serve(_typed_app())
    status, _, body = request(server, GET(f"/typed?{name}={quote(raw, safe='')}"))
    assert status == 200, body
    assert json.loads(body) == {name: [type(value).__name__, repr(value)]}


JSON_GOOD = [
    ("day", "2024-02-29", dt.date(2024, 2, 29)),
    ("at", "2024-02-29T13:45:00Z", dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.timezone.utc)),
    ("id", "12345678-1234-5678-1234-567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("price", "19.90", Decimal("19.90")),  # a string keeps every digit
    ("price", 7, Decimal(7)),
    ("price", 0.1, Decimal("0.1")),  # a JSON number goes through float: its shortest repr
    ("size", "s", Size.SMALL),
    ("level", 2, Level.HIGH),
    ("tone", "soft", Tone.SOFT),
    ("flag", True, True),
    ("face", 3, 3),
]


@pytest.mark.parametrize("name, raw, value", JSON_GOOD, ids=[f"{n}={r}" for n, r, _ in JSON_GOOD])
def test_stock_converters_from_json(serve, name, raw, value):
    server = serve(_typed_app())
    status, _, body = request(server, POST_JSON("/typed", {name: raw}))
    assert status == 200, body
    assert json.loads(body) == {name: [type(value).__name__, repr(value)]}


BAD = [
    ("day", "2024-2-29"), ("day", "2023-02-29"), ("day", "20240229"), ("day", "2024-W09-4"),
    ("day", "2024-02-29T00:00"), ("day", "٢٠٢٤-02-29"), ("day", "2024-02-29" + "9" * 5000),
    ("at", "2024-02-29"), ("at", "2024-02-29T25:00"), ("at", "2024-02-29T13:45+24:00"),
    ("at", "2024-02-29T13:45:30.1234567"), ("at", "2024-02-29T13"), ("at", "now"),
    ("clock", "7:30"), ("clock", "07:60"), ("clock", "07:30:15.5Zx"),
    ("id", "12345678-1234-5678-1234-5678123456"), ("id", "{12345678-1234-5678-1234-567812345678}"),
    ("id", "urn:uuid:12345678-1234-5678-1234-567812345678"), ("id", "1234567812345678-1234-5678-1234-5678"),
    ("id", "g" * 32),
    ("price", "NaN"), ("price", "Infinity"), ("price", "-inf"), ("price", "sNaN"),
    ("price", "1e999999999"), ("price", "9" * 101), ("price", "1_000"), ("price", "0x10"),
    ("price", " 1"), ("price", ""),
    ("size", "x"), ("size", "S"), ("level", "3"), ("level", "1.0"), ("tone", "quiet"),
    ("flag", "maybe"), ("face", "sideways"),
]


@pytest.mark.parametrize("name, raw", BAD, ids=[f"{n}={r[:30]}" for n, r in BAD])
def test_stock_converters_refuse_bad_text_with_a_400_naming_the_parameter(serve, name, raw):
    server = serve(_typed_app())
    status, _, body = request(server, GET(f"/typed?{name}={quote(raw, safe='')}",
                                          "Accept: application/json\r\n"))
    assert status == 400, body
    answer = json.loads(body)
    assert answer["parameter"] == name and len(answer["reason"]) < 200


JSON_BAD = [  # (name, the value as JSON text)
    ("day", "20240229"), ("day", '{"y": 2024}'), ("at", "1709214300"), ("id", "12345678"),
    ("price", "true"), ("price", "[1]"), ("price", "1" * 120), ("price", "1e999"),
    ("price", "NaN"), ("price", "-Infinity"), ("size", "1"), ("level", "true"),
    ("level", '"HIGH "'), ("flag", "1"), ("flag", "0"), ("face", '"sideways"'),
]


@pytest.mark.parametrize("name, raw", JSON_BAD, ids=[f"{n}={r[:30]}" for n, r in JSON_BAD])
def test_stock_converters_refuse_bad_json_with_a_400(serve, name, raw):
    server = serve(_typed_app())
    sent = f'{{"{name}": {raw}}}'.encode()
    status, _, body = request(server, (
        f"POST /typed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(sent)}\r\n\r\n").encode() + sent)
    assert status == 400, body
    assert json.loads(body)["parameter"] == name


def test_a_json_number_too_large_for_a_float_is_not_an_infinite_decimal():
    with pytest.raises(ValueError, match="finite"):
        parse_param(Decimal, float("inf"), {})
    with pytest.raises(ValueError):
        parse_param(Decimal, float("nan"), {})


# --------------------------------------------------------------------------------------------
# 3. async def handlers are refused at decoration


def test_an_async_handler_is_refused_at_decoration_saying_what_to_do():
    app = App()

    async def fetch(n: int):
        return str(n)

    async def stream():
        yield "x"

    for fn in (fetch, stream):
        with pytest.raises(TypeError) as err:
            app.get("/f")(fn)
        message = str(err.value)
        for part in (fn.__name__, "async", "plain def", "blocking=True", "publish"):
            assert part in message, (part, message)
    assert app.router.routes() == []


def test_a_coroutine_returned_by_a_handler_is_a_clear_500_and_is_closed(serve):
    app = App()
    made = []

    async def work():
        made.append("ran")

    def sneaky():  # a plain def returning a coroutine: only the result can tell
        made.append(work())
        return made[-1]

    app.get("/sneaky")(sneaky)
    server = serve(app, debug=True)
    status, _, body = request(server, GET("/sneaky"))
    assert status == 500 and b"async" in body and b"plain def" in body, body
    (coroutine,) = made
    assert coroutine.cr_frame is None  # closed: never run, no "never awaited" warning


# --------------------------------------------------------------------------------------------
# 4. One JSON encoding: to_json


class Mood(enum.Enum):
    HAPPY = "happy"


@attrs.define
class Inner:
    mood: Mood
    when: dt.date


@attrs.define
class Outer:
    color: Color
    inner: Inner
    items: list
    tags: frozenset
    at: dt.datetime
    clock: dt.time
    id: uuid.UUID
    price: Decimal
    extra: dict = attrs.field(factory=dict)


SAMPLE = Outer(
    Color.GREEN, Inner(Mood.HAPPY, dt.date(2024, 2, 29)), [Inner(Mood.HAPPY, dt.date(2024, 1, 1))],
    frozenset(["a"]), dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.timezone.utc), dt.time(7, 30),
    uuid.UUID(int=1), Decimal("0.1000000000000000000000000000000001"),
    {"set": {2}, "level": Level.HIGH})

SAMPLE_JSON = {
    "color": 2, "inner": {"mood": "happy", "when": "2024-02-29"},
    "items": [{"mood": "happy", "when": "2024-01-01"}], "tags": ["a"],
    "at": "2024-02-29T13:45:00+00:00", "clock": "07:30:00",
    "id": "00000000-0000-0000-0000-000000000001",
    "price": "0.1000000000000000000000000000000001", "extra": {"set": [2], "level": 2}}


def test_to_json_methods():
    assert responses.to_json(Color.RED) == 1 and responses.to_json(Mood.HAPPY) == "happy"
    assert responses.to_json(dt.date(2024, 2, 29)) == "2024-02-29"
    assert responses.to_json(dt.datetime(2024, 2, 29, 1, 2, 3)) == "2024-02-29T01:02:03"
    assert responses.to_json(uuid.UUID(int=0)) == "00000000-0000-0000-0000-000000000000"
    assert responses.to_json(Decimal("1.10")) == "1.10"
    assert sorted(responses.to_json({1, 2})) == [1, 2]
    assert responses.to_json(Inner(Mood.HAPPY, dt.date(2024, 1, 1))) == {
        "mood": Mood.HAPPY, "when": dt.date(2024, 1, 1)}  # one level: json calls it again
    assert responses.to_json({"a": [1]}) == {"a": [1]} and responses.to_json("x") == "x"
    with pytest.raises(TypeError, match="bytes"):
        responses.to_json(b"raw")
    with pytest.raises(TypeError, match="Unknown.*to_json"):
        responses.to_json(Unknown())
    assert json.loads(responses.json_text(SAMPLE)) == SAMPLE_JSON
    assert responses.json_text({"a": "é"}) == '{"a":"é"}'


def test_http_results_use_to_json(serve):
    app = App()
    app.get("/outer")(lambda: SAMPLE)
    app.get("/dict")(lambda: {"day": dt.date(2024, 2, 29), "price": Decimal("1.10")})
    app.get("/list")(lambda: [Color.RED, uuid.UUID(int=2)])
    app.get("/bytes")(lambda: {"raw": b"x"})
    server = serve(app)
    status, headers, body = request(server, GET("/outer"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == SAMPLE_JSON
    assert request(server, GET("/dict"))[::2] == (200, b'{"day":"2024-02-29","price":"1.10"}')
    assert request(server, GET("/list"))[::2] == (
        200, b'[1,"00000000-0000-0000-0000-000000000002"]')
    assert request(server, GET("/bytes"))[0] == 500


def test_http_and_sse_give_the_same_json_for_the_same_attrs_instance(serve):
    app = App()
    registry = Channels()
    app.get("/outer")(lambda: SAMPLE)

    @app.get("/sub/{name}")
    @channel(registry)
    def sub(name: str):
        return name

    server = serve(app)
    http_body = request(server, GET("/outer"))[2]
    client = SSEClient(server, "/sub/room")
    try:
        wait_for(lambda: registry.subscriber_count("room") == 1)
        registry.publish("room", SAMPLE)
        (event,) = client.wait_events(1)
    finally:
        client.close()
    assert event["type"] == "Outer"
    assert json.loads(event["data"]) == json.loads(http_body) == SAMPLE_JSON


# --------------------------------------------------------------------------------------------
# 5. Short reprs


def _big_request() -> Request:
    headers = {f"x-h{i}": "v" * 100 for i in range(1000)}
    return Request("POST", "/" + "a" * 8000 + "?q=" + "b" * 8000, headers=headers,
                   raw_headers=list(headers.items()), body=b"x" * (1 << 20),
                   path="/" + "a" * 8000, query="q=" + "b" * 8000, content_length=1 << 20)


def _big_app() -> App:
    app = App()
    for i in range(1000):
        app.get(f"/r{i}/{{x}}")(lambda x: x)
        app.get(f"/s{i}")(lambda: "s")
    app.mount("/sub", App())
    for _ in range(50):
        app.use(lambda request, call_next: call_next(request))
    return app


def _big_sessions():
    store = MemorySessions()
    for _ in range(100_000):
        store.save(store.create())
    return store


def _big_buffer():
    buf = Buffer(limits=Limits())
    buf.data += b"y" * (64 * 1024)
    buf.pending = _big_request()
    return buf


def _big_session():
    return Session("t" * 1000, {f"k{i}": "v" * 1000 for i in range(10_000)})


BIG = {
    "Request": _big_request,
    "Buffer": _big_buffer,
    "App": _big_app,
    "Router": lambda: _big_app().router,
    "Route": lambda: _big_app().router.exact["/s1"]["GET"],
    "Match": lambda: Match(_big_app().router.exact["/s1"]["GET"], ("z" * 8000,) * 100),
    "Session": _big_session,
    "MemorySessions": _big_sessions,
    "SignedCookieSessions": lambda: SignedCookieSessions(secret=b"k" * 1000),
    "UploadedFile": lambda: UploadedFile("n" * 10_000, "t" * 10_000, b"d" * (1 << 20)),
    "Pattern": lambda: params.Pattern("[a-z]" * 10),
}


@pytest.mark.parametrize("make", list(BIG.values()) + [
    lambda: Response(b"b" * (1 << 20), headers=[("X-A", "v" * 100)] * 100)],
    ids=list(BIG) + ["Response"])
def test_reprs_stay_short_whatever_they_hold(make):
    text = repr(make())
    assert len(text) < 300, text[:1000]


def test_a_session_repr_does_not_show_its_token():
    session = Session("secret-token-" + "s" * 30, {"user": "ada"})
    assert "secret-token-" + "s" * 30 not in repr(session)


# --------------------------------------------------------------------------------------------
# 6. Dead code


def test_route_and_params_lose_wants_request():
    assert "wants_request" not in attrs.fields_dict(Route)
    assert not hasattr(params, "wants_request")
    assert not hasattr(responses, "_jsonable")


# --------------------------------------------------------------------------------------------
# 7. The package's doctests are collected and pass


def test_make_test_collects_the_package_doctests():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]
    assert "clos_web" in options["testpaths"]
    assert "--doctest-modules" in options["addopts"].split()


MINE = ["clos_web.web." + m for m in ("app", "cookies", "middleware", "params", "responses",
                                      "routing", "sessions", "static", "workers")] + [
    "clos_web.http.errors", "clos_web.http.parser"]


@pytest.mark.parametrize("name", MINE)
def test_the_doctests_of_the_web_modules_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests fail in {name}"
